"""Documents -> fixed-length training sequences, resumable; and fixed evaluation sequences.

Training stream. Per epoch, the corpus files are put in a seeded order; their documents
(held-out ones skipped) are cut into *blocks* of ``shuffle_docs`` documents (or
``shuffle_bytes`` bytes), and each block is shuffled with a seed derived from
``(seed, epoch, block)``. Documents are encoded (bytes, or BPE tokens) and concatenated,
each followed by EOS. The stream is cut into sequences of ``seq_len + 1`` units that
overlap by one unit (sequence ``j`` covers stream positions ``[j*L, j*L + L]``), so every
unit is a target exactly once: inputs are ``ids[:, :-1]``, targets ``ids[:, 1:]``.

Sharding. Global sequence ``j`` belongs to rank ``j % world_size``; a batch of rank ``r``
holds its next ``batch_size`` sequences. All ranks advance in lockstep, so after the same
number of batches every rank has the same ``state_dict()``.

Resuming. The state is a handful of integers: the block's start (epoch, block number,
file position, position inside the file) and the next sequence's start inside the block
(document index, unit offset). Restoring re-reads one block, nothing before it.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aunet.config import BYTE_VOCAB, EOS_ID, PAD_ID
from aunet.data.sources import SourceFile, iter_docs
from aunet.data.split import doc_key
from aunet.data.tokenizer import BpeTokenizer

if TYPE_CHECKING:
    from aunet.splitting import Splitter

STATE_VERSION = 1


# ---------------------------------------------------------------------------- encoders
class ByteEncoder:
    """Bytes as ids 0-255; EOS/PAD from :mod:`aunet.config`."""

    units = "bytes"
    vocab_size = BYTE_VOCAB
    eos_id = EOS_ID
    pad_id = PAD_ID

    def encode(self, doc: bytes) -> np.ndarray:
        return np.frombuffer(doc, dtype=np.uint8)

    def decode(self, ids) -> bytes:
        return bytes(int(i) for i in ids if int(i) < 256)


class BpeEncoder:
    """BPE token ids from a :class:`BpeTokenizer`; EOS and PAD are the tokenizer's own special tokens."""

    units = "bpe"

    def __init__(self, tokenizer: BpeTokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.eos_id = tokenizer.eos_id
        self.pad_id = tokenizer.pad_id

    def encode(self, doc: bytes) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(doc), dtype=np.int64)

    def decode(self, ids) -> bytes:
        return self.tokenizer.decode([int(i) for i in ids])


Encoder = ByteEncoder | BpeEncoder


def encode_with_eos(encoder: Encoder, doc: bytes) -> np.ndarray:
    ids = encoder.encode(doc)
    out = np.empty(len(ids) + 1, dtype=np.int64)
    out[:-1] = ids
    out[-1] = encoder.eos_id
    return out


