"""The data pipeline in one object: ``Corpus.prepare(cfg)`` checks everything up front.

``prepare`` resolves and sniffs the sources (preparing the default corpus on first use),
scans the corpus once for the held-out split (cached), and for BPE loads or trains the
tokenizer (cached). Every bad input raises ValueError here, before any training step;
caches are only ever written whole (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aunet.data.config import DataConfig
from aunet.data.default_corpus import default_corpus_dir, prepare_default_corpus
from aunet.data.packing import (
    BpeEncoder,
    ByteEncoder,
    DocStream,
    Encoder,
    EvalSet,
    PackedLoader,
    make_eval_set,
)
from aunet.data.sources import SourceFile, resolve_sources
from aunet.data.split import CorpusInfo, scan_corpus
from aunet.data.tokenizer import BpeTokenizer, cached_bpe, load_tokenizer, measure_compression
from aunet.record import write_json_atomic

if TYPE_CHECKING:
    from aunet.splitting import Splitter

log = logging.getLogger("aunet.data")


class CorpusTooSmallError(ValueError):
    """The training split holds fewer units than the run needs (and epochs are not allowed)."""


class Corpus:
    """A prepared corpus: files, held-out split, encoder (bytes or BPE) and loaders."""

    def __init__(self, cfg: DataConfig, files: list[SourceFile], info: CorpusInfo, heldout: list[bytes],
                 tokenizer: BpeTokenizer | None):
        self.cfg = cfg
        self.files = files
        self.info = info
        self._heldout = heldout
        self.tokenizer = tokenizer
        self.encoder: Encoder = BpeEncoder(tokenizer) if tokenizer is not None else ByteEncoder()
        self.stream = DocStream(files, info.key_set, max((len(d) for d in heldout), default=0), cfg.seed,
                                cfg.shuffle_docs, cfg.shuffle_bytes, cfg.text_field, cfg.max_doc_bytes)

    # -------------------------------------------------------------- construction
    @classmethod
    def prepare(cls, cfg: DataConfig, progress: bool | None = None) -> Corpus:
        show = sys.stderr.isatty() if progress is None else progress
        cache = cfg.cache_path
        if cfg.uses_default_corpus:
            prepare_default_corpus(cache, log=log.info)
            sources = [str(default_corpus_dir(cache))]
        else:
            sources = cfg.sources
        files = resolve_sources(sources)
        tokenizer = None
        if cfg.units == "bpe" and cfg.tokenizer:
            tokenizer = load_tokenizer(cfg.tokenizer, cfg.eos_token)  # fail fast, before the scan
        info, heldout = scan_corpus(files, cfg.valid_bytes, cache, cfg.text_field, cfg.max_doc_bytes, show)
        corpus = cls(cfg, files, info, heldout, tokenizer)
        if cfg.units == "bpe" and tokenizer is None:
            path = cache / "tokenizers" / f"bpe-v{cfg.bpe_vocab}-{info.fingerprint[:16]}-{cfg.bpe_train_bytes}.json"
            corpus.tokenizer = cached_bpe(path, cfg.bpe_vocab, lambda: corpus.train_texts(cfg.bpe_train_bytes), show)
            corpus.encoder = BpeEncoder(corpus.tokenizer)
        return corpus

    # -------------------------------------------------------------- documents
    def heldout_docs(self) -> list[bytes]:
        """The held-out documents (UTF-8 bytes), in key order. The same for every unit and seed."""
        return list(self._heldout)

    def train_docs(self, epoch: int = 0, shuffle: bool = False) -> Iterator[bytes]:
        """Training documents of one epoch (held-out documents never appear)."""
        return self.stream.iter_epoch(epoch, shuffle)

    def train_texts(self, max_bytes: int) -> Iterator[str]:
        """Training documents as text, up to about ``max_bytes`` (for BPE training)."""
        used = 0
        for doc in self.train_docs():
            if used >= max_bytes:
                return
            piece = doc[: max_bytes - used]
            used += len(piece)
            yield piece.decode("utf-8", errors="ignore")

    # -------------------------------------------------------------- units
    @property
    def units(self) -> str:
        return self.cfg.units

    @property
    def vocab_size(self) -> int:
        return self.encoder.vocab_size

    @property
    def eos_id(self) -> int:
        return self.encoder.eos_id

    @property
    def pad_id(self) -> int:
        return self.encoder.pad_id

    @cached_property
    def bytes_per_unit(self) -> float:
        """Compression k measured on the held-out split (1.0 for bytes)."""
        if self.tokenizer is None:
            return 1.0
        return measure_compression(self.tokenizer, self._heldout)

    def train_units(self) -> int:
        """Units in one pass over the training split, EOS separators included.

        Exact: for BPE the training split is tokenized once and the count cached.
        """
        if self.tokenizer is None:
            return self.info.train_bytes + self.info.train_documents
        tok_hash = hashlib.sha256(self.tokenizer.tokenizer.to_str().encode()).hexdigest()[:16]
        path = self.cfg.cache_path / "counts" / f"{self.info.fingerprint}-{tok_hash}.json"
        try:
            return int(json.loads(path.read_text())["train_units"])
        except (OSError, ValueError, KeyError):
            pass
        n = 0
        docs = self.train_docs()
        if sys.stderr.isatty():
            from tqdm import tqdm

            docs = tqdm(docs, total=self.info.train_documents, desc="counting BPE tokens", leave=False)
        for doc in docs:
            n += len(self.tokenizer.encode(doc)) + 1
        write_json_atomic(path, {"train_units": n, "fingerprint": self.info.fingerprint,
                                 "tokenizer": self.tokenizer.path, "bytes_per_unit_heldout": self.bytes_per_unit})
        return n

    def check(self, units_needed: int) -> dict[str, Any]:
        """Raise CorpusTooSmallError unless the training split covers ``units_needed`` units.

        The packed stream yields ``(train_units - 1) // seq_len`` sequences of ``seq_len``
        targets per pass. With ``epochs_allowed`` the data repeats and the check passes;
        the returned dict says how many epochs the run will take.
        """
        units_needed = int(units_needed)
        total = self.train_units()
        seq_len = int(self.cfg.seq_len)
        usable = max(0, (total - 1) // seq_len) * seq_len
        epochs = units_needed / usable if usable else math.inf
        unit = "bytes" if self.units == "bytes" else "BPE tokens"
        if units_needed > usable and not self.cfg.epochs_allowed:
            raise CorpusTooSmallError(
                f"the run needs {units_needed:,} training {unit} but one pass over the corpus gives {usable:,} "
                f"({total:,} {unit} in {self.info.train_documents:,} documents after holding out "
                f"{self.info.heldout_bytes:,} bytes, packed into sequences of {seq_len}); that is "
                f"{epochs:.2f} epochs. Add data or lower the budget, or set epochs_allowed=true to repeat the data."
            )
        return {"units_needed": units_needed, "units_per_epoch": usable, "epochs": epochs, "unit": self.units}

    # -------------------------------------------------------------- loaders
    def loader(self, batch_size: int, *, seq_len: int | None = None, rank: int = 0, world_size: int = 1,
               splitter: Splitter | None = None) -> PackedLoader:
        """A resumable training loader of ``batch_size`` sequences per micro-batch on this rank."""
        return PackedLoader(self.stream, self.encoder, batch_size, int(seq_len or self.cfg.seq_len), rank=rank,
                            world_size=world_size, splitter=splitter, epochs_allowed=self.cfg.epochs_allowed,
                            fingerprint=self.info.fingerprint)

    def eval_set(self, seq_len: int | None = None, splitter: Splitter | None = None) -> EvalSet:
        """The held-out split as fixed evaluation sequences in this corpus's units."""
        return make_eval_set(self._heldout, self.encoder, int(seq_len or self.cfg.seq_len), splitter)

    def summary(self) -> dict[str, Any]:
        out = {**self.info.summary(), "units": self.units, "seq_len": self.cfg.seq_len,
               "vocab_size": self.vocab_size, "bytes_per_unit": self.bytes_per_unit,
               "sources": [str(Path(f.path)) for f in self.files[:20]]}
        if self.tokenizer is not None:
            out["tokenizer"] = self.tokenizer.path
        return out


def prepare_data(cfg: DataConfig, progress: bool | None = None) -> Corpus:
    """Check and prepare everything the run needs (see :class:`Corpus`)."""
    return Corpus.prepare(cfg, progress)


def check_corpus(cfg: DataConfig | Corpus, units_needed: int) -> dict[str, Any]:
    """Raise CorpusTooSmallError if one pass over the training split is shorter than ``units_needed``."""
    corpus = cfg if isinstance(cfg, Corpus) else Corpus.prepare(cfg)
    return corpus.check(units_needed)


def heldout_docs(cfg: DataConfig) -> list[bytes]:
    """The held-out documents of the configured corpus (the same bytes for every architecture)."""
    return Corpus.prepare(DataConfig.from_dict({**cfg.to_dict(), "units": "bytes", "seq_len": None})).heldout_docs()
