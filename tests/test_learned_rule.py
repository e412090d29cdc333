"""The learned rule (H-Net's dynamic chunking inside an AU-Net stage): causal, cached generation equal to
the full forward, gradients reaching the router, the ratio loss pulling the realised contraction to its
target, its FLOPs planned from the target, and one clear line for each bad input."""

import pytest
import torch
import torch.nn.functional as F

from aunet import ladder
from aunet.archs.aunet import EMA_BLOCK, ema_block_squares
from aunet.config import ModelConfig
from aunet.flops import flops_breakdown
from aunet.ladder.families import family_config
from aunet.models import build_model
from aunet.models.aunet import stage_lengths
from aunet.models.routing import chunk_ema, ema_step
from aunet.splitting import parse_rule, pool_levels
from aunet.train import router_loss, routing_entry
from tests.helpers.toy_models import assert_causal

TEXT = (b"The cat sat on the mat. Then it slept soundly! A dog came by, 1234 times,\n"
        b"and barked at the   moon\xe2\x80\x94twice. caf\xc3\xa9 \xff\xfe end.")


def tiny(splits, **fields) -> ModelConfig:
    n = len(splits) + 1
    dims = [32, 48, 64][:n]
    shape = dict(arch="aunet", dims=dims, layers=[1] * n, head_dims=[16] * n, ffn_dims=[2 * d for d in dims],
                 seq_len=256, window=16, splits=splits)
    return ModelConfig(**{**shape, **fields})


CONFIGS = {
    "learned": dict(splits=["learned:c=4"]),
    "word,learned": dict(splits=["word", "learned:c=2"]),
    "learned,learned": dict(splits=["learned:c=2", "learned:c=2"]),
    "learned,average,capped": dict(splits=["learned:c=3"], pooling="average", max_pooled=[20]),
}


@pytest.fixture(params=list(CONFIGS), ids=str)
def model(request):
    torch.manual_seed(0)
    return build_model(tiny(**CONFIGS[request.param])).eval()


def test_logits_at_t_depend_only_on_bytes_up_to_t(model):
    assert_causal(model, TEXT)


def test_cached_steps_match_the_full_forward(model):
    full = model(torch.tensor([list(TEXT)]))[0]
    state = model.init_state()
    stepped = torch.stack([model.step(t, state) for t in TEXT])
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4)
    last = model.routing[model.cfg.n_stages - 2]  # the last transition is learned in every config here
    kept = int(last.boundary.sum())
    if model.cfg.max_pooled:
        kept = min(kept, model.cfg.max_pooled[-1])
    assert state.positions[-1] == kept  # the same boundaries, decided position by position


def test_the_first_position_is_a_boundary_and_boundaries_are_where_p_passes_one_half():
    torch.manual_seed(0)
    model = build_model(tiny(["learned:c=4"])).eval()
    model(torch.tensor([list(TEXT)]))
    routing = model.routing[0]
    assert routing.boundary[0, 0] and routing.prob[0, 0] == 1.0
    torch.testing.assert_close(routing.boundary[0, 1:], routing.prob[0, 1:] >= 0.5)


@pytest.mark.parametrize("length", [7, EMA_BLOCK, 2 * EMA_BLOCK + 9])  # one block, exactly one, three with a carry
def test_the_chunk_ema_equals_its_step(length):
    torch.manual_seed(0)
    z, p = torch.randn(2, length, 5), torch.rand(2, length)
    smoothed, previous = [], None
    for c in range(length):
        previous = ema_step(z[:, c:c + 1], p[:, c:c + 1], previous)
        smoothed.append(previous)
    torch.testing.assert_close(chunk_ema(z, p), torch.cat(smoothed, 1))


def test_the_smoothing_term_predicts_what_flop_counter_mode_counts_of_a_long_ema():
    from torch.utils.flop_counter import FlopCounterMode

    batch, length, dim = 2, 2 * EMA_BLOCK + 9, 8
    z = torch.randn(batch, length, dim, requires_grad=True)
    p = torch.rand(batch, length, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        chunk_ema(z, p).sum().backward()
    assert counter.get_total_flops() == 6 * batch * ema_block_squares(length) * dim
    assert ema_block_squares(length) == 2 * EMA_BLOCK ** 2 + 9 ** 2  # grows as L·b, not L²


def test_the_lm_loss_alone_reaches_the_router_through_smoothing_and_the_straight_through_path():
    torch.manual_seed(0)
    model = build_model(tiny(["learned:c=4"]))
    ids = torch.tensor([list(TEXT)])
    F.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:]).backward()
    for name, weight in model.routers.named_parameters():
        assert weight.grad is not None and weight.grad.abs().sum() > 0, name