# ---------------------------------------------------------------------------- document stream
class DocStream:
    """The training documents in their epoch order, read one shuffle block at a time."""

    def __init__(self, files: list[SourceFile], heldout_keys: frozenset[bytes], max_heldout_len: int,
                 seed: int, shuffle_docs: int, shuffle_bytes: int, text_field: str, max_doc_bytes: int):
        self.files = files
        self.heldout_keys = heldout_keys
        self.max_heldout_len = max_heldout_len
        self.seed = seed
        self.shuffle_docs = shuffle_docs
        self.shuffle_bytes = shuffle_bytes
        self.text_field = text_field
        self.max_doc_bytes = max_doc_bytes
        # Loaders over one stream share its open reader; a prefetching loader reads from another thread.
        self._reading = threading.Lock()

    def is_heldout(self, doc: bytes) -> bool:
        return len(doc) <= self.max_heldout_len and doc_key(doc) in self.heldout_keys

    def file_order(self, epoch: int) -> list[int]:
        n = len(self.files)
        if n == 1:
            return [0]
        return [int(i) for i in np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(n)]

    def load_block(self, epoch: int, block_no: int, file_pos: int, ref: int,
                   shuffle: bool = True) -> tuple[list[bytes], tuple[int, int]]:
        """The block starting at ``(file_pos, ref)`` of the epoch's file order, shuffled.

        Returns the documents and the cursor of the next block (``file_pos == len(files)``
        at the end of the epoch). The open file of the last block is kept, so reading block
        after block never seeks (a .zst stream cannot seek without decompressing again).
        """
        with self._reading:
            return self._load_block(epoch, block_no, file_pos, ref, shuffle)

    def _load_block(self, epoch: int, block_no: int, file_pos: int, ref: int,
                    shuffle: bool) -> tuple[list[bytes], tuple[int, int]]:
        order = self.file_order(epoch)
        docs: list[bytes] = []
        size = 0
        while file_pos < len(order):
            gen = self._reader(epoch, file_pos, ref, order)
            for doc, next_ref in gen:
                ref = next_ref
                if self.is_heldout(doc):
                    continue
                docs.append(doc)
                size += len(doc)
                if len(docs) >= self.shuffle_docs or size >= self.shuffle_bytes:
                    self._live = (epoch, file_pos, ref, gen)
                    return self._shuffled(docs, epoch, block_no, shuffle), (file_pos, ref)
            gen.close()
            self._live = None
            file_pos, ref = file_pos + 1, 0
        return self._shuffled(docs, epoch, block_no, shuffle), (len(order), 0)

    def _reader(self, epoch: int, file_pos: int, ref: int, order: list[int]):
        live = getattr(self, "_live", None)
        if live is not None:
            if live[:3] == (epoch, file_pos, ref):
                return live[3]
            live[3].close()
            self._live = None
        return iter_docs(self.files[order[file_pos]], ref, self.text_field, self.max_doc_bytes)

    def _shuffled(self, docs: list[bytes], epoch: int, block_no: int, shuffle: bool) -> list[bytes]:
        if not shuffle or len(docs) < 2:
            return docs
        perm = np.random.default_rng([self.seed, epoch, block_no]).permutation(len(docs))
        return [docs[i] for i in perm]

    def iter_file_order(self) -> Iterator[bytes]:
        """All training documents in the sorted file order (independent of the seed)."""
        for sf in self.files:
            for doc, _ref in iter_docs(sf, 0, self.text_field, self.max_doc_bytes):
                if not self.is_heldout(doc):
                    yield doc

    def iter_epoch(self, epoch: int = 0, shuffle: bool = False) -> Iterator[bytes]:
        """All training documents of one epoch (file order of that epoch; blocks shuffled if asked)."""
        cursor, block_no = (0, 0), 0
        while cursor[0] < len(self.files):
            docs, cursor = self.load_block(epoch, block_no, *cursor, shuffle=shuffle)
            yield from docs
            block_no += 1


class _Exhausted(Exception):
    pass


