"""Where rules put stage 2's boundaries on the same text: fixed rules from the bytes, a learned rule
from a trained AU-Net's router; marked text and how often two rules agree.

What ``python -m aunet.splitting ... --show`` prints (the README's sample beside the word rule).
"""

from __future__ import annotations

import numpy as np
import torch

from aunet.splitting.splitter import pool_levels


def rule_boundaries(rule: str, data: bytes) -> np.ndarray:
    """Per byte, whether a fixed rule keeps its vector at stage 2 (each text from a fresh state)."""
    return np.asarray(pool_levels(data, 2, [rule])) >= 1


@torch.no_grad()
def model_boundaries(model: torch.nn.Module, data: bytes) -> np.ndarray:
    """Per byte, whether a trained AU-Net's learned stage 2 keeps it: the router's hard decisions, run over
    windows of the model's sequence length (each starting afresh, as its training sequences do)."""
    targets = getattr(model, "targets", None)
    if not targets or targets[0] is None:
        raise ValueError("the model's stage 2 is not a learned rule: give an AU-Net trained with splits [learned:c=C, ...]")
    model.eval()
    out = []
    for start in range(0, len(data), model.cfg.seq_len):
        window = torch.tensor([list(data[start:start + model.cfg.seq_len])], device=model.head.weight.device)
        model(window)
        out.append(model.routing[0].boundary[0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def marked(data: bytes, boundary: np.ndarray) -> str:
    """The text with '|' before every boundary after the first byte; line breaks and tabs made visible."""
    text = []
    for i, byte in enumerate(data):
        if boundary[i] and i > 0:
            text.append("|")
        char = chr(byte) if 32 <= byte < 127 else {10: "⏎", 9: "⇥"}.get(byte, "·")
        text.append(char)
    return "".join(text)


def agreement(a: np.ndarray, b: np.ndarray, slack: int = 0) -> float:
    """The share of a's boundaries that are b's too, or follow one of b's by at most ``slack`` bytes (a rule
    that starts a word where another ends the previous one agrees at slack 1); position 0, a boundary for
    every rule, left out."""
    near = b.copy()
    for shift in range(1, slack + 1):
        near[shift:] |= b[:-shift]
    a, near = a[1:], near[1:]
    return float((a & near).sum() / max(1, a.sum()))
