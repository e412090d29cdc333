"""Which entropy model the rules read: the one trained on the corpus in use, from the cache.

A model is trained once per corpus and kept at ``<cache>/entropy/<fingerprint>/model.npz``, the
fingerprint being the data layer's (files, sizes, modification times and split settings). The
corpus in use is the default corpus unless :func:`use_corpus` names another (the data layer's
``Corpus``): a splitting rule names no corpus, so the run that prepares one says which. A model
missing, or found under the fingerprint but trained on another corpus, is one line naming the
command that trains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aunet.splitting.entropy.model import Saved, load, model_path


class EntropyModelError(ValueError):
    """No usable entropy model for the corpus in use."""


@dataclass(frozen=True)
class CorpusRef:
    """A corpus as the entropy models are keyed: its fingerprint, how to name it, and the cache holding them."""

    fingerprint: str
    sources: tuple[str, ...]  # empty: the default corpus
    cache: Path
    valid_bytes: int  # the held-out budget: part of the fingerprint

    @property
    def description(self) -> str:
        return "the default corpus" if not self.sources else f"corpus {' '.join(self.sources)}"

    @property
    def train_command(self) -> str:
        from aunet.data import DataConfig

        data = f" --data {' '.join(self.sources)}" if self.sources else ""
        held = f" --valid-bytes {self.valid_bytes}" if self.valid_bytes != DataConfig.valid_bytes else ""
        return f"python -m aunet.splitting.entropy train{data}{held} --cache-dir {self.cache}"

    @classmethod
    def of(cls, corpus: Any) -> CorpusRef:
        """The reference of a prepared ``aunet.data.Corpus``."""
        sources = () if corpus.cfg.uses_default_corpus else tuple(corpus.cfg.sources)
        return cls(corpus.info.fingerprint, sources, corpus.cfg.cache_path, corpus.cfg.valid_bytes)


_bound: CorpusRef | None = None
_default: CorpusRef | None = None
_loaded: dict[tuple[Path, int], Saved] = {}


def use_corpus(corpus: Any | None) -> None:
    """Make the entropy rules read the model of ``corpus`` (an ``aunet.data.Corpus``); None: the default corpus."""
    global _bound
    _bound = None if corpus is None else CorpusRef.of(corpus)


def corpus_in_use() -> CorpusRef:
    """The bound corpus, else the default one (prepared on first use, as the data layer does)."""
    global _default
    if _bound is not None:
        return _bound
    if _default is None:
        from aunet.data import DataConfig, prepare_data

        _default = CorpusRef.of(prepare_data(DataConfig(), progress=False))
    return _default


def model_for(ref: CorpusRef, spec: str) -> Saved:
    """The saved model of ``ref``'s corpus, loaded once per file version; EntropyModelError if none fits."""
    path = model_path(ref.cache, ref.fingerprint)
    if not path.is_file():
        raise EntropyModelError(f"splitting rule {spec!r}: no entropy model for {ref.description} (fingerprint "
                                f"{ref.fingerprint}){_others(ref)}; train it with: {ref.train_command}")
    key = (path, path.stat().st_mtime_ns)
    if key not in _loaded:
        saved = load(path)
        if saved.meta.fingerprint != ref.fingerprint:
            raise EntropyModelError(
                f"splitting rule {spec!r}: the entropy model at {path} was trained on another corpus "
                f"({saved.meta.corpus}, fingerprint {saved.meta.fingerprint}), not {ref.description} "
                f"(fingerprint {ref.fingerprint}); train it with: {ref.train_command}")
        _loaded[key] = saved
    return _loaded[key]


def _others(ref: CorpusRef) -> str:
    """What the cache holds instead, so a user who changed the corpus's files sees why the model is gone."""
    others = sorted(p.parent.name for p in (ref.cache / "entropy").glob("*/model.npz"))
    return f" (the cache holds models for other corpora: {', '.join(others)})" if others else ""
