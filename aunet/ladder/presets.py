"""The model presets of ``conf/model/`` (every model of the paper's Table 9, plus tiny CPU ones)."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from aunet.config import ModelConfig

#: The repository root, where ``conf/`` lives.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = PROJECT_ROOT / "conf" / "model"


def list_presets() -> list[str]:
    """Names of the presets in conf/model/."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> ModelConfig:
    """The ModelConfig of preset ``conf/model/<name>.yaml``."""
    stem = str(name).removesuffix(".yaml")
    names = list_presets()
    if stem not in names:
        close = difflib.get_close_matches(stem, names, n=5, cutoff=0.5)
        hint = f"close names: {', '.join(close)}" if close else f"known presets: {', '.join(names)}"
        raise ValueError(f"unknown model preset {name!r} (no {PRESET_DIR / (stem + '.yaml')}); {hint}")
    data = yaml.safe_load((PRESET_DIR / f"{stem}.yaml").read_text()) or {}
    return ModelConfig.from_dict(data)
