"""Typed configuration of the data pipeline.

``DataConfig`` validates itself at construction and names the field and the fix for
every mistake it finds. Nothing here touches the disk: checking that paths exist and
parse is the job of :func:`aunet.data.prepare_data`, which runs before any training
step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aunet.config import PAPER_SEQ_LEN, UNITS

#: Default training sequence length per unit (the paper: 8,192 bytes, or 2,048 BPE tokens).
DEFAULT_SEQ_LEN = PAPER_SEQ_LEN

#: Words in ``sources`` that mean the embedded default corpus.
DEFAULT_SOURCE_WORDS = ("default",)


def default_cache_dir() -> Path:
    """``$AUNET_CACHE`` if set, else ``~/.cache/aunet``."""
    env = os.environ.get("AUNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aunet"


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes training sequences.

    ``sources``: paths, directories or globs of ``.txt`` / ``.jsonl`` / ``.jsonl.zst`` /
    ``.parquet`` files; empty (or the word ``default``) means the embedded default corpus.
    ``valid_bytes``: size of the held-out split in bytes of documents. Documents are
    picked by a stable hash of their content, so the held-out bytes are the same for
    every architecture, unit and seed.
    """

    sources: list[str] = field(default_factory=list)
    units: str = "bytes"  # "bytes" or "bpe"
    seq_len: int | None = None  # None: 8192 for bytes, 2048 for bpe
    valid_bytes: int = 262144  # held-out budget (bytes of whole documents, overshoot < one document)
    tokenizer: str | None = None  # path to a tokenizer.json (units="bpe"); None: train one
    bpe_vocab: int = 4096  # vocabulary of the BPE trained when no tokenizer is given
    bpe_train_bytes: int = 64 * 2**20  # training-split bytes the BPE is trained on (at most)
    eos_token: str | None = None  # EOS of a user tokenizer; None: guess (<|endoftext|>, </s>, ...)
    text_field: str = "text"  # JSONL key / Parquet column holding a document
    seed: int = 0  # document shuffle seed (the held-out split does not depend on it)
    shuffle_docs: int = 1024  # documents per shuffle block (1: no shuffling within a block)
    shuffle_bytes: int = 64 * 2**20  # a shuffle block also ends once it holds this many bytes
    max_doc_bytes: int = 2**20  # .txt files larger than this are cut at paragraph breaks
    epochs_allowed: bool = False  # repeat the training data when a run needs more than one pass
    cache_dir: str | None = None  # None: $AUNET_CACHE or ~/.cache/aunet

    def __post_init__(self) -> None:
        if isinstance(self.sources, (str, os.PathLike)):
            self.sources = [str(self.sources)]
        if self.sources is None:
            self.sources = []
        self.sources = [str(s) for s in self.sources]
        if self.seq_len is None and self.units in UNITS:
            self.seq_len = DEFAULT_SEQ_LEN[self.units]
        self.validate()

    # ------------------------------------------------------------------ properties
    @property
    def uses_default_corpus(self) -> bool:
        return not self.sources or all(s.strip().lower() in DEFAULT_SOURCE_WORDS for s in self.sources)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"data config: field '{name}' {message}")

        if self.units not in UNITS:
            fail("units", f"is {self.units!r}; use one of {UNITS}")
        for s in self.sources:
            if not s.strip():
                fail("sources", "contains an empty entry; give paths, directories or globs (or 'default')")
        words = [s for s in self.sources if s.strip().lower() in DEFAULT_SOURCE_WORDS]
        if words and len(words) != len(self.sources):
            fail("sources", "mixes 'default' with other paths; give either 'default' alone or your own files")
        _check_int(fail, "seq_len", self.seq_len, 1)
        _check_int(fail, "valid_bytes", self.valid_bytes, 1, hint="; the held-out split cannot be empty")
        _check_int(fail, "bpe_vocab", self.bpe_vocab, 260, hint=" (256 byte symbols + EOS + some merges)")
        if self.bpe_vocab > 1_000_000:
            fail("bpe_vocab", f"is {self.bpe_vocab}; use at most 1,000,000")
        _check_int(fail, "bpe_train_bytes", self.bpe_train_bytes, 1024)
        _check_int(fail, "shuffle_docs", self.shuffle_docs, 1, hint=" (1 disables shuffling)")
        _check_int(fail, "shuffle_bytes", self.shuffle_bytes, 1)
        _check_int(fail, "max_doc_bytes", self.max_doc_bytes, 1024)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            fail("seed", f"is {self.seed!r}; use a whole number >= 0")
        if not isinstance(self.epochs_allowed, bool):
            fail("epochs_allowed", f"is {self.epochs_allowed!r}; use true or false")
        if self.tokenizer is not None and not str(self.tokenizer).strip():
            fail("tokenizer", "is empty; give the path of a tokenizer.json or null to train a BPE")
        if not self.text_field:
            fail("text_field", "is empty; name the JSONL key / Parquet column holding the text (e.g. 'text')")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"data config: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**dict(data))


def _check_int(fail, name: str, value: Any, minimum: int, hint: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        fail(name, f"is {value!r}; use a whole number >= {minimum}{hint}")
    if value < minimum:
        fail(name, f"is {value}; use a whole number >= {minimum}{hint}")
