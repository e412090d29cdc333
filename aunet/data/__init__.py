"""Data pipeline: sources -> documents -> bytes or BPE tokens -> packed, resumable batches.

Typical use::

    from aunet.data import DataConfig, prepare_data

    corpus = prepare_data(DataConfig(units="bytes"))   # the embedded default corpus
    corpus.check(units_needed)                         # CorpusTooSmallError if too short
    loader = corpus.loader(batch_size=8, rank=rank, world_size=world, splitter=splitter)
    batch = next(loader)                               # {"ids": LongTensor[8, 8193], "levels": ...}
    state = loader.state_dict()                        # goes into every checkpoint
    evalset = corpus.eval_set_for(model_cfg)           # same held-out bytes for every model

``python -m aunet.data prepare`` fetches the default corpus; ``python -m aunet.data info``
describes a corpus.
"""

from aunet.data.config import DEFAULT_SEQ_LEN, DataConfig, default_cache_dir
from aunet.data.corpus import (
    Corpus,
    CorpusTooSmallError,
    heldout_docs,
    prepare_data,
)
from aunet.data.default_corpus import default_corpus_dir, prepare_default_corpus
from aunet.data.packing import (
    BpeEncoder,
    ByteEncoder,
    DocStream,
    EvalSet,
    PackedLoader,
    Prefetcher,
    bits_per_byte,
    make_eval_set,
)
from aunet.data.sources import SourceFile, iter_docs, resolve_sources, sniff
from aunet.data.split import CorpusInfo, doc_key, scan_corpus
from aunet.data.tokenizer import BpeTokenizer, load_tokenizer, measure_compression, train_bpe

__all__ = [
    "DEFAULT_SEQ_LEN",
    "BpeEncoder",
    "BpeTokenizer",
    "ByteEncoder",
    "Corpus",
    "CorpusInfo",
    "CorpusTooSmallError",
    "DataConfig",
    "DocStream",
    "EvalSet",
    "PackedLoader",
    "Prefetcher",
    "SourceFile",
    "bits_per_byte",
    "default_cache_dir",
    "default_corpus_dir",
    "doc_key",
    "heldout_docs",
    "iter_docs",
    "load_tokenizer",
    "make_eval_set",
    "measure_compression",
    "prepare_data",
    "prepare_default_corpus",
    "resolve_sources",
    "scan_corpus",
    "sniff",
    "train_bpe",
]
