"""The deterministic held-out split, and the one pass over the corpus that finds it.

Every document gets a key: a keyed BLAKE2b hash of its bytes (never Python's ``hash``).
The held-out split is the smallest set of documents, taken in increasing key order, whose
bytes reach ``valid_bytes``; only documents no longer than ``valid_bytes`` can be picked,
so the split overshoots the budget by less than one document. It depends only on the
documents' content and the budget: not on file order, the seed, the unit (bytes or BPE)
or the architecture. Identical copies of a held-out document are all held out, so the
training stream never contains held-out text.

The scan streams the corpus once, keeping only the current candidate set in memory, and
caches its result (counts, keys and the held-out documents) under
``<cache>/splits/<fingerprint>``; the fingerprint covers each file's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aunet.atomic import atomic_path, write_json_atomic
from aunet.data.sources import SourceFile, iter_docs, sniff

SPLIT_VERSION = 1
_PERSON = b"aunet-heldout-v1"


def doc_key(doc: bytes) -> bytes:
    """Stable 128-bit key of a document's bytes (decides the held-out split)."""
    return hashlib.blake2b(doc, digest_size=16, person=_PERSON).digest()


@dataclass
class CorpusInfo:
    """What the scan found. Byte counts are document bytes (EOS separators not included)."""

    fingerprint: str
    files: int
    documents: int
    bytes: int
    heldout_documents: int
    heldout_bytes: int
    train_documents: int
    train_bytes: int
    valid_bytes: int
    heldout_keys: list[str] = field(default_factory=list, repr=False)  # hex, in key order

    @property
    def key_set(self) -> frozenset[bytes]:
        return frozenset(bytes.fromhex(k) for k in self.heldout_keys)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("heldout_keys")
        return d


