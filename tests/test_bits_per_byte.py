"""Bits per byte against closed form.

A model whose logits are uniform over V entries loses exactly ln V nats on every target, so
over the held-out split it scores units * ln V / (bytes * ln 2) bits per byte. The units and
bytes are counted here from the held-out documents themselves (a byte model predicts every
byte and one end-of-document per document; a BPE model every token and one end-of-document),
so a denominator of units instead of bytes, a dropped mask or a lost document all fail.
Tolerances are 1e-6: cross-entropy runs in float32 (relative error ~1e-7 per target), while
the smallest bug caught, bytes vs bytes + one EOS per document, is ~1e-3.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aunet.config import ModelConfig
from aunet.data import DataConfig, prepare_data
from aunet.parallel import DistEnv
from aunet.record import RunRecord
from aunet.tracking import TrackingConfig
from aunet.train import TrainConfig, evaluate, train
from tests.helpers.data import make_docs, write_jsonl

SEQ = 128
TINY = dict(arch="transformer", dims=[32], layers=[1], head_dims=[16], ffn_dims=[64], seq_len=SEQ)


class UniformLogits(nn.Module):
    """Zero logits over ``vocab`` entries, whatever the input: the loss is ln(vocab) per target."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.unused = nn.Parameter(torch.zeros(()))  # evaluate() toggles eval/train mode

    def forward(self, ids, levels=None):
        assert levels is None
        return torch.zeros(*ids.shape, self.vocab)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_jsonl(d / "a.jsonl", make_docs(40, seed=5))
    return d


def data_config(corpus_dir, cache, units: str) -> DataConfig:
    return DataConfig(sources=[str(corpus_dir)], units=units, seq_len=SEQ, valid_bytes=8000, bpe_vocab=400,
                      cache_dir=str(cache))


def run_config(corpus, units: str, out, **kw) -> TrainConfig:
    model = corpus.fit_model_config(ModelConfig(**TINY, units=units, name=f"{units}_tiny"))
    return TrainConfig(model=model, data=corpus.cfg, tracking=TrackingConfig(enabled=False), steps=4,
                       bsz=4 * SEQ, log_every=2, output_dir=str(out), progress="off", max_micro_batch=3, **kw)


def as_bytes(doc) -> bytes:
    return doc if isinstance(doc, bytes) else doc.encode("utf-8")


@pytest.fixture(scope="module")
def corpora(corpus_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {units: prepare_data(data_config(corpus_dir, cache, units)) for units in ("bytes", "bpe")}


def test_uniform_model_scores_the_closed_form_for_bytes_and_bpe(corpora, tmp_path):
    heldout = [as_bytes(d) for d in corpora["bytes"].heldout_docs()]
    assert heldout == [as_bytes(d) for d in corpora["bpe"].heldout_docs()] and len(heldout) >= 2
    n_bytes = sum(len(d) for d in heldout)
    tokenizer = corpora["bpe"].tokenizer
    expected_units = {
        "bytes": n_bytes + len(heldout),  # every byte, then end-of-document
        "bpe": sum(len(tokenizer.encode(d)) + 1 for d in heldout),
    }
    assert expected_units["bpe"] < 0.7 * expected_units["bytes"]  # a real BPE: fewer units than bytes

    results = {}
    for units, corpus in corpora.items():
        cfg = run_config(corpus, units, tmp_path / units)
        vocab = cfg.model.vocab_size
        got = evaluate(UniformLogits(vocab), corpus, cfg, DistEnv())
        results[units] = got
        assert got["heldout_bytes"] == n_bytes
        assert got["heldout_units"] == expected_units[units]
        assert got["loss"] == pytest.approx(math.log(vocab), rel=1e-6)
        closed_form = expected_units[units] * math.log(vocab) / (n_bytes * math.log(2))
        assert got["bpb"] == pytest.approx(closed_form, rel=1e-6)
    # Same documents, same bytes: the two scores differ only by units * ln V.
    assert corpora["bpe"].vocab_size == 400
    ratio = results["bpe"]["bpb"] / results["bytes"]["bpb"]
    assert ratio == pytest.approx(expected_units["bpe"] * math.log(400)
                                  / (expected_units["bytes"] * math.log(259)), rel=1e-6)


class FixedLogits(UniformLogits):
    """The same non-uniform logits at every position: each target costs its own -log p, whatever the context."""

    def __init__(self, vocab: int):
        super().__init__(vocab)
        self.logits = torch.randn(vocab, generator=torch.Generator().manual_seed(0)) * 2

    def forward(self, ids, levels=None):
        return self.logits.expand(*ids.shape, self.vocab).clone()


def test_every_target_is_scored_once_and_padding_never(corpora, tmp_path):
    """Per-target nats differ, so a mean over padded positions, a dropped mask or a target counted twice
    all move the sum away from the documents' own: each byte, then one end-of-document."""
    from aunet.config import EOS_ID

    corpus = corpora["bytes"]
    heldout = [as_bytes(d) for d in corpus.heldout_docs()]
    model = FixedLogits(259)
    nll = -torch.log_softmax(model.logits.double(), dim=0)
    expected = sum(float(nll[list(doc)].sum() + nll[EOS_ID]) for doc in heldout)
    cfg = run_config(corpus, "bytes", tmp_path)
    batches = list(corpus.heldout_batches(cfg.model, cfg.max_micro_batch, 0, 1, cfg.eval_bytes))
    assert any(not bool(b["target_mask"].all()) for b in batches)  # the last sequence is padded
    got = evaluate(model, corpus, cfg, DistEnv())
    assert got["loss"] * got["heldout_units"] == pytest.approx(expected, rel=1e-6)
    assert got["bpb"] == pytest.approx(expected / (sum(map(len, heldout)) * math.log(2)), rel=1e-6)


def test_capped_evaluation_credits_only_the_bytes_it_scores(corpora, tmp_path):
    corpus = corpora["bytes"]
    full = evaluate(UniformLogits(259), corpus, run_config(corpus, "bytes", tmp_path), DistEnv())
    capped = evaluate(UniformLogits(259), corpus, run_config(corpus, "bytes", tmp_path, eval_bytes=2000), DistEnv())
    assert capped["heldout_bytes"] < full["heldout_bytes"]
    assert capped["bpb"] == pytest.approx(capped["heldout_units"] * math.log(259)
                                          / (capped["heldout_bytes"] * math.log(2)), rel=1e-6)


def test_a_short_bpe_run_records_bits_per_byte_from_its_own_nats_and_bytes(corpora, corpus_dir, tmp_path):
    cfg = run_config(corpora["bpe"], "bpe", tmp_path)
    record = train(cfg)
    assert record.status == "finished", record.error
    stored = RunRecord.read(tmp_path / "record.json")
    units, n_bytes = stored.metrics["heldout_units"], stored.metrics["heldout_bytes"]
    heldout = [as_bytes(d) for d in corpora["bpe"].heldout_docs()]
    assert n_bytes == sum(len(d) for d in heldout)
    assert units == sum(len(corpora["bpe"].tokenizer.encode(d)) + 1 for d in heldout)
    # loss is nats per token; bits per byte is the same nats over the bytes, in bits.
    assert stored.bpb == pytest.approx(stored.loss * units / (n_bytes * math.log(2)), rel=1e-6)
    # A barely trained model sits near the uniform loss, well below 2x it.
    assert 0.5 * math.log(400) < stored.loss < 1.2 * math.log(400)
