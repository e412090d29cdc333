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
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aunet.atomic import write_json_atomic
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

if TYPE_CHECKING:
    from aunet.config import ModelConfig
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
            path = cache / "tokenizers" / f"bpe2-v{cfg.bpe_vocab}-{info.fingerprint[:16]}-{cfg.bpe_train_bytes}.json"
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
        """Training documents as text, up to about ``max_bytes`` (for BPE training).

        Taken in sorted file order, so the trained tokenizer does not depend on the seed.
        """
        used = 0
        for doc in self.stream.iter_file_order():
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

    # -------------------------------------------------------------- the trainer's view (model-aware)
    def fit_model_config(self, model_cfg: ModelConfig) -> ModelConfig:
        """The model config with this corpus's vocabulary (BPE) after checking units and seq_len agree."""
        if model_cfg.units != self.units:
            raise ValueError(f"the model reads {model_cfg.units!r} but the data config has units={self.units!r}")
        if model_cfg.units == "bpe" and model_cfg.vocab_size != self.vocab_size:
            return replace(model_cfg, vocab_size=self.vocab_size)
        return model_cfg

    def splitter_for(self, model_cfg: ModelConfig) -> Splitter | None:
        """The model's splitter, its rules bound to this corpus first: a rule with a model of the data (the
        entropy rule's) reads the one trained on this corpus, or refuses, never the default corpus's."""
        if not model_cfg.spec.pools:
            return None
        from aunet.splitting import fixed_splitter
        from aunet.splitting.entropy import use_corpus

        use_corpus(self)
        return fixed_splitter(model_cfg.n_stages, model_cfg.splits)  # a learned stage is the model's

    def train_loader(self, model_cfg: ModelConfig, micro_batch: int, rank: int = 0, world_size: int = 1,
                     seed: int | None = None) -> PackedLoader:
        """A loader shaped for ``model_cfg`` (its seq_len; pooling levels for an AU-Net).

        ``seed`` overrides the data config's shuffle seed (the held-out split never depends on it).
        """
        stream = self.stream if seed is None or seed == self.cfg.seed else replace_seed(self.stream, seed)
        return PackedLoader(stream, self.encoder, micro_batch, int(model_cfg.seq_len), rank=rank,
                            world_size=world_size, splitter=self.splitter_for(model_cfg),
                            epochs_allowed=self.cfg.epochs_allowed, fingerprint=self.info.fingerprint)

    def eval_set_for(self, model_cfg: ModelConfig, max_bytes: int | None = None) -> EvalSet:
        """Held-out evaluation sequences for ``model_cfg`` (cached in memory).

        ``max_bytes`` keeps a sample of the held-out text spread over all of it
        (:func:`spread_sample`), defined in bytes, so every architecture given the same cap sees
        the same bytes.
        """
        splitter = self.splitter_for(model_cfg)
        key = (int(model_cfg.seq_len), tuple(model_cfg.splits or ()) if splitter else None, max_bytes)
        cache = self.__dict__.setdefault("_eval_cache", {})
        if key not in cache:
            docs = self._heldout if max_bytes is None else spread_sample(self._heldout, max_bytes)
            cache[key] = make_eval_set(docs, self.encoder, int(model_cfg.seq_len), splitter)
        return cache[key]

    def heldout_batches(self, model_cfg: ModelConfig, micro_batch: int, rank: int = 0, world_size: int = 1,
                        max_bytes: int | None = None) -> Iterator[dict[str, Any]]:
        """This rank's share of the held-out sequences, as batches.

        Each batch: ``ids`` [B, L+1], ``target_mask`` [B, L], ``n_bytes`` (document bytes
        credited to the batch; summed over all batches of all ranks it is exactly the
        held-out bytes), and ``levels`` for an AU-Net. Every rank yields the same number of
        batches (fully masked padding sequences fill the gap), so collectives stay in step.
        """
        ev = self.eval_set_for(model_cfg, max_bytes)
        n = len(ev)
        per_rank = -(-n // world_size)
        index = [j for j in range(rank, per_rank * world_size, world_size)]
        for i in range(0, len(index), micro_batch):
            rows = index[i: i + micro_batch]
            real = [j for j in rows if j < n]
            ids = torch.full((len(rows), ev.ids.shape[1]), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), ev.mask.shape[1]), dtype=torch.bool)
            ids[: len(real)] = ev.ids[real]
            mask[: len(real)] = ev.mask[real]
            batch: dict[str, Any] = {"ids": ids, "target_mask": mask, "n_bytes": int(ev.seq_bytes[real].sum())}
            if ev.levels is not None:
                levels = torch.zeros_like(ids)
                levels[: len(real)] = ev.levels[real]
                batch["levels"] = levels
            yield batch

    def contraction(self, model_cfg: ModelConfig, max_bytes: int | None = None) -> list[float]:
        """Bytes per kept vector at each stage (byte stage first, so entry 0 is 1.0), measured on held-out.

        Measured on the evaluation sequences exactly as the model sees them (levels restart
        at every sequence start), over real input positions only; stages a learned rule chooses are
        decided inside the model, so they are planned at their targets.
        """
        from aunet.splitting.learned import with_learned_targets

        splitter = self.splitter_for(model_cfg)
        if splitter is None:
            return [1.0]
        ev = self.eval_set_for(model_cfg, max_bytes)
        assert ev.levels is not None
        levels = ev.levels[:, :-1][ev.mask]
        total = levels.numel()
        fixed = [total / max(1, int((levels >= k).sum())) for k in range(splitter.n_stages)]
        return with_learned_targets(fixed, model_cfg.splits or [])  # a learned stage: its target

    def summary(self) -> dict[str, Any]:
        out = {**self.info.summary(), "units": self.units, "seq_len": self.cfg.seq_len,
               "vocab_size": self.vocab_size, "bytes_per_unit": self.bytes_per_unit,
               "sources": [str(Path(f.path)) for f in self.files[:20]]}
        if self.tokenizer is not None:
            out["tokenizer"] = self.tokenizer.path
        return out


