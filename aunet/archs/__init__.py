"""The architecture registry: ``ModelFields.arch`` names a spec here (see :mod:`aunet.archs.base`).

Adding an architecture is one module with an ``ArchSpec`` subclass, registered with :func:`register_arch`,
and one model config under ``conf/model/`` (see docs/extending.md). A module outside the package is named in
``AUNET_ARCHS``.
"""

from __future__ import annotations

import importlib
import os

from aunet.archs.aunet import AUNET
from aunet.archs.base import ArchSpec, FamilyShape, ModelFields
from aunet.archs.mamba import MAMBA2
from aunet.archs.transformer import TRANSFORMER
from aunet.names import did_you_mean

__all__ = ["ARCH_SPECS", "ArchSpec", "FamilyShape", "get_arch", "register_arch", "spec_of", "unregister_arch"]

#: Every architecture a config may name, by ``ModelFields.arch``, in the order they were registered.
ARCH_SPECS: dict[str, ArchSpec] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Make ``spec`` available to configs as ``arch: <spec.name>`` (and its families to the ladder)."""
    if not spec.name or spec.name in ARCH_SPECS:
        raise ValueError(f"architecture name {spec.name!r} is empty or already registered ({sorted(ARCH_SPECS)})")
    ARCH_SPECS[spec.name] = spec
    return spec


def unregister_arch(name: str) -> None:
    """Remove an architecture (a test's toy one)."""
    ARCH_SPECS.pop(name, None)


def get_arch(name: str) -> ArchSpec:
    if name not in ARCH_SPECS:
        raise ValueError(f"unknown architecture {name!r}{did_you_mean(name, ARCH_SPECS, n=2)}; "
                         f"use one of {tuple(ARCH_SPECS)}")
    return ARCH_SPECS[name]


def spec_of(cfg: ModelFields) -> ArchSpec:
    """The spec describing one model config (its architecture, at its version)."""
    return get_arch(cfg.arch).select(cfg)


#: Modules of architectures kept outside this package, comma-separated: each is imported here and registers
#: its spec. An environment variable, so that every process a sweep starts (local or SLURM) sees them too.
PLUGINS_ENV = "AUNET_ARCHS"

for _spec in (AUNET, TRANSFORMER, MAMBA2):
    register_arch(_spec)
for _module in filter(None, (name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(","))):
    importlib.import_module(_module)
