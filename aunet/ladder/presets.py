"""The model presets of ``conf/model/`` (every model of the paper's Table 9, plus tiny CPU ones)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from aunet.config import ModelConfig

#: The variable that names the checkout whose ``conf/`` to read, for a package installed outside one.
ROOT_VARIABLE = "AUNET_ROOT"


def project_root(environ: Mapping[str, str] = os.environ) -> Path:
    """The checkout whose ``conf/`` (presets, law files) the toolkit reads: ``$AUNET_ROOT``, else the
    checkout this package sits in, since ``conf/`` is not part of an installed package."""
    given = environ.get(ROOT_VARIABLE)
    return Path(given).expanduser().resolve() if given else Path(__file__).resolve().parents[2]


#: The repository root, where ``conf/`` lives.
PROJECT_ROOT = project_root()
PRESET_DIR = PROJECT_ROOT / "conf" / "model"


def list_presets() -> list[str]:
    """Names of the presets in conf/model/."""
    if not PRESET_DIR.is_dir():
        raise ValueError(f"no model presets: {PRESET_DIR} does not exist (conf/ comes with the repository, not "
                         f"with an installed package); run from a checkout, or set {ROOT_VARIABLE} to one")
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
