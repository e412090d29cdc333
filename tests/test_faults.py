"""Fault injection on tiny studies, as an operator would do it: kill the driver, start it twice,
kill one job, corrupt the ledger; locally (in-process and submitit_local) and on the local SLURM
cluster. After every fault and a rerun, every trial is finished exactly once (ledger rows, record
files, MLflow child runs and results.csv agree) and no trial trained twice (each job appends a
line to its trial's ``starts.jsonl`` when it starts).

Also: no outbound network connection during a tracked run (a guard on socket calls, loaded
into every Python process of the run through ``sitecustomize``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from aunet.tracking import RUN_ID_FILE
from sweeps.attempts import starts
from sweeps.ledger import Ledger

REPO = Path(__file__).resolve().parents[1]

# The tiniest study: two quasi-random trials (no box move, no phase 2) of 2 and 5 steps of the smallest AU-Net, no downstream tasks.
TINY = ["sweep.families=[aunet2]", "sweep.budgets=[2e9]", "sweep.trials=2", "sweep.phases=[qmc]", "sweep.max_moves=0",
        "sweep.force=true",
        "sweep.ratio=0.0005", "data.valid_bytes=65536", "eval_bytes=2048", "eval=none"]
KEYS = ["aunet2/C2e09/t0", "aunet2/C2e09/t1"]
LOCAL = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=30"]


def sweep_cmd(sweep_dir: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "sweep.py", "-m", *TINY, f"sweep.name={name}", f"hydra.sweep.dir={sweep_dir}", *extra]


def run(cmd: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def said(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def wait_until(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver ended before {what}:\n{proc.stdout.read()[-3000:]}")
        assert time.time() < deadline, f"timed out waiting until {what}"
        time.sleep(0.3)


#: Loaded into a driver through ``sitecustomize``: after its first optimizer step, trial k says so
#: (``reached-k`` in $AUNET_TEST_GATE) and waits until ``open-k`` exists. A fault is then injected while
#: a trial is known to be mid-training, whatever the machine's speed: no sleep decides the test.
STEP_GATE = '''
import importlib.abc, importlib.machinery, os, sys, time
from pathlib import Path


class _Gate(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "aunet.train":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            step = module.TrainState.train_step

            def gated(self):
                out = step(self)
                if self.step == 1:
                    gate, k = Path(os.environ["AUNET_TEST_GATE"]), self.cfg.trial
                    (gate / f"reached-{k}").touch()
                    while not (gate / f"open-{k}").exists():
                        time.sleep(0.05)
                return out

            module.TrainState.train_step = gated

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Gate())
'''


def step_gate(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The gate's folder and the environment that loads it into a driver (see ``STEP_GATE``)."""
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "sitecustomize.py").write_text(STEP_GATE)
    return gate, {"PYTHONPATH": f"{gate}{os.pathsep}{REPO}", "AUNET_TEST_GATE": str(gate)}


def n_starts(sweep_dir: Path, key: str) -> int:
    return len(starts(sweep_dir / key))


