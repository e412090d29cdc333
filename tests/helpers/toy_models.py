"""Hand-built language models whose answers are known, for the aunet.eval tests.

``BigramLM``: the logits at a position are a row of a fixed table indexed by the unit
at that position, so every NLL can be computed by hand; it supports cached
generation (``init_state``/``step``) like the real models. ``ToyCodec``: a
longest-match tokenizer over a small vocabulary, standing in for a BPE tokenizer.
"""

from __future__ import annotations

import torch
from torch import nn

from aunet.config import BYTE_VOCAB, EOS_ID, ModelConfig


class BigramLM(nn.Module):
    def __init__(self, table: torch.Tensor, units: str = "bytes", seq_len: int = 64):
        super().__init__()
        vocab = table.shape[0]
        self.cfg = ModelConfig(arch="transformer", units=units, vocab_size=vocab, dims=[32], layers=[1],
                               head_dims=[32], ffn_dims=[32], seq_len=seq_len, window=None)
        self.table = nn.Parameter(table.clone().float())
        self.rows_seen = 0  # rows of all forward passes (to check row sharing)

    def forward(self, ids: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        self.rows_seen += ids.shape[0]
        return self.table[ids]

    def init_state(self) -> dict:
        return {}

    @torch.no_grad()
    def step(self, token: int, state: dict) -> torch.Tensor:
        return self.table[token].clone()

    def logprob(self, prev: int, nxt: int) -> float:
        return float(torch.log_softmax(self.table[prev].detach().double(), -1)[nxt])

    def nll(self, units: list[int]) -> float:
        """NLL of units[1:] given units[:-1]."""
        return -sum(self.logprob(a, b) for a, b in zip(units, units[1:]))

    @classmethod
    def from_text(cls, text: bytes, sharp: float = 8.0, seq_len: int = 64) -> BigramLM:
        """Continues ``text``: each byte's observed successors get +``sharp`` logits (EOS before and after)."""
        table = torch.zeros(BYTE_VOCAB, BYTE_VOCAB)
        prev = EOS_ID
        for b in [*text, EOS_ID]:
            table[prev, b] += sharp
            prev = b
        return cls(table, seq_len=seq_len)


class ToyCodec:
    """Greedy longest-match tokenizer: the 256 bytes, a few merges, then EOS and PAD."""

    def __init__(self, merges: tuple[bytes, ...] = (b"aa", b" a", b"the", b" the")):
        self.vocab = [bytes([i]) for i in range(256)] + list(merges)
        self.ids = {v: i for i, v in enumerate(self.vocab)}
        self.eos_id = len(self.vocab)
        self.pad_id = self.eos_id + 1
        self.longest = max(len(v) for v in self.vocab)

    @property
    def vocab_size(self) -> int:
        return self.pad_id + 1

    def encode(self, data: bytes | str) -> list[int]:
        data = data.encode() if isinstance(data, str) else data
        out, i = [], 0
        while i < len(data):
            for n in range(min(self.longest, len(data) - i), 0, -1):
                if data[i:i + n] in self.ids:
                    out.append(self.ids[data[i:i + n]])
                    i += n
                    break
        return out

    def decode(self, ids: list[int]) -> bytes:
        return b"".join(self.vocab[i] for i in ids if i < len(self.vocab))


def assert_causal(model: nn.Module, data: bytes) -> None:
    """Logits at position t depend on bytes 0..t only: changing bytes from ``cut`` on leaves the logits
    before ``cut`` as they were, and does change those after (the model reads its input)."""
    ids = torch.tensor([list(data)])
    base = model(ids)[0]
    generator = torch.Generator().manual_seed(1)
    for cut in (1, 9, 24, 57, len(data) - 3):
        perturbed = ids.clone()
        perturbed[0, cut:] = torch.randint(0, 256, (ids.shape[1] - cut,), generator=generator)
        out = model(perturbed)[0]
        torch.testing.assert_close(out[:cut], base[:cut], atol=1e-5, rtol=1e-5)
        assert (out[cut:] - base[cut:]).abs().max() > 1e-3
