"""Unknown names (architectures, families, presets) answered with the close ones, in one wording."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: object, known: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``" (did you mean a, b?)"`` when ``known`` holds names close to ``name``, else ``""``."""
    close = difflib.get_close_matches(str(name), list(known), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(close)}?)" if close else ""