# ---------------------------------------------------------------------------- training loader
class PackedLoader:
    """Batches ``{"ids": LongTensor[B, seq_len + 1]}`` (plus ``"levels"`` with a Splitter).

    Iterate it; ``state_dict()`` between batches captures the exact position, and
    ``load_state_dict()`` on a fresh loader over the same corpus continues with exactly the
    batches the original would have produced. Without ``epochs_allowed`` the iteration stops
    when the training split is used up (the last incomplete batch is dropped).
    """

    def __init__(self, stream: DocStream, encoder: Encoder, batch_size: int, seq_len: int, *,
                 rank: int = 0, world_size: int = 1, splitter: Splitter | None = None,
                 epochs_allowed: bool = False, fingerprint: str = ""):
        if batch_size < 1:
            raise ValueError(f"batch_size is {batch_size}; use at least 1 sequence per micro-batch")
        if seq_len < 1:
            raise ValueError(f"seq_len is {seq_len}; must be positive")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} / world_size {world_size}: need 0 <= rank < world_size")
        if splitter is not None and encoder.units != "bytes":
            raise ValueError("pooling levels (a Splitter) need units='bytes'; BPE tokens have no byte levels")
        self.stream = stream
        self.encoder = encoder
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.rank = rank
        self.world_size = world_size
        self.splitter = splitter
        self.epochs_allowed = epochs_allowed
        self.fingerprint = fingerprint
        # position
        self._epoch = 0
        self._block_no = 0
        self._cursor = (0, 0)
        self._doc_idx = 0
        self._offset = 0
        self._sequences = 0
        self._batches = 0
        # loaded data (derived from the position)
        self._block: list[bytes] | None = None
        self._next_cursor = (0, 0)
        self._tokens: np.ndarray | None = None

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> PackedLoader:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        snapshot = self._position()
        out = np.empty((self.batch_size, self.seq_len + 1), dtype=np.int64)
        try:
            for i in range(self.batch_size):
                for w in range(self.world_size):
                    self._take(out[i] if w == self.rank else None)
        except _Exhausted:
            self._restore(snapshot)
            raise StopIteration from None
        self._sequences += self.batch_size * self.world_size
        self._batches += 1
        batch = {"ids": torch.from_numpy(out)}
        if self.splitter is not None:
            levels = [self.splitter.levels(row.tolist()) for row in out]
            batch["levels"] = torch.tensor(levels, dtype=torch.long)
        return batch

    def _take(self, out: np.ndarray | None) -> None:
        need = self.seq_len + 1
        filled = 0
        while filled < need:
            tokens = self._current()
            k = min(len(tokens) - self._offset, need - filled)
            if out is not None:
                out[filled: filled + k] = tokens[self._offset: self._offset + k]
            self._offset += k
            filled += k
        self._offset -= 1  # the next sequence starts on this one's last unit

    def _current(self) -> np.ndarray:
        """Tokens of the document holding the current position, moving on past exhausted ones."""
        if self._block is None:
            self._load_block()
        while True:
            if self._tokens is None:
                if self._doc_idx < len(self._block):
                    self._tokens = encode_with_eos(self.encoder, self._block[self._doc_idx])
                else:
                    self._next_block()
                    continue
            if self._offset < len(self._tokens):
                return self._tokens
            self._doc_idx += 1
            self._offset = 0
            self._tokens = None

    def _load_block(self) -> None:
        self._block, self._next_cursor = self.stream.load_block(self._epoch, self._block_no, *self._cursor)
        self._tokens = None

    def _next_block(self) -> None:
        empty_epochs = 0
        while True:
            cursor = self._next_cursor
            if cursor[0] >= len(self.stream.files):
                if not self.epochs_allowed:
                    raise _Exhausted
                empty_epochs += 1
                if empty_epochs > 1:
                    raise RuntimeError("a whole epoch of the training split yielded no document; "
                                       "did the corpus files change after the scan?")
                self._epoch += 1
                self._block_no = 0
                cursor = (0, 0)
            else:
                self._block_no += 1
            self._cursor = cursor
            self._doc_idx = 0
            self._offset = 0
            self._load_block()
            if self._block:
                return

    # -------------------------------------------------------------- state
    def _position(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "block_no": self._block_no, "file_pos": self._cursor[0],
                "ref": self._cursor[1], "doc_idx": self._doc_idx, "offset": self._offset,
                "sequences": self._sequences, "batches": self._batches}

    def state_dict(self) -> dict[str, Any]:
        """Small, JSON-serialisable; identical on every rank after the same number of batches."""
        return {"version": STATE_VERSION, "fingerprint": self.fingerprint, "units": self.encoder.units,
                "seq_len": self.seq_len, "seed": self.stream.seed, "shuffle_docs": self.stream.shuffle_docs,
                "shuffle_bytes": self.stream.shuffle_bytes, **self._position()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r}; this code reads {STATE_VERSION}")
        mine = self.state_dict()
        for name in ("fingerprint", "units", "seq_len", "seed", "shuffle_docs", "shuffle_bytes"):
            if state.get(name) != mine[name]:
                raise ValueError(f"loader state has {name}={state.get(name)!r} but this loader has {mine[name]!r}: "
                                 "a checkpoint resumes only on the same corpus, units, seq_len and seed")
        self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        self._epoch = int(state["epoch"])
        self._block_no = int(state["block_no"])
        self._cursor = (int(state["file_pos"]), int(state["ref"]))
        self._doc_idx = int(state["doc_idx"])
        self._offset = int(state["offset"])
        self._sequences = int(state["sequences"])
        self._batches = int(state["batches"])
        self._load_block()
        if self._doc_idx > len(self._block):
            raise ValueError("loader state points past the end of its data block: the corpus has changed")

    @property
    def epoch(self) -> int:
        return self._epoch


class Prefetcher:
    """A :class:`PackedLoader` whose next batches (ids and levels) are made in a background thread.

    Iterating gives exactly the loader's batches, in order. ``state_dict()`` is the loader's
    state after the last batch handed out, not after the ones made ahead, so a checkpoint
    resumes exactly where the training step was. ``pin_memory`` (CUDA only) pins each batch in
    the worker, so that ``.to(device, non_blocking=True)`` copies while the GPU computes. The
    worker stops on ``close()``, at the end of the data, or when the prefetcher is dropped.
    """

    def __init__(self, loader: PackedLoader, depth: int = 2, pin_memory: bool = False):
        if depth < 1:
            raise ValueError(f"prefetch depth is {depth}; make at least 1 batch ahead")
        self.loader = loader
        self.depth = depth
        self.pin_memory = pin_memory
        self._state = loader.state_dict()
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._ahead = False  # the inner loader went past state_dict() (batches made but not handed out)
        self._ended = False

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._ended:
            raise StopIteration
        if self._worker is None:
            self._start()
        item = self._queue.get()
        if item is None:  # the data is used up; the state stays after the last batch handed out
            self._ended = True
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        batch, self._state = item
        return batch

    def _start(self) -> None:
        if self._ahead:
            self.loader.load_state_dict(self._state)
            self._ahead = False
        self._queue, self._stop = queue.Queue(self.depth), threading.Event()
        self._worker = threading.Thread(target=_produce, daemon=True, name="aunet-prefetch",
                                        args=(self.loader, self.pin_memory, self._queue, self._stop))
        self._worker.start()
        weakref.finalize(self, self._stop.set)  # a dropped prefetcher (e.g. a failed run) stops its worker

    def close(self) -> None:
        """Stop the worker; iterating again goes on from ``state_dict()``."""
        if self._worker is not None:
            self._stop.set()
            self._worker.join()
            self._worker = None
            self._ahead = True

    def state_dict(self) -> dict[str, Any]:
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self.loader.load_state_dict(state)
        self._state = self.loader.state_dict()
        self._ahead = self._ended = False


