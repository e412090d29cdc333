"""Width rules shared by every architecture's ladder shape (Table 9's grid): head dims, SwiGLU widths and
the snapping of widths to the grid."""

from __future__ import annotations

import math


def snap(x: float, multiple: int, half_down: bool = False) -> int:
    q = x / multiple
    n = math.ceil(q - 0.5) if half_down else math.floor(q + 0.5)
    return max(multiple, n * multiple)


def head_dim_for(width: int) -> int:
    """Head dim of a width: 128 from 1024 up, 64 from 256 up, else 32 (as in Table 9); 16 for
    the tiny widths that 32 does not divide (16, 48)."""
    if width >= 1024 and width % 128 == 0:
        return 128
    if width >= 128 and width % 64 == 0:
        return 64
    return 32 if width % 32 == 0 else 16


def grid_multiple(width: float) -> int:
    return 128 if width >= 1024 else 64 if width >= 256 else 32


def ffn_dim_for(width: int) -> int:
    """SwiGLU width: 8d/3 rounded up to a multiple of 256 (64 below 256, 32 below 128)."""
    multiple = 256 if width >= 256 else 64 if width >= 128 else 32
    return multiple * math.ceil(8 * width / 3 / multiple - 1e-9)
