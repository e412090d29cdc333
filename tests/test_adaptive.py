"""Sweeps that correct themselves: phase 1, box moves past an edge optimum, phase 2 (Optuna), the dashboard."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from sweeps.adaptive import CellPrior, Outcome, cell_box, next_trials
from sweeps.dashboard import cell_study_name, mirror_to_optuna
from sweeps.ledger import Ledger
from sweeps.study import StudyConfig, Trial
from sweeps.sweeper import study_cells

REPO = Path(__file__).resolve().parents[1]
CELL = CellPrior("aunet2", 1e12, lr=1e-3, bsz=8192, seq_len=256)


def bowl(lr_opt: float, bsz_opt: float):
    """A smooth loss with its minimum at (lr_opt, bsz_opt); LR above 4x the optimum diverges."""
    def outcome(trial: Trial) -> Outcome:
        if trial.lr > 4 * lr_opt:
            return Outcome(trial, "diverged", None)
        u, v = math.log(trial.lr / lr_opt), math.log(trial.bsz / bsz_opt)
        return Outcome(trial, "finished", 2.0 * (1 + 0.03 * u * u + 0.015 * v * v))
    return outcome


def run_cell(study: StudyConfig, loss, cell: CellPrior = CELL) -> list[list[Outcome]]:
    """Every round of one cell until it proposes nothing: the proposer as the sweeper drives it."""
    history: list[Outcome] = []
    rounds = []
    while proposals := next_trials(study, cell, history):
        assert [t.index for t in proposals] == list(range(len(history), len(history) + len(proposals)))
        rounds.append([loss(t) for t in proposals])
        history += rounds[-1]
    return rounds


def test_an_interior_optimum_goes_straight_to_phase_2_with_the_configured_counts():
    study = StudyConfig(name="s", trials=8, adaptive_trials=5, adaptive_batch=2, sampler="tpe")
    rounds = run_cell(study, bowl(1.3e-3, 6000))
    assert [[o.trial.phase for o in r] for r in rounds] == [["qmc"] * 8, ["adaptive"] * 2, ["adaptive"] * 2,
                                                            ["adaptive"]]
    prior_box = rounds[0][0].trial.box
    assert prior_box == (2.5e-4, 4e-3, 2048, 32768)
    adaptive = [o.trial for r in rounds[1:] for o in r]
    assert all(t.box == prior_box and 2.5e-4 <= t.lr <= 4e-3 and t.bsz % 256 == 0 for t in adaptive)


def test_the_best_configuration_is_rerun_with_each_missing_seed_last():
    study = StudyConfig(name="s", trials=6, adaptive_trials=2, adaptive_batch=2, seeds=3)
    rounds = run_cell(study, bowl(1.3e-3, 6000))
    assert [o.trial.phase for o in rounds[-1]] == ["seed", "seed"] and len(rounds) == 3
    searched = [o for r in rounds[:-1] for o in r if o.status == "finished"]
    best = min(searched, key=lambda o: o.loss).trial
    reruns = [o.trial for o in rounds[-1]]
    assert [(t.lr, t.bsz, t.seed) for t in reruns] == [(best.lr, best.bsz, 1), (best.lr, best.bsz, 2)]
    assert reruns[0].overrides()[-1] == "seed=1" and "seed=" not in " ".join(best.overrides())
    # A seed rerun that is better than the searched best does not start another round of reruns.
    lucky = [*[o for r in rounds[:-1] for o in r], *(Outcome(t, "finished", 0.5) for t in reruns)]
    assert next_trials(study, CELL, lucky) == []
    assert run_cell(StudyConfig(name="s", trials=6, adaptive_trials=2, seeds=1), bowl(1.3e-3, 6000))[-1][0].trial.phase \
        == "adaptive"


def test_box_moves_stop_at_the_largest_batch_that_trains_enough_steps():
    study = StudyConfig(name="s", trials=16, adaptive_trials=2, max_moves=3, move_trials=4)
    limited = CellPrior("aunet2", 1e12, lr=1e-3, bsz=8192, seq_len=256, bsz_limit=48 * 1024)
    rounds = run_cell(study, bowl(1e-3, 8192 * 40), limited)  # the optimum far above the limit
    moves = [o.trial for r in rounds for o in r if o.trial.phase == "move"]
    assert moves and max(t.box[3] for t in moves) == 48 * 1024 and max(t.bsz for t in moves) <= 48 * 1024
    everything = [o.trial for r in rounds for o in r]
    assert max(t.bsz for t in everything) <= 48 * 1024  # the adaptive phase searches the clamped box
    at_limit = CellPrior("aunet2", 1e12, lr=1e-3, bsz=8192, seq_len=256, bsz_limit=32768)  # the prior box's top
    assert "move" not in [o.trial.phase for r in run_cell(study, bowl(1e-3, 8192 * 40), at_limit) for o in r]


def test_seed_reruns_round_trip_through_the_ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    rerun = Trial("aunet2", 1e12, 9, 1e-3, 4096, "seed", (1e-4, 1e-2, 1024, 8192), seed=2)
    ledger.add([rerun])
    assert ledger.rows()[0].trial == rerun


@pytest.mark.parametrize(("lr_opt", "bsz_opt", "sides"), [(5e-2, 8192, "lr upper"), (2e-5, 8192, "lr lower"),
                                                         (1e-3, 8192 * 40, "bsz upper")])
def test_an_edge_optimum_moves_the_box_past_that_edge_until_it_is_inside(lr_opt, bsz_opt, sides):
    # 16 Sobol points put one in each sixteenth of the LR range: the outer tenth is always sampled.
    study = StudyConfig(name="s", trials=16, adaptive_trials=4, sampler="tpe", max_moves=3, move_trials=4)
    loss = bowl(lr_opt, bsz_opt)
    rounds = run_cell(study, loss)
    phases = [r[0].trial.phase for r in rounds]
    assert phases[0] == "qmc" and phases[1] == "move" and "adaptive" in phases and phases.count("move") <= 3
    before, after = rounds[0][0].trial.box, rounds[1][0].trial.box
    moved = rounds[1]
    if sides == "lr upper":
        assert after[1] == pytest.approx(before[1] * 16, rel=1e-5) and all(o.trial.lr >= before[1] for o in moved)
    elif sides == "lr lower":
        assert after[0] == pytest.approx(before[0] / 16, rel=1e-5) and all(o.trial.lr <= before[0] for o in moved)
    else:
        assert after[3] == pytest.approx(before[3] * 16, rel=1e-5) and all(o.trial.bsz >= before[3] * 0.99
                                                                          for o in moved)
    history = [o for r in rounds for o in r]
    final = cell_box(study, CELL, history)
    assert final[0] < lr_opt < final[1] and final[2] < bsz_opt < final[3]  # the optimum is inside now
    best = min((o for o in history if o.loss is not None), key=lambda o: o.loss).trial
    assert abs(math.log(best.lr / lr_opt)) < 1.0  # and the sweep found it


def test_moves_stop_at_the_limit_and_zero_moves_keep_the_box():
    far = bowl(1.0, 8192)  # 1000x the prior LR: more moves than allowed would be needed
    limited = run_cell(StudyConfig(name="s", trials=16, adaptive_trials=2, sampler="tpe", max_moves=2), far)
    assert [r[0].trial.phase for r in limited] == ["qmc", "move", "move", "adaptive"]
    still = run_cell(StudyConfig(name="s", trials=8, adaptive_trials=2, sampler="tpe", max_moves=0), far)
    assert {o.trial.box for r in still for o in r} == {still[0][0].trial.box}


@pytest.mark.parametrize("sampler", ["gp", "tpe"])
def test_proposals_depend_only_on_seed_and_history(sampler):
    study = StudyConfig(name="s", trials=6, adaptive_trials=4, adaptive_batch=2, sampler=sampler, max_moves=1)
    rounds = run_cell(study, bowl(1e-2, 8192))
    history = [o for r in rounds for o in r]
    # A sweep that crashed after any round proposes, from the same history, exactly the same next trials.
    done = 0
    for r in rounds:
        assert next_trials(study, CELL, history[:done]) == [o.trial for o in r]
        done += len(r)
    assert next_trials(study, CELL, history) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(phases=[]), "give phase 1 'qmc'"),
        (dict(phases=["adaptive"]), "give phase 1 'qmc'"),
        (dict(phases=["qmc", "bayes"]), "'phases' is \\['qmc', 'bayes'\\]"),
        (dict(adaptive_trials=0), "'adaptive_trials' is 0; phase 'adaptive' needs at least one trial"),
        (dict(phases=["qmc"], adaptive_trials=-1), "'adaptive_trials' is -1"),
        (dict(trials=-2), "'trials' is -2"),
        (dict(sampler="cmaes"), "'sampler' is 'cmaes'; phase 2's Optuna sampler is one of \\('gp', 'tpe'\\)"),
        (dict(max_moves=-1), "'max_moves' is -1"),
        (dict(move_trials=0), "'move_trials' is 0"),
        (dict(adaptive_batch=0), "'adaptive_batch' is 0"),
    ],
)
def test_bad_phases_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig(name="bad", **fields)


def test_a_study_whose_phases_changed_is_refused_by_its_ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.bind(StudyConfig(name="s"))
    ledger.bind(StudyConfig(name="s", trials=12, adaptive_trials=20))  # more trials per phase: the same study
    for changed in (dict(phases=["qmc"]), dict(sampler="gp"), dict(max_moves=0), dict(move_trials=2)):
        with pytest.raises(ValueError, match="different config of study 's'"):
            ledger.bind(StudyConfig(name="s", **changed))


def test_the_dashboard_storage_holds_every_settled_trial_with_its_loss(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    box = (1e-4, 1e-2, 1024.0, 65536.0)
    trials = [Trial("aunet2", budget, i, 10 ** (-3 - 0.1 * i), 2048 * (i + 1), phase, box)
              for budget in (1e11, 3e11) for i, phase in enumerate(["qmc", "qmc", "move", "adaptive"])]
    ledger.add(trials)
    for n, trial in enumerate(trials):
        if n == 3:
            ledger.mark(trial.key, "diverged", record={"status": "diverged", "loss": None, "bpb": None})
        else:
            ledger.mark(trial.key, "finished", record={"status": "finished", "loss": 1.0 + n / 10, "bpb": 1.5})
    storage = tmp_path / "optuna.db"
    mirror_to_optuna(ledger.rows(), storage, "s")
    mirror_to_optuna(ledger.rows(), storage, "s")  # again: nothing is added twice
    rows = {r.key: r for r in ledger.rows()}
    for budget in (1e11, 3e11):
        study = optuna.load_study(study_name=cell_study_name("s", "aunet2", budget), storage=f"sqlite:///{storage}")
        found = {t.user_attrs["key"]: t for t in study.get_trials()}
        assert set(found) == {k for k, r in rows.items() if r.budget == budget}
        for key, trial in found.items():
            row = rows[key]
            assert trial.user_attrs["phase"] == row.phase and trial.params == {"lr": row.lr, "bsz": row.bsz}
            if row.status == "finished":
                assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == row.loss
            else:
                assert trial.state == optuna.trial.TrialState.FAIL


# A study small enough for seconds per trial, with all three stages (a 10x-too-small LR prior forces a move).
ADAPTIVE_STUDY = ["sweep.families=[aunet2]", "sweep.budgets=[2e10]", "sweep.ratio=0.005", "sweep.trials=3", "sweep.force=true",
                  "sweep.phases=[qmc,adaptive]", "sweep.adaptive_trials=2", "sweep.adaptive_batch=1",
                  "sweep.max_moves=1", "sweep.move_trials=1", "sweep.sampler=gp", "data.valid_bytes=65536",
                  "eval_bytes=4096", "tracking=off"]


def sweep_command(sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "sweep.py", "-m", *ADAPTIVE_STUDY, f"hydra.sweep.dir={sweep_dir}", *overrides]


def saved_study(sweep_dir: Path) -> tuple[StudyConfig, list[CellPrior]]:
    """The study and its cells exactly as the sweeper built them, from the config it saved."""
    config = OmegaConf.load(sweep_dir / "multirun.yaml")
    study = StudyConfig(**OmegaConf.to_container(config.sweep, resolve=True))
    return study, [cell.start for cell in study_cells(study, config.data).values()]


def check_proposals_follow_from_history(sweep_dir: Path) -> list:
    """Every trial in the ledger is what the proposer gives for the trials before it, and the mirror has them."""
    study, (cell,) = saved_study(sweep_dir)
    rows = Ledger(sweep_dir / "ledger.sqlite").rows()
    done = 0
    while done < len(rows):
        proposed = next_trials(study, cell, rows[:done])
        assert proposed and [(t.key, t.lr, t.bsz, t.phase, t.box) for t in proposed] == [
            (r.key, r.lr, r.bsz, r.phase, r.box) for r in rows[done:done + len(proposed)]]
        done += len(proposed)
    assert next_trials(study, cell, rows) == []
    mirrored = optuna.load_study(study_name=cell_study_name(study.name, cell.family, cell.budget),
                                 storage=f"sqlite:///{sweep_dir / 'optuna.db'}").get_trials()
    finished = {r.key: r.loss for r in rows if r.status == "finished"}
    assert finished and {t.user_attrs["key"]: t.value for t in mirrored if t.value is not None} == finished
    return rows


@pytest.mark.slow
def test_a_killed_adaptive_sweep_resumes_every_phase_exactly(tmp_path):
    sweep_dir = tmp_path / "study"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = sweep_command(sweep_dir, "sweep.name=resume")
    # Kill the sweep once phase 2 has started (its first adaptive trial is in the ledger).
    sweep = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and sweep.poll() is None:
        if (sweep_dir / "ledger.sqlite").exists() and any(
                r.phase == "adaptive" for r in Ledger(sweep_dir / "ledger.sqlite").rows()):
            break
        time.sleep(0.2)
    assert sweep.poll() is None, "the sweep ended before phase 2 started"
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    killed = Ledger(sweep_dir / "ledger.sqlite").rows()
    assert killed[-1].phase == "adaptive" and killed[-1].status in ("pending", "running")
    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "optuna-dashboard sqlite:///" in resumed.stdout
    rows = check_proposals_follow_from_history(sweep_dir)
    assert [r.phase for r in rows].count("adaptive") == 2
    assert [r.phase for r in rows][:3] == ["qmc"] * 3 and [r.phase for r in rows].count("move") <= 1
    assert [(r.key, r.lr, r.bsz) for r in rows[:len(killed)]] == [(r.key, r.lr, r.bsz) for r in killed]
    assert all(r.status in ("finished", "diverged") for r in rows)


def test_a_sweep_with_bad_phases_is_refused_before_anything_is_submitted(tmp_path):
    proc = subprocess.run(sweep_command(tmp_path / "s", "sweep.name=bad", "sweep.sampler=bayes"), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "'sampler' is 'bayes'" in proc.stderr
    assert not (tmp_path / "s" / "ledger.sqlite").exists()
    proc = subprocess.run(sweep_command(tmp_path / "s", "sweep.name=bad", "lr_box=[1,2]"), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "lr_box is set by the study for each trial" in proc.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_the_slurm_path_runs_phase_2_too(tmp_path, slurm_cluster):
    sweep_dir = tmp_path / "slurm"
    cmd = sweep_command(sweep_dir, "sweep.name=slurm2", "sweep.trials=2", "sweep.adaptive_trials=1",
                        "sweep.max_moves=0", *slurm_cluster.launcher("hydra.launcher.mem_gb=2"))
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **slurm_cluster.env}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = check_proposals_follow_from_history(sweep_dir)
    assert [r.phase for r in rows] == ["qmc", "qmc", "adaptive"]
    assert rows[-1].status == "finished" and rows[-1].record["lr"] == rows[-1].lr
    jobs = {path.name.split("_")[0] for path in (sweep_dir / ".submitit").iterdir() if path.is_dir()}
    assert len(jobs) == 2, jobs  # two SLURM submissions: phase 1's array of two, then phase 2's trial


def test_the_held_out_cell_gets_one_run_where_the_laws_below_it_predict():
    from analysis.fits import analyse
    from analysis.holdout import predict_optimum
    from analysis.synthetic import SweepDesign, default_truth, synthetic_sweep
    from aunet.record import RunRecord
    from sweeps.ledger import Row
    from sweeps.sweeper import predicted_trial

    budgets = (1e18, 3e18, 1e19, 3e19, 1e20)
    table = synthetic_sweep("aunet2", design=SweepDesign(budgets=budgets, trials=12, fail_rate=0.0), seed=1)
    rows = []
    for i, run in table.iterrows():  # the runs as the ledger holds them: a record per trial
        record = RunRecord(status=run["status"], family="aunet2", budget=run["budget"], lr=run["lr"], bsz=run["bsz"],
                           trial=i, loss=run["loss"], bpb=run["bpb"], lr_box=(run["lr_min"], run["lr_max"]),
                           bsz_box=(run["bsz_min"], run["bsz_max"]))
        rows.append(Row(f"aunet2/C{run['budget']:.4g}/t{i}", "aunet2", run["budget"], i, run["lr"], int(run["bsz"]),
                        run["status"], 1, run["loss"], run["bpb"], "", record.to_dict(), ""))
    study = StudyConfig(name="s", budgets=list(budgets), holdout=1e20)
    held = CellPrior("aunet2", 1e20, lr=1e-3, bsz=1e6, seq_len=1024)
    (trial,) = predicted_trial(study, held, rows, predict_optimum)
    law = analyse(table[table["budget"] < 1e20], families=["aunet2"], n_boot=200).law("aunet2")
    assert trial.phase == "predicted" and trial.index == 12 and trial.budget == 1e20
    assert trial.lr == pytest.approx(law.lr.predict(1e20)[0][0], rel=1e-3)
    assert abs(trial.bsz - law.bsz.predict(1e20)[0][0]) <= 1024 and trial.bsz % 1024 == 0
    truth = default_truth("aunet2").laws
    assert trial.lr == pytest.approx(truth.lr(1e20), rel=0.3) and trial.bsz == pytest.approx(truth.bsz(1e20), rel=0.3)
    assert predicted_trial(study, held, [r for r in rows if r.budget >= 1e19], predict_optimum) == []  # no law


@pytest.mark.parametrize(("holdout", "message"), [(5e19, "must be one of the budgets"),
                                                  (1e19, "at least 3 budgets below")])
def test_a_holdout_outside_the_study_or_without_budgets_below_is_refused(holdout, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig(name="s", budgets=[1e18, 3e18, 1e19, 3e19], holdout=holdout)


@pytest.mark.slow
def test_seed_reruns_and_the_run_at_the_prediction_side_by_side(tmp_path):
    """A real study through submitit's local launcher, two single-thread trials at a time: every cell's
    best configuration is rerun with seed 1, and the held-out cell gets one run where the laws fitted
    below it point, which `python -m analysis validate` then compares with the cell's other runs."""
    sweep_dir = tmp_path / "study"
    cmd = [sys.executable, "sweep.py", "-m", "sweep.families=[aunet2]", "sweep.budgets=[2e9,4e9,8e9,1.6e10]",
           "sweep.holdout=1.6e10", "sweep.ratio=0.0005", "sweep.force=true", "sweep.trials=4", "sweep.phases=[qmc]",
           "sweep.max_moves=0", "sweep.seeds=2", "sweep.batch_size=2", "threads=1", "data.valid_bytes=65536",
           "eval_bytes=2048", "eval=none", "tracking=off", "sweep.name=predict", f"hydra.sweep.dir={sweep_dir}",
           "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=30"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = Ledger(sweep_dir / "ledger.sqlite").rows()
    assert all(r.status in ("finished", "diverged") for r in rows)
    for budget in (2e9, 4e9, 8e9, 1.6e10):
        cell = [r for r in rows if r.budget == budget]
        searched = [r for r in cell if r.phase == "qmc" and r.status == "finished"]
        (rerun,) = [r for r in cell if r.phase == "seed"]
        best = min(searched, key=lambda r: r.loss)
        assert (rerun.lr, rerun.bsz, rerun.seed, rerun.record["seed"]) == (best.lr, best.bsz, 1, 1)
        assert rerun.record["loss"] != best.loss  # another seed: another model and data order
    (predicted,) = [r for r in rows if r.phase == "predicted"]
    assert predicted.budget == 1.6e10 and predicted.index == 5 and predicted.record["lr"] == predicted.lr
    validate = subprocess.run([sys.executable, "-m", "analysis", "validate", str(sweep_dir / "results.csv"),
                               "--holdout", "1.6e10", "--bootstrap", "100"], cwd=REPO, capture_output=True, text=True)
    assert validate.returncode == 0, validate.stderr[-2000:]
    assert f"run at the predicted hyperparameters: loss {predicted.bpb:.4g}" in validate.stdout  # in bits per byte