def _produce(loader: PackedLoader, pin_memory: bool, out: queue.Queue, stop: threading.Event) -> None:
    """The prefetch worker, the only code that touches ``loader`` while it runs: (batch, state after it)."""

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        for batch in loader:
            if pin_memory:
                batch = {k: v.pin_memory() for k, v in batch.items()}
            if not put((batch, loader.state_dict())):
                return
        put(None)
    except Exception as err:  # raised again by the training step that asks for the batch
        put(err)


# ---------------------------------------------------------------------------- evaluation sequences
@dataclass
class EvalSet:
    """The held-out documents as fixed evaluation sequences.

    ``ids[:, :-1]`` are inputs, ``ids[:, 1:]`` targets; ``mask`` marks real targets (False
    on padding). The stream is ``EOS doc_1 EOS doc_2 EOS ... doc_n EOS``: every document
    unit and every document's closing EOS is a target exactly once. Bits per byte =
    (sum of target NLL in nats under ``mask``) / (``n_bytes`` * ln 2), where ``n_bytes`` is
    the documents' UTF-8 bytes, the same for byte and BPE models.
    """

    ids: torch.Tensor  # LongTensor[N, L + 1]
    mask: torch.Tensor  # BoolTensor[N, L]
    seq_bytes: torch.Tensor  # LongTensor[N]: document bytes credited to each sequence (sums to n_bytes)
    n_bytes: int
    n_targets: int
    n_docs: int
    units: str
    levels: torch.Tensor | None = None  # LongTensor[N, L + 1] with a Splitter

    def __len__(self) -> int:
        return self.ids.shape[0]

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(0, len(self), batch_size):
            batch = {"ids": self.ids[i: i + batch_size], "mask": self.mask[i: i + batch_size],
                     "n_bytes": int(self.seq_bytes[i: i + batch_size].sum())}
            if self.levels is not None:
                batch["levels"] = self.levels[i: i + batch_size]
            yield batch


def make_eval_set(docs: list[bytes], encoder: Encoder, seq_len: int, splitter: Splitter | None = None) -> EvalSet:
    if not docs:
        raise ValueError("no held-out documents to evaluate on")
    parts = [np.array([encoder.eos_id], dtype=np.int64)] + [encode_with_eos(encoder, d) for d in docs]
    stream = np.concatenate(parts)
    n_targets = len(stream) - 1
    n_seq = -(-n_targets // seq_len)
    ids = np.full((n_seq, seq_len + 1), encoder.pad_id, dtype=np.int64)
    mask = np.zeros((n_seq, seq_len), dtype=bool)
    # A document's bytes are credited to the sequence whose targets include its closing EOS,
    # so that any partition of the sequences (ranks, batches) adds up to exactly n_bytes.
    seq_bytes = np.zeros(n_seq, dtype=np.int64)
    end = 0
    for doc, part in zip(docs, parts[1:]):
        end += len(part)  # stream index of this document's EOS
        seq_bytes[(end - 1) // seq_len] += len(doc)
    for j in range(n_seq):
        chunk = stream[j * seq_len: j * seq_len + seq_len + 1]
        ids[j, : len(chunk)] = chunk
        mask[j, : len(chunk) - 1] = True
    levels = None
    if splitter is not None:
        if encoder.units != "bytes":
            raise ValueError("pooling levels (a Splitter) need units='bytes'")
        levels = torch.tensor([splitter.levels(row.tolist()) for row in ids], dtype=torch.long)
    return EvalSet(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(seq_bytes),
                   sum(len(d) for d in docs), n_targets, len(docs), encoder.units, levels)


def bits_per_byte(total_nats: float, n_bytes: int) -> float:
    """Bits per byte from a summed negative log-likelihood in nats."""
    return float(total_nats) / (n_bytes * float(np.log(2)))
