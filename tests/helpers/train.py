"""The smallest training run the tests start: a tiny AU-Net 2 on the default corpus, seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

from aunet.config import ModelConfig
from aunet.data import DataConfig
from aunet.tracking import TrackingConfig
from aunet.train import TrainConfig

TINY_MODEL = dict(arch="aunet", name="aunet2_test", dims=[32, 64], layers=[1, 1], head_dims=[16, 16],
                  ffn_dims=[64, 128], seq_len=128, window=32)


def tiny_config(out: Path, **overrides) -> TrainConfig:
    """A TrainConfig of ``TINY_MODEL`` writing to ``out``; ``overrides`` replace fields (``model`` merges)."""
    model = {**TINY_MODEL, **overrides.pop("model", {})}
    fields = dict(
        model=ModelConfig(**model),
        data=DataConfig(seq_len=model["seq_len"], valid_bytes=65536),
        tracking=TrackingConfig(enabled=False),
        steps=8, bsz=4 * model["seq_len"], eval_bytes=8192, log_every=2, output_dir=str(out), progress="off",
    )
    fields.update(overrides)
    return TrainConfig(**fields)
