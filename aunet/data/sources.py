"""Corpus files: resolve what the user points at, check each file is what it claims, stream documents.

A document is a ``bytes`` object of valid UTF-8 (so byte and BPE models see exactly the
same bytes). Formats, chosen by extension and checked against the content:

* ``.txt``: one document per file (files above ``max_doc_bytes`` are cut at paragraph
  breaks, so one huge file does not have to fit in memory at once). Invalid UTF-8 is
  replaced by U+FFFD.
* ``.jsonl`` / ``.jsonl.zst`` (also ``.jsonl.zstd``): one JSON object per line with a
  text field (``text`` by default), as DCLM ships. Read as a stream.
* ``.parquet``: a string column (``text`` by default), read in batches of rows.

Every reader can start at a *ref*, a position inside the file (a byte offset of the
decompressed stream, or a row index for Parquet), and yields ``(document, next_ref)``,
so a loader can resume mid-file without re-reading what came before (``.zst`` streams
still have to be decompressed up to the offset).
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".jsonl.zst": "jsonl.zst", ".jsonl.zstd": "jsonl.zst",
           ".parquet": "parquet"}
SUPPORTED = ".txt, .jsonl, .jsonl.zst, .parquet"

log = logging.getLogger(__name__)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"

_READ_CHUNK = 1 << 20
#: Above this share of invalid UTF-8 (each invalid byte becomes U+FFFD), a .txt file is probably not text.
REPLACEMENT_WARN_SHARE = 0.01
_PARQUET_BATCH_ROWS = 512


@dataclass(frozen=True)
class SourceFile:
    """One corpus file: absolute path, format, and its size and mtime (for fingerprints)."""

    path: str
    fmt: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> SourceFile:
        p = Path(path).resolve()
        fmt = format_of(p)
        if fmt is None:
            raise ValueError(f"data file {p}: unsupported extension; supported are {SUPPORTED}")
        st = p.stat()
        return cls(str(p), fmt, st.st_size, st.st_mtime_ns)


def format_of(path: str | Path) -> str | None:
    name = Path(path).name.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return FORMATS[ext]
    return None


def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def resolve_sources(sources: list[str]) -> list[SourceFile]:
    """Expand paths, directories (recursively) and globs into a sorted list of corpus files.

    Raises ValueError for a path that does not exist, a glob that matches nothing, a
    directory without corpus files, or a named file with an unsupported extension.
    """
    if not sources:
        raise ValueError("no data sources given; name files, directories or globs (or 'default')")
    found: dict[str, SourceFile] = {}
    for entry in sources:
        spec = os.path.expanduser(entry)
        if _has_glob(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            files = [m for m in matches if os.path.isfile(m) and format_of(m) is not None]
            dirs = [m for m in matches if os.path.isdir(m)]
            for d in dirs:
                files.extend(_walk(Path(d)))
            if not files:
                what = f"matches {len(matches)} path(s) but none is a {SUPPORTED} file" if matches else "matches nothing"
                raise ValueError(f"data source {entry!r}: the glob {what}")
        elif os.path.isdir(spec):
            files = _walk(Path(spec))
            if not files:
                raise ValueError(f"data source {entry!r}: the directory holds no {SUPPORTED} files")
        elif os.path.isfile(spec):
            if format_of(spec) is None:
                raise ValueError(f"data source {entry!r}: unsupported file type; supported are {SUPPORTED}")
            files = [spec]
        else:
            raise ValueError(f"data source {entry!r}: the path does not exist")
        for f in files:
            sf = SourceFile.of(f)
            found[sf.path] = sf
    return [found[k] for k in sorted(found)]


def _walk(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and format_of(name) is not None:
                out.append(os.path.join(dirpath, name))
    return out


# ---------------------------------------------------------------------------- sniffing
def sniff(sf: SourceFile, text_field: str = "text") -> None:
    """Check cheaply that a file is what its extension says. Raises ValueError naming it."""
    if sf.size == 0:
        return
    with open(sf.path, "rb") as fh:
        head = fh.read(1 << 16)
    name = sf.path
    if sf.fmt == "txt":
        kind = _binary_kind(head)
        if kind:
            raise ValueError(f"data file {name}: named .txt but the content is {kind}; expected plain text")
        decoded = head.decode("utf-8", errors="replace")
        share = decoded.count("\ufffd") / len(head)
        if share > REPLACEMENT_WARN_SHARE:
            log.warning("data file %s: %.0f%% of its first %d bytes are invalid UTF-8 (each becomes U+FFFD); "
                        "is it text in another encoding (convert it to UTF-8), or not text at all?",
                        name, 100 * share, len(head))
    elif sf.fmt == "jsonl":
        kind = _binary_kind(head)
        if kind:
            raise ValueError(f"data file {name}: named .jsonl but the content is {kind}; expected JSON lines "
                             f"(one object with a {text_field!r} field per line)")
        _check_first_line(sf, text_field)
    elif sf.fmt == "jsonl.zst":
        if not head.startswith(ZSTD_MAGIC):
            raise ValueError(f"data file {name}: named .zst but it is not a zstd stream (wrong magic bytes); "
                             "expected zstd-compressed JSON lines")
        _check_first_line(sf, text_field)
    elif sf.fmt == "parquet":
        _check_parquet(sf, text_field)


def _binary_kind(head: bytes) -> str | None:
    if head.startswith(ZSTD_MAGIC):
        return "zstd-compressed data"
    if head.startswith(GZIP_MAGIC):
        return "gzip-compressed data"
    if head.startswith(PARQUET_MAGIC):
        return "a Parquet file"
    if b"\x00" in head:
        return "binary data (NUL bytes)"
    return None


def _check_first_line(sf: SourceFile, text_field: str) -> None:
    for _doc, _ref in _iter_jsonl(sf, 0, text_field, limit_lines=1):
        return


def _check_parquet(sf: SourceFile, text_field: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(sf.path, "rb") as fh:
        head = fh.read(4)
        fh.seek(max(0, sf.size - 4))
        tail = fh.read(4)
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise ValueError(f"data file {sf.path}: named .parquet but it is not a Parquet file (no PAR1 magic)")
    try:
        schema = pq.ParquetFile(sf.path).schema_arrow
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise ValueError(f"data file {sf.path}: the Parquet footer does not parse ({err})") from err
    if text_field not in schema.names:
        raise ValueError(f"data file {sf.path}: the Parquet file has no {text_field!r} column "
                         f"(columns: {schema.names}); expected a string column {text_field!r}")
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ValueError(f"data file {sf.path}: column {text_field!r} has type {kind}; expected strings")


# ---------------------------------------------------------------------------- reading
def iter_docs(sf: SourceFile, start: int = 0, text_field: str = "text",
              max_doc_bytes: int = 2**20) -> Iterator[tuple[bytes, int]]:
    """Documents of one file from position ``start``, as ``(utf8_bytes, next_ref)``.

    Empty and whitespace-only documents are skipped (their position still advances).
    """
    if sf.fmt == "txt":
        yield from _iter_txt(sf, start, max_doc_bytes)
    elif sf.fmt in ("jsonl", "jsonl.zst"):
        yield from _iter_jsonl(sf, start, text_field)
    elif sf.fmt == "parquet":
        yield from _iter_parquet(sf, start, text_field)
    else:  # pragma: no cover - SourceFile.of rejects unknown formats
        raise ValueError(f"data file {sf.path}: unknown format {sf.fmt!r}")


def _clean(raw: bytes) -> bytes | None:
    """Valid UTF-8 (invalid sequences replaced), or None for an empty / blank document."""
    if not raw.strip():
        return None
    try:
        raw.decode("utf-8")
        return raw
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace").encode("utf-8")


def _iter_txt(sf: SourceFile, start: int, max_doc_bytes: int) -> Iterator[tuple[bytes, int]]:
    with open(sf.path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if start == 0 and size <= max_doc_bytes:
            doc = _clean(fh.read())
            if doc is not None:
                yield doc, size
            return
        fh.seek(start)
        pos = start
        while pos < size:
            window = fh.read(max_doc_bytes)
            if not window:
                break
            cut = len(window)
            if pos + len(window) < size:
                cut = _cut_point(window)
            piece = window[:cut]
            pos += cut
            fh.seek(pos)
            doc = _clean(piece)
            if doc is not None:
                yield doc, pos


def _cut_point(window: bytes) -> int:
    """Where to end a piece of an oversized .txt: after a paragraph break, else a line, else a char."""
    half = len(window) // 2
    for sep in (b"\n\n", b"\n"):
        i = window.rfind(sep, half)
        if i >= 0:
            return i + len(sep)
    cut = len(window)
    while cut > half and (window[cut - 1] & 0xC0) == 0x80:  # do not split a UTF-8 character
        cut -= 1
    if cut > half and window[cut - 1] >= 0xC0:
        cut -= 1
    return cut


def _open_jsonl(sf: SourceFile):
    raw = open(sf.path, "rb")
    if sf.fmt == "jsonl":
        return raw, raw
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return io.BufferedReader(reader, buffer_size=_READ_CHUNK), raw


def _iter_jsonl(sf: SourceFile, start: int, text_field: str,
                limit_lines: int | None = None) -> Iterator[tuple[bytes, int]]:
    stream, raw = _open_jsonl(sf)
    try:
        pos = _skip(stream, raw, sf, start)
        lineno = parsed = 0
        while True:
            try:
                line = stream.readline()
            except zstandard.ZstdError as err:
                raise ValueError(f"data file {sf.path}: corrupt zstd stream near byte {pos} ({err})") from err
            if not line:
                return
            lineno += 1
            where = f"line {lineno}" if start == 0 else f"the line at byte {pos}"
            pos += len(line)
            if line.strip():
                parsed += 1
                doc = _parse_line(sf, line, text_field, where)
                if doc is not None:
                    yield doc, pos
                if limit_lines is not None and parsed >= limit_lines:
                    return
    finally:
        stream.close()
        raw.close()


def _skip(stream, raw, sf: SourceFile, start: int) -> int:
    if start <= 0:
        return 0
    if sf.fmt == "jsonl":
        raw.seek(start)
        return start
    left = start
    while left > 0:
        chunk = stream.read(min(left, _READ_CHUNK))
        if not chunk:
            raise ValueError(f"data file {sf.path}: ends before the saved position {start}; did the file change?")
        left -= len(chunk)
    return start


def _parse_line(sf: SourceFile, line: bytes, text_field: str, where: str) -> bytes | None:
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"data file {sf.path}: {where} is not JSON ({err.__class__.__name__}: {err}); "
                         f"expected JSON lines, one object with a {text_field!r} field per line") from None
    if not isinstance(obj, dict) or text_field not in obj:
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"data file {sf.path}: {where} has no {text_field!r} field (found {keys}); "
                         f"expected one JSON object with a {text_field!r} string per line")
    text = obj[text_field]
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"data file {sf.path}: {where}: field {text_field!r} is a {type(text).__name__}; "
                         "expected a string")
    if not text.strip():
        return None
    return text.encode("utf-8", errors="replace")


def _iter_parquet(sf: SourceFile, start: int, text_field: str) -> Iterator[tuple[bytes, int]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(sf.path)
    try:
        meta = pf.metadata
        row = 0
        first_group = meta.num_row_groups
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if row + n > start:
                first_group = g
                break
            row += n
        if first_group >= meta.num_row_groups:
            return
        groups = list(range(first_group, meta.num_row_groups))
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=groups, columns=[text_field]):
            for text in batch.column(0).to_pylist():
                row += 1
                if row <= start or text is None or not text.strip():
                    continue
                yield text.encode("utf-8", errors="replace"), row
    finally:
        pf.close()