@pytest.mark.parametrize("target", [8.0, 1.25])
def test_the_ratio_loss_pulls_the_realised_contraction_towards_its_target(target):
    torch.manual_seed(0)
    model = build_model(tiny([f"learned:c={target}"], window=None))
    ids = torch.randint(0, 256, (4, 96), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    realised = []
    for _ in range(40):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()) + 1.0 * router_loss(model)
        realised.append(model.realised_contraction()[2][0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    start, end = abs(realised[0] / target - 1), abs(realised[-1] / target - 1)
    assert start > 0.3, realised[0]  # it starts far away
    assert end < start / 2, (realised[0], realised[-1])
    entry = routing_entry(model, band=0.25)  # what the trainer logs: the last forward pass's
    assert entry["contraction2"] == realised[-1] and entry["contraction2_gap"] == realised[-1] / target - 1


def test_flops_count_the_router_and_plan_the_pooled_count_from_the_target():
    cfg = tiny(["learned:c=4"])
    breakdown = flops_breakdown(cfg)
    assert breakdown.contraction == (1.0, 4.0)
    assert breakdown.stages[0].routing == 6.0 * 2 * 32 * 32 and breakdown.stages[1].routing == 0.0
    assert cfg.spec.family_name(cfg) == "aunet2_learned4"
    family = ladder.get_family("aunet2_learned4")  # the ladder plans it from its target contraction
    planned = family_config(family, 256, 4, 1024, 256)
    assert family.splits == ("learned:4",) and flops_breakdown(planned).contraction == (1.0, 4.0)
    assert cfg.spec.body_params(cfg)["router2"] == 2 * 32 * 32
    levels = torch.zeros(2, 100, dtype=torch.long)
    assert stage_lengths(levels, cfg) == [100, 25]
    word = flops_breakdown(tiny(["word"])).contraction[1]
    assert flops_breakdown(tiny(["word", "learned:c=2"])).contraction == (1.0, word, 2 * word)
    _, terms = cfg.spec.counter_terms(cfg, 2, [100, 23])
    router = [t for t in terms if t.name.startswith("router")]
    assert len(router) == 1 and router[0].analytic == 6.0 * 2 * 32 * 32 * 2 * 100


# ---- bad input: one line each ----------------------------------------------------------------


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("spec", ["learned:c=1", "learned:c=0.5"])
def test_a_target_contraction_at_or_below_one_is_refused(spec):
    with pytest.raises(ValueError) as err:
        tiny([spec])
    assert "give c > 1" in one_line(err)


def test_a_learned_rule_without_hidden_states_to_score_is_refused():
    with pytest.raises(ValueError) as err:  # a one-stage model: no pooled stage
        ModelConfig(arch="transformer", dims=[32], layers=[1], head_dims=[16], ffn_dims=[64], splits=["learned:c=4"])
    assert "no pooled stage" in one_line(err)
    with pytest.raises(ValueError) as err:  # the byte splitter (data-side levels) has bytes, not hidden states
        pool_levels(b"some bytes", 2, ["learned:c=4"])
    assert "hidden states" in one_line(err)
    with pytest.raises(ValueError) as err:  # a fixed rule below a learned one
        tiny(["learned:c=2", "words2"])
    assert "follows a learned one" in one_line(err)
    assert parse_rule("learned:c=2.5").target == 2.5


def test_a_checkpoint_without_the_router_is_refused():
    torch.manual_seed(0)
    fixed = build_model(tiny(["word"]))
    learned = build_model(tiny(["learned:c=4"]))
    with pytest.raises(ValueError) as err:
        learned.load_state_dict(fixed.state_dict())
    assert "no router" in one_line(err)
    learned.load_state_dict(build_model(tiny(["learned:c=4"])).state_dict())  # with its routers: loads


def test_a_tiny_run_trains_with_the_ratio_loss_and_logs_the_realised_contraction(tmp_path, caplog, capsys):
    from aunet.train import train
    from tests.helpers.train import tiny_config

    cfg = tiny_config(tmp_path / "run", model={"name": "", "splits": ["learned:c=4"]}, contraction_band=0.01)
    record = train(cfg)
    assert record.status == "finished", record.error
    logged = [entry for entry in record.metrics["history"] if "contraction2" in entry]
    assert logged and all(entry["contraction2"] > 1 for entry in logged)
    assert "realised contraction" in caplog.text  # a 1% band: the drift is reported

    # Its boundaries shown beside the word rule's: the same decisions as the model's own forward pass.
    from aunet.eval.loading import load_checkpoint
    from aunet.splitting.__main__ import main
    from aunet.splitting.show import model_boundaries

    text = tmp_path / "sample.txt"
    text.write_bytes(TEXT * 3)
    model = load_checkpoint(tmp_path / "run").model
    model(torch.tensor([list((TEXT * 3)[:model.cfg.seq_len])]))
    decided = model.routing[0].boundary[0].numpy()
    assert (model_boundaries(model, TEXT * 3)[:model.cfg.seq_len] == decided).all()
    assert main(["word", "--files", str(text), "--model", str(tmp_path / "run"), "--show", "40"]) == 0
    out = capsys.readouterr().out
    assert "learned (the model's router)" in out and "of word's are its" in out
    assert main(["word", "--files", str(text), "--model", str(tmp_path / "run")]) == 2  # --model needs --show
    assert "give --show N too" in capsys.readouterr().err


def test_flop_counter_mode_counts_what_the_prediction_says_on_the_actual_pooled_count():
    from aunet.flop_counter import count_flops, predict_flop_counter

    torch.manual_seed(0)
    cfg = tiny(["learned:c=4"])
    model = build_model(cfg)
    ids = torch.randint(0, 256, (2, 128), generator=torch.Generator().manual_seed(0))
    counted = count_flops(model, ids)["total"]
    actual = int(model.routing[0].boundary.sum(-1).max())  # varies with the router: not the planned 32
    predicted = sum(t.counted for t in predict_flop_counter(cfg, 2, [128, actual]).terms)
    assert counted == pytest.approx(predicted, rel=1e-3)


def test_a_corpus_measures_the_fixed_stages_and_plans_the_learned_ones_at_their_targets():
    from aunet.data import DataConfig, prepare_data

    corpus = prepare_data(DataConfig(units="bytes", seq_len=256), progress=False)
    word = corpus.contraction(tiny(["word"]))[1]
    assert corpus.contraction(tiny(["learned:c=4"])) == [1.0, 4.0]  # not one vector per sequence
    assert corpus.contraction(tiny(["word", "learned:c=2"])) == pytest.approx([1.0, word, 2 * word])
