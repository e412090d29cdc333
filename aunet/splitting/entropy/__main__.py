"""``python -m aunet.splitting.entropy train [--data SOURCES...]``: train the entropy model of a corpus and cache it.

``info`` prints the cached model of a corpus (where, trained how, its held-out bits per byte).

    python -m aunet.splitting.entropy train                  # the default corpus
    python -m aunet.splitting.entropy train --data my/*.txt  # another corpus
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aunet.splitting.entropy.model import Shape, model_path
from aunet.splitting.entropy.store import CorpusRef, model_for
from aunet.splitting.entropy.train import Recipe


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aunet.splitting.entropy", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("train", "info"))
    parser.add_argument("--data", nargs="+", default=[], help="the corpus's sources (default: the default corpus)")
    parser.add_argument("--valid-bytes", type=int, help="the corpus's held-out budget (default: the data layer's)")
    parser.add_argument("--cache-dir", help="cache directory (default: $AUNET_CACHE or ~/.cache/aunet)")
    defaults = Recipe()
    parser.add_argument("--context", type=int, default=defaults.shape.context, help="bytes the model reads")
    parser.add_argument("--width", type=int, default=defaults.shape.width, help="hidden width")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train-bytes", type=int, default=defaults.train_bytes,
                        help="bytes of the training split to train on (and to read thresholds from)")
    args = parser.parse_args(argv)
    recipe = Recipe(Shape(args.context, args.width), args.steps, seed=args.seed, train_bytes=args.train_bytes)
    try:
        recipe.check()
        from aunet.data import DataConfig, prepare_data

        held = {} if args.valid_bytes is None else {"valid_bytes": args.valid_bytes}
        corpus = prepare_data(DataConfig(sources=args.data, cache_dir=args.cache_dir, **held), progress=False)
        ref = CorpusRef.of(corpus)
        if args.command == "info":
            saved = model_for(ref, "entropy")
        else:
            from aunet.splitting.entropy.train import train_entropy_model

            saved, seconds = train_entropy_model(corpus, recipe)
            print(f"trained in {seconds:.1f} s (one thread)")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    m = saved.meta
    print(f"entropy model of {ref.description} (fingerprint {ref.fingerprint}): {model_path(ref.cache, ref.fingerprint)}")
    print(f"  context {m.shape['context']} bytes, width {m.shape['width']}, {saved.model.shape.forward_flops:,.0f} "
          f"forward FLOPs per byte; {m.steps} steps on {m.train_bytes:,} bytes, seed {m.seed}, {m.seconds} s")
    print(f"  held-out: {m.heldout_bits_per_byte:.3f} bits per byte")
    return 0


if __name__ == "__main__":
    sys.exit(main())