def fingerprint(files: list[SourceFile], valid_bytes: int, text_field: str, max_doc_bytes: int) -> str:
    payload = {
        "version": SPLIT_VERSION,
        "files": [[f.path, f.size, f.mtime_ns] for f in files],
        "valid_bytes": valid_bytes,
        "text_field": text_field,
        "max_doc_bytes": max_doc_bytes,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def scan_corpus(files: list[SourceFile], valid_bytes: int, cache_dir: str | Path, text_field: str = "text",
                max_doc_bytes: int = 2**20, progress: bool | None = None) -> tuple[CorpusInfo, list[bytes]]:
    """Count the corpus and pick the held-out documents (cached). Returns (info, held-out docs).

    Every file is sniffed before any is read, so a bad file fails fast; any bad line or
    row found later also raises ValueError, before anything is written to the cache.
    """
    fp = fingerprint(files, valid_bytes, text_field, max_doc_bytes)
    cached = _load(Path(cache_dir), fp)
    if cached is not None:
        return cached
    for sf in files:
        sniff(sf, text_field)
    picker = HeldoutPicker(valid_bytes)
    documents, total = _stream(files, picker, text_field, max_doc_bytes,
                               sys.stderr.isatty() if progress is None else progress)
    info, heldout_docs = picker.split(fp, files, documents, total)
    _save(Path(cache_dir), info, heldout_docs)
    return info, heldout_docs


class HeldoutPicker:
    """The held-out candidates while the corpus streams past: the smallest-key documents whose bytes
    reach ``valid_bytes``, kept in a max-heap so a smaller key can push the largest one out."""

    def __init__(self, valid_bytes: int):
        self.valid_bytes = valid_bytes
        self.heap: list[tuple[int, bytes]] = []  # (-key, key): max-heap of the current candidates
        self.chosen: dict[bytes, list] = {}  # key -> [doc, copies]
        self.chosen_bytes = 0

    def offer(self, doc: bytes) -> None:
        if len(doc) > self.valid_bytes:
            return
        key = doc_key(doc)
        if key in self.chosen:
            self.chosen[key][1] += 1
            return
        k = int.from_bytes(key, "big")
        if self.chosen_bytes >= self.valid_bytes and k > -self.heap[0][0]:
            return
        heapq.heappush(self.heap, (-k, key))
        self.chosen[key] = [doc, 1]
        self.chosen_bytes += len(doc)
        while self.heap and self.chosen_bytes - len(self.chosen[self.heap[0][1]][0]) >= self.valid_bytes:
            _, top = heapq.heappop(self.heap)
            self.chosen_bytes -= len(self.chosen.pop(top)[0])

    def split(self, fp: str, files: list[SourceFile], documents: int, total: int) -> tuple[CorpusInfo, list[bytes]]:
        """The split the scan found, or the ValueError that says why the corpus cannot be split."""
        names = ", ".join(Path(f.path).name for f in files[:3]) + (" ..." if len(files) > 3 else "")
        if documents == 0:
            raise ValueError(f"the data sources hold no documents (all {len(files)} file(s) are empty: {names})")
        if not self.chosen:
            raise ValueError(f"no document is at most valid_bytes={self.valid_bytes} bytes long, so none can be held "
                             "out; raise valid_bytes, or lower max_doc_bytes so that .txt files are cut smaller")
        keys = sorted(self.chosen)
        heldout_docs = [self.chosen[k][0] for k in keys]
        copies = sum(self.chosen[k][1] for k in keys)
        heldout_bytes = sum(len(d) for d in heldout_docs)
        train_bytes = total - sum(len(self.chosen[k][0]) * self.chosen[k][1] for k in keys)
        train_documents = documents - copies
        if train_documents == 0 or 2 * heldout_bytes > total:
            raise ValueError(f"valid_bytes={self.valid_bytes} holds out {heldout_bytes} of the corpus's {total} bytes; "
                             "the held-out split may take at most half of the corpus: lower valid_bytes or add data")
        info = CorpusInfo(fp, len(files), documents, total, len(heldout_docs), heldout_bytes, train_documents,
                          train_bytes, self.valid_bytes, [k.hex() for k in keys])
        return info, heldout_docs


def _stream(files: list[SourceFile], picker: HeldoutPicker, text_field: str, max_doc_bytes: int,
            show: bool) -> tuple[int, int]:
    """Offer every document to ``picker``; (documents, bytes) of the whole corpus."""
    documents = total = 0
    bar = _bar(sum(f.size for f in files), show)
    try:
        for sf in files:
            for doc, _ref in iter_docs(sf, 0, text_field, max_doc_bytes):
                documents += 1
                total += len(doc)
                picker.offer(doc)
            if bar is not None:
                bar.update(sf.size)
    finally:
        if bar is not None:
            bar.close()
    return documents, total


def _bar(total: int, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="scanning corpus", leave=False)


def _paths(cache_dir: Path, fp: str) -> tuple[Path, Path]:
    d = cache_dir / "splits"
    return d / f"{fp}.json", d / f"{fp}.heldout"


def _save(cache_dir: Path, info: CorpusInfo, docs: list[bytes]) -> None:
    meta, blob = _paths(cache_dir, info.fingerprint)
    with atomic_path(blob) as tmp, open(tmp, "wb") as fh:
        for d in docs:
            fh.write(d)
    write_json_atomic(meta, {**asdict(info), "heldout_lengths": [len(d) for d in docs]})


def _load(cache_dir: Path, fp: str) -> tuple[CorpusInfo, list[bytes]] | None:
    meta, blob = _paths(cache_dir, fp)
    try:
        data = json.loads(meta.read_text())
        raw = blob.read_bytes()
    except (OSError, ValueError):
        return None
    lengths = data.pop("heldout_lengths", None)
    if not isinstance(lengths, list) or sum(lengths) != len(raw):
        return None
    try:
        info = CorpusInfo(**data)
    except TypeError:
        return None
    docs, pos = [], 0
    for n in lengths:
        docs.append(raw[pos: pos + n])
        pos += n
    if [doc_key(d).hex() for d in docs] != info.heldout_keys:
        return None
    return info, docs
