"""Load a finished run (its ``model.pt``) with the tokenizer a BPE model needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aunet.config import ModelConfig
from aunet.data import DataConfig, load_tokenizer, prepare_data
from aunet.models import build_model


@dataclass
class Loaded:
    model: nn.Module
    codec: Any  # the BPE tokenizer (None for byte models)
    config: ModelConfig
    path: Path  # model.pt
    record: dict[str, Any] | None  # the run's record.json, when there is one

    @property
    def record_path(self) -> Path:
        return self.path.parent / "record.json"


def _model_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "model.pt").is_file():
            return p / "model.pt"
        if (p / "checkpoint.pt").is_file():
            raise ValueError(f"{p} has only checkpoint.pt (a run in progress or interrupted): the final weights "
                             "(model.pt) are written when the run finishes; rerun it to completion first")
        raise ValueError(f"{p} has no model.pt; give a finished run's output directory or its model.pt")
    if not p.is_file():
        raise ValueError(f"checkpoint {p} does not exist; give a finished run's output directory or its model.pt")
    return p


def load_codec(record: dict[str, Any] | None, tokenizer: str | None = None, run_dir: Path | None = None) -> Any:
    """The BPE tokenizer of a run.

    In order: ``tokenizer`` (a tokenizer.json), a ``tokenizer.json`` in the run directory,
    or the tokenizer the run's data config rebuilds (from the cache, or retrained on the
    same corpus). A rebuilt tokenizer is checked against the run: its compression on the
    corpus's held-out split must equal the ``bytes_per_unit`` the record measured, or a
    ValueError says how to give the right one (a different $AUNET_CACHE or corpus
    version trains a different BPE with the same vocabulary size).
    """
    if tokenizer:
        return load_tokenizer(tokenizer)
    if run_dir is not None and (run_dir / "tokenizer.json").is_file():
        return load_tokenizer(run_dir / "tokenizer.json")
    if record is None:
        raise ValueError("a BPE checkpoint without record.json beside it: give tokenizer=<path of tokenizer.json>")
    data = (record.get("config") or {}).get("data")
    if not data:
        raise ValueError("record.json has no config.data to rebuild the tokenizer from; give tokenizer=<path>")
    cfg = DataConfig.from_dict(data)
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer, cfg.eos_token)
    corpus = prepare_data(cfg)  # the cached BPE trained on that corpus (retrained identically if missing)
    expected = record.get("bytes_per_unit")
    if isinstance(expected, (int, float)) and expected > 0:
        found = corpus.bytes_per_unit
        if abs(found - expected) > 1e-9 * expected:
            raise ValueError(
                f"the tokenizer rebuilt from the run's data config ({corpus.tokenizer.path}) compresses the held-out "
                f"split to {found:.6f} bytes/token, but the run measured {expected:.6f}: it is not the tokenizer the "
                "model was trained with (another $AUNET_CACHE or corpus version). Run with the AUNET_CACHE the run "
                "used, or give tokenizer=<its tokenizer.json>")
    return corpus.tokenizer


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", tokenizer: str | None = None) -> Loaded:
    """A finished run's model in eval mode, and its tokenizer for BPE models.

    ``path``: the run's output directory or its ``model.pt``.
    """
    file = _model_file(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{file} cannot be loaded as a model checkpoint: {err}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{file} is not a finished run's model.pt (needs 'model' and 'config' entries)")
    cfg = ModelConfig.from_dict(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    record_path = file.parent / "record.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    codec = None
    if cfg.units == "bpe":
        codec = load_codec(record, tokenizer, file.parent)
        if codec.vocab_size > cfg.vocab_size:
            raise ValueError(f"tokenizer has {codec.vocab_size} entries but the model's vocabulary is "
                             f"{cfg.vocab_size}: not the tokenizer this model was trained with")
    return Loaded(model, codec, cfg, file, record)
