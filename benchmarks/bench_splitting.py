"""Pooling levels at data speed: the fast whole-string path against the byte-by-byte splitter.

Both run in one process on the same text (the default corpus's documents; the reference on
the first ``--reference-mb`` of them, it is slow), for AU-Net 2, 3 and 4 with the paper's
rules, whole documents and rows of ``--seq`` ids as the loader hands them over
(``Splitter.levels(row.tolist())``). Prints MB/s of wall time and of this process's CPU
time (the machine may be shared: the CPU figure is the per-process rate) and the ratio.

    python benchmarks/bench_splitting.py [--reference-mb 0.5] [--seq 8192]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aunet.data import DataConfig, default_corpus_dir, prepare_default_corpus
from aunet.splitting import Splitter


def timed(fn, *args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def whole(splitter: Splitter, strings: list) -> None:
    for s in strings:
        splitter.levels(s if isinstance(s, bytes) else s.tolist())


def by_push(splitter: Splitter, docs: list[bytes]) -> None:
    for doc in docs:
        splitter.reset()
        for b in doc:
            splitter.push(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-mb", type=float, default=0.5, help="text for the byte-by-byte splitter")
    parser.add_argument("--seq", type=int, default=8192, help="row length of the loader's batches")
    args = parser.parse_args()
    cache = DataConfig().cache_path
    prepare_default_corpus(cache)
    docs = [p.read_bytes() for p in sorted(default_corpus_dir(cache).rglob("*.txt"))]
    total = sum(map(len, docs))
    ref_docs, used = [], 0
    for doc in docs:
        ref_docs.append(doc[: int(args.reference_mb * 1e6) - used])
        used += len(ref_docs[-1])
        if used >= args.reference_mb * 1e6:
            break
    stream = np.frombuffer(b"".join(docs), dtype=np.uint8).astype(np.int64)
    rows = [stream[i: i + args.seq] for i in range(0, len(stream) - args.seq + 1, args.seq)]
    print(f"default corpus: {len(docs)} documents, {total / 1e6:.2f} MB; reference on {used / 1e6:.2f} MB; "
          f"rows of {args.seq} ids")
    print(f"{'stages':>6} {'reference (push)':>22} {'fast, documents':>22} {'fast, loader rows':>22} {'speed-up (cpu)':>15}")
    for n_stages in (2, 3, 4):
        splitter = Splitter(n_stages)
        ref = timed(by_push, splitter, ref_docs)
        fast = timed(whole, splitter, docs)
        row = timed(whole, splitter, rows)
        rates = [used / ref[0], used / ref[1], total / fast[0], total / fast[1],
                 len(rows) * args.seq / row[0], len(rows) * args.seq / row[1]]
        cells = [f"{w / 1e6:6.2f} wall {c / 1e6:6.2f} cpu" for w, c in zip(rates[::2], rates[1::2])]
        print(f"{n_stages:>6} " + " ".join(f"{c:>22}" for c in cells) + f" {rates[3] / rates[1]:>14.0f}x")
    print("MB/s; the reference is the byte-by-byte Splitter.push that generation uses")


if __name__ == "__main__":
    main()
