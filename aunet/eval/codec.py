"""Text to model units, the same for scoring and generation: bytes, or a BPE model's tokens.

A byte model reads UTF-8 bytes after EOS (its document separator); a BPE model reads
its tokenizer's ids (``codec``: ``encode(bytes) -> ids``, ``decode(ids) -> bytes``,
``eos_id``) after the tokenizer's EOS.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from aunet.config import EOS_ID, PAD_ID


def is_bpe(model: nn.Module) -> bool:
    cfg = getattr(model, "cfg", None)
    return cfg is not None and getattr(cfg, "units", "bytes") == "bpe"


def check_codec(model: nn.Module, codec: Any) -> None:
    if is_bpe(model) and codec is None:
        raise ValueError("a BPE model needs its tokenizer as `codec` (encode(bytes)->ids, decode(ids)->bytes, "
                         "eos_id); load_checkpoint() returns it with the model")


def as_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def encode(model: nn.Module, text: str | bytes, codec: Any = None) -> list[int]:
    """Model units of ``text`` (bytes, or the codec's tokens for a BPE model)."""
    data = as_bytes(text)
    if not data:
        return []
    if is_bpe(model):
        return list(codec.encode(data))
    return list(data)


def prefix_id(model: nn.Module, codec: Any = None) -> int:
    return codec.eos_id if is_bpe(model) else EOS_ID


def pad_id(model: nn.Module, codec: Any = None) -> int:
    if is_bpe(model):
        pad = getattr(codec, "pad_id", None)
        return int(pad if pad is not None and pad < model.cfg.vocab_size else codec.eos_id)
    return PAD_ID