#: Bytes per piece of held-out text in a capped evaluation (cut at a line end when there is one).
EVAL_PIECE_BYTES = 4096


def spread_sample(docs: list[bytes], max_bytes: int, piece: int = EVAL_PIECE_BYTES) -> list[bytes]:
    """About ``max_bytes`` of held-out text, as pieces taken at an even stride over all the documents.

    The held-out split is a few whole documents (works, books) and a prefix of it would be one
    of them: a capped evaluation would then measure one book's style, not the corpus. Pieces
    (each evaluated as a document of its own) end at a line end where the piece has one."""
    pieces = []
    for doc in docs:
        start = 0
        while start < len(doc):
            end = min(start + piece, len(doc))
            if end < len(doc):
                newline = doc.rfind(b"\n", start, end)
                end = newline + 1 if newline > start else end
            pieces.append(doc[start:end])
            start = end
    total = sum(map(len, pieces))
    if total <= max_bytes:
        return docs
    wanted = max(1, round(len(pieces) * max_bytes / total))
    return [pieces[int(j * len(pieces) / wanted)] for j in range(wanted)]


def replace_seed(stream: DocStream, seed: int) -> DocStream:
    return DocStream(stream.files, stream.heldout_keys, stream.max_heldout_len, seed, stream.shuffle_docs,
                     stream.shuffle_bytes, stream.text_field, stream.max_doc_bytes)


def prepare_data(cfg: DataConfig, progress: bool | None = None) -> Corpus:
    """Check and prepare everything a run needs (see :class:`Corpus`).

    Caches are written under file locks and atomically, so concurrent ranks are safe.
    """
    return Corpus.prepare(cfg, progress)


def heldout_docs(cfg: DataConfig) -> list[bytes]:
    """The held-out documents of the configured corpus (the same bytes for every architecture)."""
    return Corpus.prepare(DataConfig.from_dict({**cfg.to_dict(), "units": "bytes", "seq_len": None})).heldout_docs()
