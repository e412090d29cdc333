"""aunet.eval: the scorer and its normalisations against hand-computed NLLs, task parsing, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aunet.config import EOS_ID, ModelConfig
from aunet.eval import (
    Item,
    OptionScores,
    TaskSpec,
    bootstrap_ci,
    evaluate_task,
    expand_tasks,
    get_task,
    score_options,
    score_pairs,
)
from aunet.eval.generation import greedy_generations
from aunet.eval.registry import load_jsonl
from aunet.eval.scoring import score_ids
from aunet.eval.suite import EvalConfig, run_downstream, update_record
from aunet.eval.tasks import parse_hellaswag, parse_mmlu, parse_winogrande, select, with_shots
from aunet.generate import generate
from aunet.models import build_model
from tests.helpers.data import make_docs, write_jsonl
from tests.helpers.toy_models import BigramLM, ToyCodec

MC = TaskSpec("toy_mc", None, kind="mc")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (on a busy 2-core machine, thread barriers dominate tiny kernels)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


GEN = TaskSpec("toy_gen", None, kind="gen", chance_override=0.0)


def random_bigram(seed: int = 0, vocab: int = 259, seq_len: int = 64) -> BigramLM:
    g = torch.Generator().manual_seed(seed)
    return BigramLM(torch.randn(vocab, vocab, generator=g) * 2, seq_len=seq_len)


# ---------------------------------------------------------------------------- the scorer
def test_scores_equal_hand_computed_nll_bytes_and_utf8():
    model = random_bigram()
    pairs = [("The cat", " sat"), ("", "Hello"), ("x", " é!"), ("abc", "d")]
    scores = score_pairs(model, pairs)
    for (ctx, cont), s in zip(pairs, scores):
        units = [EOS_ID, *ctx.encode(), *cont.encode()]
        k = 1 + len(ctx.encode())
        expected = -sum(model.logprob(a, b) for a, b in zip(units[k - 1:], units[k:]))
        assert s.nll == pytest.approx(expected, rel=1e-5, abs=1e-5)
        assert s.n_bytes == len(cont.encode()) == s.n_units
    assert scores[2].n_bytes == 4  # " é!" is 4 bytes, 3 characters: the paper's "characters" are bytes


def test_batching_padding_and_row_sharing_do_not_change_scores():
    model = random_bigram(1)
    items = [Item(f"Question {i}?\nAnswer:", (" A", " B", " C", " D"), i % 4) for i in range(3)]
    items.append(Item("ctx", (" yes", " no", " maybe so"), 0))
    model.rows_seen = 0
    together = score_options(model, items, batch_units=10_000)
    # MMLU-style letter options need one row per item; " yes"/" no"/" maybe so" need three.
    assert model.rows_seen == 3 + 3
    alone = [score_options(model, [it], batch_units=7)[0] for it in items]  # tiny batches: one row each
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.nll, b.nll, rtol=1e-6)
        np.testing.assert_array_equal(a.n_bytes, b.n_bytes)


def test_long_context_is_cut_on_the_left_to_seq_len():
    model = random_bigram(2, seq_len=16)
    ctx, cont = "y" * 40 + "abcdef", "ghij"
    (s,) = score_pairs(model, [(ctx, cont)])
    units = [*ctx.encode(), *cont.encode()]
    # A bigram model only looks at the previous byte, so the cut changes nothing it reads.
    assert s.nll == pytest.approx(model.nll(units[len(ctx) - 1:]), rel=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        score_pairs(model, [("a", "z" * 17)])
    (raw,) = score_ids(model, [([EOS_ID, 1, 2, 3], [4, 5])], pad=258, limit_len=3)
    assert raw[1] == 2


def test_normalisation_by_bytes_raw_and_units():
    # ' ' -> 'a' and ' ' -> 'b' equally likely, 'a' -> 'a' very likely: the long option " aaaaaaa" has the
    # higher total NLL but the lower NLL per byte. The paper's choice (per byte) must pick it.
    table = torch.zeros(259, 259)
    table[ord(" "), ord("a")] = table[ord(" "), ord("b")] = 10.0
    table[ord("a"), ord("a")] = 10.0
    model = BigramLM(table)
    item = Item("x", (" b", " aaaaaaa"), gold=1)
    (s,) = score_options(model, [item])
    assert s.nll[0] < s.nll[1] and s.nll[0] / 2 > s.nll[1] / 8
    assert (s.choice("raw"), s.choice("char"), s.choice("token")) == (0, 1, 1)
    result = evaluate_task(model, MC, items=[item])
    assert (result.acc_char, result.acc_raw, result.acc) == (1.0, 0.0, 1.0)
    # per-unit normalisation follows n_units, not bytes
    scores = OptionScores(np.array([4.0, 3.0]), np.array([8.0, 2.0]), np.array([1.0, 2.0]), np.zeros(2, bool))
    assert (scores.choice("char"), scores.choice("raw"), scores.choice("token")) == (0, 1, 1)


def test_bpe_models_tokenise_context_and_option_separately():
    codec = ToyCodec()
    g = torch.Generator().manual_seed(3)
    model = BigramLM(torch.randn(codec.vocab_size, codec.vocab_size, generator=g), units="bpe")
    ctx, cont = "the", " aaaa"
    (s,) = score_pairs(model, [(ctx, cont)], codec=codec)
    cont_ids = codec.encode(cont)
    assert codec.decode(cont_ids) == cont.encode() and len(cont_ids) == 3  # " a", "aa", "a"
    units = [codec.eos_id, *codec.encode(ctx), *cont_ids]
    assert s.n_units == 3 and s.n_bytes == 5
    assert s.nll == pytest.approx(model.nll(units[-4:]), rel=1e-6)
    # the same text jointly tokenised would be different ("the a" has no merge across): separate is exact
    with pytest.raises(ValueError, match="needs its tokenizer"):
        score_pairs(model, [(ctx, cont)])

    class Lossy(ToyCodec):
        def decode(self, ids):
            return super().decode(ids)[:-1]

    with pytest.raises(ValueError, match="round-trip"):
        score_pairs(model, [(ctx, cont)], codec=Lossy())


def test_bpe_scoring_with_a_trained_tokenizer():
    """The same check with a real byte-level BPE (``tokenizers``), on UTF-8 and newlines too."""
    from aunet.data import train_bpe

    tok = train_bpe(make_docs(200, seed=11), vocab_size=400)
    g = torch.Generator().manual_seed(4)
    model = BigramLM(torch.randn(tok.vocab_size, tok.vocab_size, generator=g), units="bpe")
    pairs = [("Document 7. the", " cat sat"), ("héllo", " wörld 🙂"), ("", "the end.\n")]
    scores = score_pairs(model, pairs, codec=tok)
    for (ctx, cont), s in zip(pairs, scores):
        cont_ids = tok.encode(cont)
        prefix = [tok.eos_id, *tok.encode(ctx)]
        assert (s.n_units, s.n_bytes) == (len(cont_ids), len(cont.encode()))
        assert s.nll == pytest.approx(model.nll([prefix[-1], *cont_ids]), rel=1e-5)


@pytest.mark.parametrize("arch", ["aunet", "transformer_bytes", "transformer_bpe", "mamba"])
def test_every_architecture_scores_like_its_cached_generation(arch):
    torch.manual_seed(0)
    codec = None
    common = dict(seq_len=64, window=None)
    if arch == "aunet":
        cfg = ModelConfig(arch="aunet", dims=[32, 64], layers=[1, 1], head_dims=[16, 16], ffn_dims=[64, 128],
                          splits=["word"], **common)
    elif arch == "mamba":
        cfg = ModelConfig(arch="mamba", dims=[32], layers=[1], head_dims=[16], ffn_dims=[64], **common)
    else:
        units = "bpe" if arch.endswith("bpe") else "bytes"
        codec = ToyCodec() if units == "bpe" else None
        cfg = ModelConfig(arch="transformer", units=units, vocab_size=codec.vocab_size if codec else 259,
                          dims=[32], layers=[1], head_dims=[16], ffn_dims=[64], **common)
    model = build_model(cfg).eval()
    items = [Item("the cat sat", (" on the mat", " ran", " a"), 0), Item("Q: 2+2?\nAnswer:", (" A", " B"), 1)]
    scores = score_options(model, items, codec=codec, batch_units=256)
    for item, s in zip(items, scores):
        for i, (ctx, cont) in enumerate(item.pairs()):
            prefix = [codec.eos_id, *codec.encode(ctx)] if codec else [EOS_ID, *ctx.encode()]
            targets = codec.encode(cont) if codec else list(cont.encode())
            state, nll = model.init_state(), 0.0
            for u in prefix:
                logits = model.step(u, state)
            for u in targets:
                nll -= float(torch.log_softmax(logits.double(), -1)[u])
                logits = model.step(u, state)
            assert s.nll[i] == pytest.approx(nll, rel=1e-4, abs=1e-4), (arch, ctx, cont)


# ---------------------------------------------------------------------------- end to end
TEXT = b"qwertyuiop"  # every byte has one successor: the model continues this text and nothing else


def test_end_to_end_a_model_that_knows_the_text_gets_everything_right():
    model = BigramLM.from_text(TEXT)
    letters = "asdfghjklzxcvbnm"
    rng = np.random.default_rng(0)
    items = []
    for k in range(1, 8):
        ctx, truth = TEXT[:k].decode(), TEXT[k:k + 3].decode()
        wrong = ["".join(rng.choice(list(letters), len(truth))) for _ in range(3)]
        options = [truth, *wrong]
        order = rng.permutation(4)
        items.append(Item(ctx, tuple(options[j] for j in order), int(np.where(order == 0)[0][0])))
    result = evaluate_task(model, MC, items=items)
    assert result.acc_char == result.acc_raw == result.acc_token == 1.0
    assert result.chance == 0.25 and result.n == 7 and result.ci95[0] > result.chance  # the whole interval above chance
    golds = score_options(model, items)
    nats = sum(s.nll[it.gold] for s, it in zip(golds, items))
    assert result.gold_bpb == pytest.approx(nats / sum(s.n_bytes[it.gold] for s, it in zip(golds, items)) / math.log(2))
    assert 0 < result.flat()["toy_mc_gold_bpb"] == result.gold_bpb < 8  # a record column: eval_<task>_gold_bpb
    # greedy exact match through the cached generation path
    gen_items = [Item("qwe", ("x", "y"), 0, target="rtyu"), Item("qwe", ("x", "y"), 0, target="rtyx"),
                 Item("tyu", ("x", "y"), 0, target="iop")]
    gen = evaluate_task(model, GEN, items=gen_items)
    assert gen.per_item == [True, False, True] and gen.acc == pytest.approx(2 / 3) and gen.metric == "exact_match"


def test_shared_prefix_generation_equals_aunet_generate():
    torch.manual_seed(1)
    cfg = ModelConfig(arch="aunet", dims=[32, 64], layers=[1, 1], head_dims=[16, 16], ffn_dims=[64, 128],
                      splits=["word"], seq_len=128, window=None)
    model = build_model(cfg).eval()
    prompts = ["Spell out the word \"cat\".\nAnswer: \"", "Spell out the word \"dog\".\nAnswer: \"",
               "Spell out the word \"doge\".\nAnswer: \""]
    ours = greedy_generations(model, prompts, [6, 9, 3])
    theirs = [generate(model, p.encode(), n) for p, n in zip(prompts, [6, 9, 3])]
    assert ours == theirs and [len(x) for x in ours] == [6, 9, 3]
    bigram = BigramLM.from_text(TEXT)
    assert greedy_generations(bigram, ["qw", "io"], 20) == [b"ertyuiop", b"p"]  # stops at EOS


def test_bootstrap_interval():
    x = np.r_[np.ones(280), np.zeros(120)]  # 70% of 400
    low, high = bootstrap_ci(x, n_boot=2000, seed=0)
    assert low < 0.7 < high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 400), rel=0.15)
    assert bootstrap_ci(x, seed=0) == bootstrap_ci(x, seed=0)
    assert bootstrap_ci(np.ones(50)) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


# ---------------------------------------------------------------------------- tasks and prompts
def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_items_name_the_file_and_line(tmp_path):
    good = json.dumps({"question": "A man", "choices": ["runs.", "sits."], "labels": ["A", "B"], "answer": "B"})
    cases = {
        "{not json": "Expecting property name",
        json.dumps({"question": "A man", "choices": ["runs.", "sits."], "labels": ["A", "B"]}): "missing field 'answer'",
        json.dumps({"question": "A man", "choices": ["runs.", "sits."], "labels": ["A", "B"], "answer": "C"}):
            "answer 'C' is not one of the labels",
        json.dumps({"question": "A man", "choices": ["runs.", ""], "labels": ["A", "B"], "answer": "A"}): "empty",
        json.dumps(["a list"]): "JSON object",
    }
    for bad, message in cases.items():
        path = write(tmp_path / "h.jsonl", [good, "", bad])
        with pytest.raises(ValueError, match=rf"h\.jsonl:3: malformed item.*{message}"):
            load_jsonl(path, parse_hellaswag, "hellaswag")
    items = load_jsonl(write(tmp_path / "ok.jsonl", [good, good]), parse_hellaswag, "hellaswag")
    assert [it.gold for it in items] == [1, 1] and items[0].options == (" runs.", " sits.")
    wino = json.dumps({"sentence": "No blank here.", "choices": ["a", "b"], "labels": ["A", "B"], "answer": "A"})
    with pytest.raises(ValueError, match=r"w\.jsonl:1: .*0 blanks"):
        load_jsonl(write(tmp_path / "w.jsonl", [wino]), parse_winogrande)


def test_winogrande_partial_scoring_and_mmlu_header_rows():
    row = {"sentence": "Sarah beat Maria because _ trained more.", "choices": ["Sarah", "Maria"],
           "labels": ["A", "B"], "answer": "A"}
    item = parse_winogrande(row)
    assert item.pairs() == [("Sarah beat Maria because Sarah", " trained more."),
                            ("Sarah beat Maria because Maria", " trained more.")]
    assert item.solved() == "Sarah beat Maria because Sarah trained more."
    header = {"question": "question", "answer_a": "answer_a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
              "correct_answer": "answer", "topic": "x"}
    assert parse_mmlu(header) is None
    mmlu = parse_mmlu({**header, "question": "2+2?", "answer_a": "3", "answer_b": 4, "correct_answer": "B"})
    assert mmlu.options == (" A", " B", " C", " D") and mmlu.gold == 1 and "B. 4" in mmlu.context


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'hellasag'; known tasks: .*hellaswag.*mmlu"):
        get_task("hellasag")
    assert expand_tasks("[hellaswag, cute_spell]") == ["hellaswag", "cute_spell"]
    assert expand_tasks(["cute", "cute_spell"])[:2] == ["cute_spell", "cute_inverse_spell"]
    assert len(expand_tasks(["mc", "cute", "cute_mc"])) == 7 + 7 + 7


def test_missing_data_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m aunet\.eval fetch mmlu"):
        get_task("mmlu").load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"python -m aunet\.eval fetch cute"):
        get_task("cute_spell").load(tmp_path)


def test_subsets_and_shots_are_seeded_and_never_leak_the_item():
    items = [Item(f"q{i}", (" a", " b"), i % 2, group="g1" if i < 10 else "g2", id=f"t/{i}") for i in range(20)]
    a, b = select(items, 5, seed=0), select(items, 5, seed=0)
    assert a == b and len(a) == 5 and select(items, 5, seed=1) != a
    assert [items.index(x) for x in a] == sorted(items.index(x) for x in a)  # file order kept
    with pytest.raises(ValueError, match="limit"):
        select(items, 0)
    by_group = {"g1": items[:10], "g2": items[10:]}
    for item in items:
        shot = with_shots(item, items, 3, seed=0, by_group=by_group)
        demos = shot.context.split("\n\n")[:-1]
        assert len(demos) == 3 and item.context + item.options[item.gold] not in demos
        assert all(int(d[1:d.index(" ")]) // 10 == int(item.id[2:]) // 10 for d in demos)  # same group
        assert shot == with_shots(item, items, 3, seed=0, by_group=by_group)


# ---------------------------------------------------------------------------- suite, record, CLI
def save_checkpoint(tmp_path, record: dict | None = None):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="transformer", dims=[32], layers=[1], head_dims=[16], ffn_dims=[64], seq_len=64,
                      window=None)
    model = build_model(cfg)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "fingerprint": "x"}, run / "model.pt")
    if record is not None:
        (run / "record.json").write_text(json.dumps(record))
    return run, model


def test_suite_failures_never_raise_and_records_merge(tmp_path):
    model = random_bigram()
    scores, errors = run_downstream(model, {"tasks": ["nope"]})
    assert scores == {} and "unknown task 'nope'" in errors["suite"]
    scores, errors = run_downstream(model, EvalConfig(tasks=["hellaswag", "cute_spell"], limit=3,
                                                      cache_dir=str(tmp_path)))
    assert scores == {} and set(errors) == {"hellaswag", "cute_spell"}
    assert "python -m aunet.eval fetch hellaswag" in errors["hellaswag"]
    with pytest.raises(ValueError, match="limit"):
        EvalConfig(limit=0)
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"status": "finished", "downstream": {"old": 1.0}, "metrics": {}}))
    update_record(record, {"hellaswag": 0.3}, {"mmlu": "MissingDataError: ..."})
    data = json.loads(record.read_text())
    assert data["downstream"] == {"old": 1.0, "hellaswag": 0.3} and "mmlu" in data["metrics"]["downstream_errors"]


def test_cli_bad_input(tmp_path, capsys):
    from aunet.eval.__main__ import main

    run, _ = save_checkpoint(tmp_path, {"status": "finished", "downstream": {}})
    assert main([f"checkpoint={run}", "tasks=[hellasag]"]) == 2
    assert "known tasks" in capsys.readouterr().err
    assert main([f"checkpoint={tmp_path / 'missing'}", "tasks=[hellaswag]"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([f"checkpoint={run}", "taks=[hellaswag]"]) == 2
    assert "unknown argument 'taks'" in capsys.readouterr().err
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "checkpoint.pt").write_bytes(b"x")
    assert main([f"checkpoint={tmp_path / 'partial'}", "tasks=[hellaswag]"]) == 2
    assert "only checkpoint.pt" in capsys.readouterr().err
    # missing data: the run is evaluated, the task fails with the fetch command, exit status 1
    assert main([f"checkpoint={run}", "tasks=[hellaswag]", f"cache={tmp_path / 'empty'}"]) == 1
    assert "python -m aunet.eval fetch hellaswag" in capsys.readouterr().out


def test_load_checkpoint_byte_model_scores_like_the_original(tmp_path):
    from aunet.eval import load_checkpoint

    run, model = save_checkpoint(tmp_path)
    loaded = load_checkpoint(run)
    assert loaded.codec is None and loaded.record is None and not loaded.model.training
    pairs = [("The cat", " sat"), ("", "x")]
    assert score_pairs(loaded.model, pairs) == score_pairs(model, pairs)
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a finished run's model.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_load_checkpoint_bpe_rebuilds_and_checks_its_tokenizer(tmp_path):
    from aunet.data import DataConfig, prepare_data
    from aunet.eval import load_checkpoint

    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "a.jsonl", make_docs(40, seed=5))
    data = DataConfig(sources=[str(tmp_path / "data")], units="bpe", seq_len=64, valid_bytes=4000, bpe_vocab=300,
                      cache_dir=str(tmp_path / "cache"))
    corpus = prepare_data(data)
    cfg = ModelConfig(arch="transformer", units="bpe", vocab_size=corpus.tokenizer.vocab_size, dims=[32], layers=[1],
                      head_dims=[16], ffn_dims=[64], seq_len=64, window=None)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": build_model(cfg).state_dict(), "config": cfg.to_dict()}, run / "model.pt")
    record = {"status": "finished", "bytes_per_unit": corpus.bytes_per_unit, "config": {"data": data.to_dict()}}
    (run / "record.json").write_text(json.dumps(record))
    loaded = load_checkpoint(run)
    assert loaded.codec.encode("hello world") == corpus.tokenizer.encode("hello world")
    (s,) = score_pairs(loaded.model, [("Document 1.", " the end")], codec=loaded.codec)
    assert s.n_bytes == 8 and s.n_units == len(corpus.tokenizer.encode(" the end"))
    # a record whose compression does not match: another tokenizer, refused with the way out
    (run / "record.json").write_text(json.dumps({**record, "bytes_per_unit": record["bytes_per_unit"] * 1.01}))
    with pytest.raises(ValueError, match="not the tokenizer the model was trained with.*tokenizer=<"):
        load_checkpoint(run)
    (run / "record.json").unlink()
    with pytest.raises(ValueError, match="give tokenizer=<path of tokenizer.json>"):
        load_checkpoint(run)
    assert load_checkpoint(run, tokenizer=corpus.tokenizer.path).codec.vocab_size == corpus.tokenizer.vocab_size
