"""The one pinned-download helper: local files are used only with the pinned SHA-256; pip gets the right form."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from aunet.pinned import Pin, fetch_pinned, sha256_of


def _pin(filename: str, data: bytes) -> Pin:
    return Pin("somepkg", "1.0", filename, hashlib.sha256(data).hexdigest())


def _no_pip(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("asked the registry")

    monkeypatch.setattr(subprocess, "run", refuse)


def test_a_local_file_with_the_pinned_digest_is_used_in_place(tmp_path, monkeypatch):
    _no_pip(monkeypatch)
    data = b"pinned bytes" * 1000
    (tmp_path / "somepkg-1.0.tar.gz").write_bytes(data)
    pin = _pin("somepkg-1.0.tar.gz", data)
    assert sha256_of(tmp_path / "somepkg-1.0.tar.gz") == pin.sha256
    assert fetch_pinned([pin], tmp_path / "dest", tmp_path, what="x", offline_hint="") == [
        tmp_path / "somepkg-1.0.tar.gz"]
    (tmp_path / "somepkg-1.0.tar.gz").write_bytes(data[:-1])
    with pytest.raises(ValueError, match="checksum mismatch for somepkg-1.0.tar.gz: SHA-256 .* pinned"):
        fetch_pinned([pin], tmp_path / "dest", tmp_path, what="x", offline_hint="")


def test_offline_a_missing_file_is_refused_before_any_download(tmp_path, monkeypatch):
    _no_pip(monkeypatch)
    pin = _pin("somepkg-1.0-py3-none-any.whl", b"")
    with pytest.raises(FileNotFoundError, match="put somepkg-1.0-py3-none-any.whl \\(somepkg==1.0\\) there"):
        fetch_pinned([pin], tmp_path / "dest", tmp_path, download_missing=False, what="x", offline_hint="")


@pytest.mark.parametrize(("filename", "form"), [("somepkg-1.0-py3-none-any.whl", "--only-binary=:all:"),
                                                ("somepkg-1.0.tar.gz", ":all:")])
def test_pip_is_asked_for_a_wheel_or_an_sdist_and_its_failure_says_what_and_how(tmp_path, monkeypatch, filename, form):
    calls = []

    class Failed:
        returncode = 1
        stderr = "ERROR: No matching distribution found for somepkg==1.0"
        stdout = ""

    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: calls.append(cmd) or Failed())
    with pytest.raises(RuntimeError, match="(?s)could not download the test data \\(somepkg==1.0\\).*exit 1.*"
                                           "No matching distribution.*use --archives"):
        fetch_pinned([_pin(filename, b"")], tmp_path, what="the test data", offline_hint="use --archives",
                     log=lambda m: None)
    (cmd,) = calls
    assert cmd[cmd.index("download") + 1] == "--no-deps" and form in cmd and cmd[-1] == "somepkg==1.0"
    assert ("--no-binary" in cmd) == filename.endswith(".tar.gz")