def kill_driver(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_each_trial_finished_once(sweep_dir: Path, retrained: tuple[str, ...] = ()) -> None:
    """Ledger, record files, MLflow child runs and results.csv agree that every trial finished once;
    each trial started once, but those in ``retrained`` (the fault killed their first start) twice."""
    rows = {r.key: r for r in Ledger(sweep_dir / "ledger.sqlite").rows()}
    assert sorted(rows) == KEYS
    assert {k: r.status for k, r in rows.items()} == dict.fromkeys(KEYS, "finished"), \
        {k: (r.status, r.error) for k, r in rows.items()}
    for key in KEYS:
        record = json.loads((sweep_dir / key / "record.json").read_text())
        assert record["status"] == "finished" and record["trial"] == rows[key].index
        assert n_starts(sweep_dir, key) == (2 if key in retrained else 1), (key, starts(sweep_dir / key))
        assert rows[key].attempts == n_starts(sweep_dir, key)
    table = pd.read_csv(sweep_dir / "results.csv")
    assert len(table) == len(KEYS) and set(table["status"]) == {"finished"}
    assert sorted(table["trial"]) == [0, 1]
    with sqlite3.connect(sweep_dir / "mlflow.db") as db:
        parents = db.execute("SELECT run_uuid, status FROM runs WHERE name LIKE 'study:%'").fetchall()
        children = db.execute(
            "SELECT runs.name, runs.status FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
            "WHERE tags.key = 'mlflow.parentRunId'").fetchall()
        tags = dict(db.execute("SELECT runs.name || ':' || tags.key, tags.value FROM runs JOIN tags "
                               "ON tags.run_uuid = runs.run_uuid WHERE tags.key IN ('family', 'trial')").fetchall())
    assert len(parents) == 1 and parents[0][1] == "FINISHED", parents
    # One finished child run per trial, named like its folder: a retried trial continues its own run.
    assert sorted(children) == [(key, "FINISHED") for key in KEYS], children
    assert tags[f"{KEYS[1]}:family"] == "aunet2" and tags[f"{KEYS[1]}:trial"] == "1"


@pytest.mark.slow
def test_driver_killed_mid_trial_then_rerun_retries_only_the_interrupted_trial(tmp_path):
    """In-process launcher: the trial running inside the driver dies with it. With one attempt
    allowed, the rerun leaves it failed and says how to retry; that command (as printed, and as
    ``sweeps status`` prints it too) keeps the finished trial, retries the interrupted one in its own
    MLflow run, and leaves nothing `running`."""
    sweep_dir = tmp_path / "kill"
    gate, env = step_gate(tmp_path)
    (gate / "open-0").touch()  # the first trial runs through; the second waits after its first step
    driver = start(sweep_cmd(sweep_dir, "kill", "sweep.max_attempts=1"), env)
    wait_until(lambda: (sweep_dir / KEYS[0] / "record.json").exists() and (gate / "reached-1").exists()
               and (sweep_dir / KEYS[1] / RUN_ID_FILE).exists(), "the second trial trains", driver)
    kill_driver(driver)
    rows = {r.key: r for r in Ledger(sweep_dir / "ledger.sqlite").rows()}
    assert rows[KEYS[1]].status == "running"
    (gate / "open-1").touch()
    rerun = run(sweep_cmd(sweep_dir, "kill", "sweep.max_attempts=1"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "2 trials, 0 to run" in said(rerun)
    assert Ledger(sweep_dir / "ledger.sqlite").rows()[1].status == "failed"
    status = run([sys.executable, "-m", "sweeps", "status", str(sweep_dir)])
    retry = [line for line in status.stdout.splitlines() if line.startswith("To retry them")]
    assert retry and retry[0] in rerun.stdout, status.stdout
    command = shlex.split(retry[0].split(": ", 1)[1])
    assert command[:3] == ["python", str(REPO / "sweep.py"), "-m"] and "sweep.max_attempts=2" in command
    elsewhere = tmp_path / "elsewhere"  # the printed command runs from any directory
    elsewhere.mkdir()
    again = subprocess.run([sys.executable, *command[1:]], cwd=elsewhere, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 trials, 1 to run" in said(again) and "To retry" not in said(again)
    assert_each_trial_finished_once(sweep_dir, retrained=(KEYS[1],))


@pytest.mark.slow
def test_sigterm_to_an_in_process_driver_stops_it_after_the_trial_checkpoints(tmp_path):
    """The signal an operator (or SLURM, for a driver run as a job) sends goes to the driver, which
    runs the trial in-process: the trial checkpoints and the driver stops instead of starting the
    next trial; the rerun resumes the checkpointed trial and runs the other."""
    sweep_dir = tmp_path / "term"
    # The first trial waits after its first step (its second trial has more, so a rerun resumes mid-trial):
    # the signal lands while it is known to be training, however fast the machine.
    longer = ["sweep.ratio=0.008"]
    gate, env = step_gate(tmp_path)
    driver = start(sweep_cmd(sweep_dir, "term", *longer), env)
    wait_until(lambda: (gate / "reached-0").exists(), "the first trial trains", driver)
    driver.send_signal(signal.SIGTERM)
    (gate / "open-0").touch()  # it finishes its step, sees the signal and checkpoints
    (gate / "open-1").touch()
    out, _ = driver.communicate(timeout=600)
    assert driver.returncode != 0 and "stopped by a signal during trial aunet2/C2e09/t0" in out, out[-3000:]
    rows = {r.key: r for r in Ledger(sweep_dir / "ledger.sqlite").rows()}
    assert rows[KEYS[0]].status == "preempted" and rows[KEYS[1]].status == "pending"
    assert n_starts(sweep_dir, KEYS[1]) == 0 and (sweep_dir / "results.csv").exists()
    rerun = run(sweep_cmd(sweep_dir, "term", *longer))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in (sweep_dir / KEYS[0] / "sweep.log").read_text()
    assert {r.status for r in Ledger(sweep_dir / "ledger.sqlite").rows()} == {"finished"}


@pytest.mark.slow
def test_second_driver_refused_then_corrupt_ledger_named_and_rebuilt(tmp_path):
    """Two drivers on one study: the second refuses in one line naming the first (host, PID, start
    time). Then the ledger is garbage: the rerun names it in one line; `rebuild` restores it from the
    record files and the rerun has nothing to run."""
    sweep_dir = tmp_path / "twice"
    first = start(sweep_cmd(sweep_dir, "twice"))
    wait_until(lambda: n_starts(sweep_dir, KEYS[0]) == 1, "the first driver started a trial", first)
    # Freeze the first driver (it keeps its lock) so that its tiny trials cannot end before the
    # second driver has tried: the refusal must not depend on timing.
    first.send_signal(signal.SIGSTOP)
    try:
        second = run(sweep_cmd(sweep_dir, "twice"))
    finally:
        first.send_signal(signal.SIGCONT)
    out, _ = first.communicate(timeout=900)
    assert first.returncode == 0, out[-3000:]
    assert second.returncode == 2
    message = second.stderr.strip().splitlines()
    assert len(message) == 1 and f"PID {first.pid} on host {os.uname().nodename} since" in message[0], message
    assert_each_trial_finished_once(sweep_dir)

    (sweep_dir / "ledger.sqlite").write_bytes(os.urandom(4096))
    broken = run(sweep_cmd(sweep_dir, "twice"))
    lines = broken.stderr.strip().splitlines()
    assert broken.returncode == 2 and len(lines) == 1, broken.stderr[-3000:]
    assert str(sweep_dir / "ledger.sqlite") in lines[0] and "python -m sweeps rebuild" in lines[0]
    rebuilt = run([sys.executable, "-m", "sweeps", "rebuild", str(sweep_dir)])
    assert rebuilt.returncode == 0 and "2 trials from their record files" in rebuilt.stdout, rebuilt.stderr
    assert "MLflow study run found again" in rebuilt.stdout
    rerun = run(sweep_cmd(sweep_dir, "twice"))
    assert rerun.returncode == 0 and "2 trials, 0 to run" in said(rerun), rerun.stderr[-3000:]
    assert_each_trial_finished_once(sweep_dir)


@pytest.mark.slow
def test_submitit_local_orphans_are_adopted_and_one_killed_job_fails_alone(tmp_path):
    """submitit_local: (1) the driver is killed while both jobs train; they go on, and the rerun waits
    for them instead of launching them again. (2) In a second study one job is killed: the other
    finishes and is recorded finished; only the killed one is trained again (in the driver's next round)."""
    sweep_dir = tmp_path / "orphans"
    driver = start(sweep_cmd(sweep_dir, "orphans", *LOCAL))
    wait_until(lambda: all(n_starts(sweep_dir, k) == 1 for k in KEYS), "both jobs started", driver)
    kill_driver(driver)
    assert all(r.status == "running" and r.job.startswith("local:")
               for r in Ledger(sweep_dir / "ledger.sqlite").rows())
    rerun = run(sweep_cmd(sweep_dir, "orphans", *LOCAL))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "2 trials, 0 to run" in said(rerun)  # waited for (or found finished), never launched again
    assert_each_trial_finished_once(sweep_dir)

    sweep_dir = tmp_path / "onejob"
    driver = start(sweep_cmd(sweep_dir, "onejob", *LOCAL))
    wait_until(lambda: all(n_starts(sweep_dir, k) == 1 for k in KEYS), "both jobs started", driver)
    os.kill(starts(sweep_dir / KEYS[1])[0]["pid"], signal.SIGKILL)  # the longer trial's training process
    out, _ = driver.communicate(timeout=900)
    assert driver.returncode == 0, out[-3000:]
    rows = {r.key: r for r in Ledger(sweep_dir / "ledger.sqlite").rows()}
    assert rows[KEYS[0]].status == "finished", rows[KEYS[0]].error
    # The killed trial failed alone, and the driver's next round retried it (its second attempt).
    assert rows[KEYS[1]].status == "finished" and rows[KEYS[1]].attempts == 2, rows[KEYS[1]].error
    assert "overhead per trial: " in out and "overhead per trial: -" not in out
    rerun = run(sweep_cmd(sweep_dir, "onejob", *LOCAL))
    assert rerun.returncode == 0 and "2 trials, 0 to run" in said(rerun), rerun.stderr[-3000:]
    assert_each_trial_finished_once(sweep_dir, retrained=(KEYS[1],))


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_orphans_are_adopted_and_one_cancelled_job_fails_alone(tmp_path, slurm_cluster):
    """The same two faults on SLURM: the driver killed while the job array runs, then one array task
    cancelled (scancel) while the other trains."""
    slurm = slurm_cluster.launcher("hydra.launcher.mem_gb=2")
    sweep_dir = tmp_path / "slurm_orphans"
    driver = start(sweep_cmd(sweep_dir, "slurm_orphans", *slurm), env=slurm_cluster.env)
    wait_until(lambda: n_starts(sweep_dir, KEYS[0]) == 1 or n_starts(sweep_dir, KEYS[1]) == 1,
               "a job started", driver)
    kill_driver(driver)
    rerun = run(sweep_cmd(sweep_dir, "slurm_orphans", *slurm), env=slurm_cluster.env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "2 trials, 0 to run" in said(rerun)  # waited for (or found finished), never launched again
    assert_each_trial_finished_once(sweep_dir)

    sweep_dir = tmp_path / "slurm_onejob"
    longer = ["sweep.ratio=0.002"]  # trials long enough that the cancel lands while the second one trains
    driver = start(sweep_cmd(sweep_dir, "slurm_onejob", *slurm, *longer), env=slurm_cluster.env)
    log = sweep_dir / KEYS[1] / "sweep.log"
    wait_until(lambda: n_starts(sweep_dir, KEYS[1]) == 1 and log.exists() and "step " in log.read_text(),
               "the second job trains", driver)
    job_id = starts(sweep_dir / KEYS[1])[0]["job"].removeprefix("slurm:")
    subprocess.run(["scancel", job_id], check=True, env={**os.environ, **slurm_cluster.env})
    out, _ = driver.communicate(timeout=900)
    assert driver.returncode == 0, out[-3000:]
    rows = {r.key: r for r in Ledger(sweep_dir / "ledger.sqlite").rows()}
    assert rows[KEYS[0]].status == "finished", rows[KEYS[0]].error
    # The cancelled trial failed alone, and the driver's next round retried it (its second attempt).
    assert rows[KEYS[1]].status == "finished" and rows[KEYS[1]].attempts == 2, rows[KEYS[1]].error
    rerun = run(sweep_cmd(sweep_dir, "slurm_onejob", *slurm, *longer), env=slurm_cluster.env)
    assert rerun.returncode == 0 and "2 trials, 0 to run" in said(rerun), rerun.stderr[-3000:]
    assert_each_trial_finished_once(sweep_dir, retrained=(KEYS[1],))


NETWORK_GUARD = '''
import ipaddress, json, os, socket, threading
_lock = threading.Lock()
def _local(host):
    if host in (None, "", "localhost") or str(host).endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False
def _refuse(kind, target):
    with _lock, open(os.environ["NETWORK_GUARD_LOG"], "a") as log:
        log.write(json.dumps({"kind": kind, "target": repr(target), "pid": os.getpid()}) + "\\n")
    raise OSError(f"network guard: outbound {kind} to {target!r} refused")
_getaddrinfo, _connect, _connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex
def getaddrinfo(host, *args, **kwargs):
    if not _local(host):
        _refuse("getaddrinfo", host)
    return _getaddrinfo(host, *args, **kwargs)
def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse("connect", address)
def connect(self, address):
    _check(self, address)
    return _connect(self, address)
def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)
socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex = getaddrinfo, connect, connect_ex
'''
#: Variables under which MLflow keeps quiet by itself (pytest's, CI's): removed, so that only the toolkit's
#: own switch can keep a run off the network.
QUIETING = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


@pytest.mark.slow
def test_a_tracked_study_makes_no_outbound_connection(tmp_path):
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if k not in QUIETING}
    env.update(PYTHONPATH=f"{guard}{os.pathsep}{REPO}", NETWORK_GUARD_LOG=str(log))
    # The guard works: any non-loopback lookup is caught (in a process started the same way).
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.getaddrinfo('example.org', 443)"],
                           env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "example.org" in log.read_text()
    log.unlink()
    # A tracked study: the driver makes the study's MLflow run, the trial its child run.
    sweep_dir = tmp_path / "quiet"
    proc = subprocess.run(sweep_cmd(sweep_dir, "quiet", "sweep.trials=1"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = Ledger(sweep_dir / "ledger.sqlite").rows()
    assert row.status == "finished"
    with sqlite3.connect(sweep_dir / "mlflow.db") as db:
        assert db.execute("SELECT count(*) FROM runs WHERE status='FINISHED'").fetchone()[0] == 2
    assert not log.exists(), log.read_text()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MB file system (tmpfs), so that writes fail with ENOSPC as on a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    assert done.returncode == 0, f"a full-disk test needs root to mount a tmpfs: {done.stderr}"
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_says_so_and_keeps_the_last_checkpoint(tiny_disk):
    import torch

    from aunet import checkpoint

    checkpoint.save(tiny_disk / "checkpoint.pt", {"fingerprint": "f", "model": torch.ones(64 * 1024)})  # 256 KB
    with pytest.raises(OSError, match="no space left on device writing .*model.pt; free space"):
        checkpoint.save(tiny_disk / "model.pt", {"fingerprint": "f", "model": torch.ones(1024 * 1024)})  # 4 MB
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["checkpoint.pt"]  # no half-written file left
    assert torch.equal(checkpoint.load(tiny_disk / "checkpoint.pt", "f")["model"], torch.ones(64 * 1024))


def test_a_corpus_that_is_mostly_not_utf8_warns(tmp_path, caplog):
    from aunet.data.sources import SourceFile, sniff

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Déjà vu à l'été, très français. ".encode("latin-1") * 200)
    clean = tmp_path / "clean.txt"
    clean.write_text("Déjà vu à l'été, très français. " * 200)
    sniff(SourceFile.of(clean))
    assert "invalid UTF-8" not in caplog.text
    sniff(SourceFile.of(latin1))
    assert f"data file {latin1}: 22% of its first 6400 bytes are invalid UTF-8" in caplog.text


def test_a_sweep_config_error_is_one_line_unless_a_full_error_is_asked_for(tmp_path):
    refused = run(sweep_cmd(tmp_path / "bad", "bad", "sweep.budgets=[1e3]"))
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert refused.stderr.startswith("error: study 'bad': budget 1e+03 FLOPs is too small")
    full = run(sweep_cmd(tmp_path / "bad", "bad", "sweep.budgets=[1e3]"), env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr
