"""The `slurm_cluster` fixture: a real single-node SLURM cluster (scripts/slurm_cluster.sh) for the session.

The fixture brings the cluster up once per session, puts its client environment (SLURM_CONF) into
os.environ so that submitit's sbatch/sacct calls (and the jobs, which inherit the environment) reach it,
and takes it down at the end of the session, even when tests fail.

Sharing: several pytest sessions (other engineers in the same checkout) may use the same state directory
at once. Each session registers itself under the state directory; the last one to finish takes the cluster
down, and only if a fixture brought it up (a cluster you started by hand stays up).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aunet.atomic import file_lock

REPO = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
DAEMON_MARK = "AUNET_SLURM_CLUSTER_DAEMON_OF"
DAEMON_NAMES = {"munged", "mariadbd", "mysqld", "slurmdbd", "slurmctld", "slurmd", "slurmstepd"}


def slurm_unsupported_reason() -> str | None:
    """Why this platform cannot run the local SLURM cluster at all, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"a local SLURM cluster needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (apt-get install, daemons as root, munge and mysql)"
    missing = [tool for tool in ("bash", "dpkg-query", "apt-get") if shutil.which(tool) is None]
    if missing:
        return f"a local SLURM cluster needs a Debian-like system with {', '.join(missing)}"
    return None


def slurm_cluster_processes(state_dir: Path | str) -> list[str]:
    """Live (non-zombie) SLURM/munge/MariaDB processes that belong to the cluster in `state_dir`.

    A process belongs to it if its environment carries the script's mark for that directory or its
    command line names the directory.
    """
    state_dir = str(Path(state_dir))
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            status = (proc / "status").read_text()
            name = status.split("\n", 1)[0].split(":", 1)[1].strip()
            state = next(line for line in status.splitlines() if line.startswith("State:"))
            if "Z" in state.split()[1] or name not in DAEMON_NAMES:
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, StopIteration, IndexError):
            continue
        # The directory as a whole path component: /tmp/aunet-slurm is not /tmp/aunet-slurm-threads.
        if f"{DAEMON_MARK}={state_dir}".encode() in environ or re.search(rf"{re.escape(state_dir)}(/|\s|$)", cmdline):
            found.append(f"{proc.name} {name}: {cmdline.strip()}")
    return found


def run_slurm_script(command: str, env: dict[str, str] | None = None, timeout: float = 900):
    """Runs `scripts/slurm_cluster.sh COMMAND` and returns the CompletedProcess (never raises on rc)."""
    return subprocess.run(
        ["bash", str(SLURM_SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class SlurmCluster:
    """What a test needs to reach the cluster. Its client environment is already in os.environ."""

    state_dir: Path
    env: dict[str, str]  # the client variables (SLURM_CONF)
    partition: str = "debug"  # default partition; "urgent" preempts jobs in "debug"

    @property
    def conf(self) -> Path:
        return Path(self.env["SLURM_CONF"])

    def launcher(self, *extra: str) -> list[str]:
        """Sweep overrides sending every trial to this cluster as a one-CPU job of 20 minutes at most."""
        return ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={self.partition}",
                "hydra.launcher.timeout_min=20", "hydra.launcher.cpus_per_task=1", *extra]

    # For tests of the script itself (e.g. a second cluster in another state directory).
    processes = staticmethod(slurm_cluster_processes)
    run_script = staticmethod(run_slurm_script)


def _live_users(users: Path) -> list[Path]:
    alive = []
    for entry in users.iterdir():
        try:
            os.kill(int(entry.name), 0)
            alive.append(entry)
        except (ValueError, ProcessLookupError):
            entry.unlink(missing_ok=True)
        except PermissionError:
            alive.append(entry)
    return alive


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    reason = slurm_unsupported_reason()
    if reason:
        pytest.skip(reason)
    state_dir = Path(os.environ.get("SLURM_CLUSTER_DIR", "/tmp/aunet-slurm")).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    lock, users, started_mark = state_dir / ".fixture.lock", state_dir / ".fixture-users", state_dir / ".fixture-started"
    users.mkdir(exist_ok=True)
    me = users / str(os.getpid())

    with file_lock(lock):
        was_up = run_slurm_script("status").returncode == 0
        up = run_slurm_script("up")
        if up.returncode != 0:
            pytest.fail(f"scripts/slurm_cluster.sh up failed (rc={up.returncode}):\n{up.stdout}\n{up.stderr}")
        if not was_up:
            started_mark.touch()
        me.touch()
        env_lines = run_slurm_script("env").stdout.splitlines()
    client_env = dict(line.removeprefix("export ").split("=", 1) for line in env_lines if "=" in line)
    saved = {key: os.environ.get(key) for key in client_env}
    os.environ.update(client_env)
    try:
        yield SlurmCluster(state_dir=state_dir, env=client_env)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _release(state_dir, lock, users, me, started_mark)


def _release(state_dir: Path, lock: Path, users: Path, me: Path, started_mark: Path) -> None:
    """Unregisters this session; the last session takes down a cluster that a fixture started."""
    with file_lock(lock):
        me.unlink(missing_ok=True)
        if _live_users(users) or not started_mark.exists():
            return  # another session still uses it, or someone started it by hand
        down = run_slurm_script("down")
        started_mark.unlink(missing_ok=True)
    leftovers = slurm_cluster_processes(state_dir)
    if down.returncode != 0 or leftovers:
        pytest.fail(
            f"scripts/slurm_cluster.sh down (rc={down.returncode}) left processes behind: {leftovers}\n"
            f"{down.stderr}"
        )
