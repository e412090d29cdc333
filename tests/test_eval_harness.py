"""The lm-evaluation-harness adapter, against the real ``lm_eval`` classes (skipped if it is not installed)."""

from __future__ import annotations

import json

import pytest
import torch

from aunet.config import EOS_ID
from tests.helpers.toy_models import BigramLM, ToyCodec

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402

from aunet.eval.harness import AUNetLM, rolling_windows  # noqa: E402

TEXT = b"qwertyuiop"


def request(kind: str, *args) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=tuple(args), idx=0)


def test_loglikelihood_is_the_scorer():
    model = BigramLM.from_text(TEXT)
    lm = AUNetLM(model=model)
    assert isinstance(lm, LM)
    pairs = [("qwe", "rty"), ("qwe", "rtz"), ("", "qw")]
    out = lm.loglikelihood([request("loglikelihood", c, x) for c, x in pairs])
    # Independent answer from the bigram table: log p(continuation | EOS + context), and greedy
    # when every continuation byte is the table's argmax after the byte before it.
    for (context, continuation), (logprob, greedy) in zip(pairs, out):
        units = [EOS_ID, *context.encode(), *continuation.encode()]
        first = 1 + len(context)
        assert logprob == pytest.approx(sum(model.logprob(units[i - 1], units[i]) for i in range(first, len(units))),
                                        rel=1e-5)  # the model scores in float32, the table here in float64
        assert greedy == all(int(model.table[units[i - 1]].argmax()) == units[i] for i in range(first, len(units)))
    assert [g for _, g in out] == [True, False, True]
    assert lm.loglikelihood([request("loglikelihood", "qwe", ""), request("loglikelihood", "qwe", "r")])[0] == (0.0, True)


def test_rolling_windows_predict_every_unit_once_with_bounded_context():
    units = list(range(1, 24))
    for width in (1, 4, 7, 30):
        windows = rolling_windows(units, 0, width)
        assert [t for _, ts in windows for t in ts] == units
        seq = [0, *units]
        start = 0
        for ctx, targets in windows:
            assert ctx and len(ctx) + len(targets) - 1 <= width
            assert ctx == seq[start + 1 - len(ctx):start + 1]  # the inputs just before the targets
            start += len(targets)


def test_loglikelihood_rolling_covers_the_whole_string():
    model = BigramLM.from_text(TEXT, seq_len=4)  # windows of 4 units over 22 bytes
    lm = AUNetLM(model=model)
    text = "qwertyuiop qwertyuiop!"
    (total,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)])
    assert total == pytest.approx(-model.nll([EOS_ID, *text.encode()]), rel=1e-6)
    codec = ToyCodec()
    g = torch.Generator().manual_seed(0)
    bpe = BigramLM(torch.randn(codec.vocab_size, codec.vocab_size, generator=g), units="bpe", seq_len=3)
    (total,) = AUNetLM(model=bpe, codec=codec).loglikelihood_rolling([request("loglikelihood_rolling", "the aaa the")])
    assert total == pytest.approx(-bpe.nll([codec.eos_id, *codec.encode("the aaa the")]), rel=1e-6)


def test_generate_until_stops_at_the_stop_strings():
    lm = AUNetLM(model=BigramLM.from_text(TEXT))
    out = lm.generate_until([request("generate_until", "qw", {"until": ["u"], "max_gen_toks": 20}),
                             request("generate_until", "qw", {"until": [], "max_gen_toks": 3}),
                             request("generate_until", "t", {"until": "\n"})])
    assert out == ["erty", "ert", "yuiop"]


def test_simple_evaluate_end_to_end_on_local_tasks(tmp_path, monkeypatch):
    """lm_eval's own evaluator on two local task YAMLs (multiple choice and generation)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "toy.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"question": "qwe", "choices": ["rty", "zzz"], "gold": 0, "answer": "rty"},
        {"question": "tyu", "choices": ["abc", "iop"], "gold": 1, "answer": "io"},
        {"question": "q", "choices": ["wer", "xcv"], "gold": 0, "answer": "wrong"}]) + "\n")
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n" \
             "doc_to_text: '{{question}}'\ntarget_delimiter: ''\n"
    (tmp_path / "mc.yaml").write_text(f"task: toy_mc\n{common}output_type: multiple_choice\n"
                                      "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{gold}}'\n"
                                      "metric_list:\n  - metric: acc\n")
    (tmp_path / "gen.yaml").write_text(f"task: toy_gen\n{common}output_type: generate_until\n"
                                       "doc_to_target: '{{answer}}'\ngeneration_kwargs:\n  until: ['p']\n"
                                       "  max_gen_toks: 3\nmetric_list:\n  - metric: exact_match\n")
    from aunet.eval.harness import run_harness

    lm = AUNetLM(model=BigramLM.from_text(TEXT))
    results = run_harness(None, ["toy_mc", "toy_gen"], include_path=str(tmp_path), include_defaults=False, lm=lm)
    assert results["results"]["toy_mc"]["acc,none"] == 1.0
    assert results["results"]["toy_gen"]["exact_match,none"] == pytest.approx(2 / 3)
