"""The task registry: the item format, task specs, and the tasks by name.

Every task becomes a list of :class:`Item`: a context, the options (continuations,
scored by their likelihood after the context), the gold index, and a group (MMLU's
subject) for choosing few-shot examples. WinoGrande's options differ in their
*context* and share the continuation (lm-evaluation-harness's "partial" scoring),
so an item may carry one context per option.

A :class:`TaskSpec` says where a task's items come from (a file in a pinned package,
or a generator) and how they are scored. The modules that define tasks register them
here when ``aunet.eval`` is imported: :mod:`aunet.eval.tasks` the benchmarks,
:mod:`aunet.eval.cute` the CUTE tasks. Names and groups (``ALIASES``) resolve here,
and so does which packages a set of tasks needs (:func:`fetch_tasks`).

Malformed lines raise ``ValueError`` naming the file and the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aunet.eval.fetch import PACKAGES, Package, cached_file, fetch_package, package_dir


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


class ItemError(ValueError):
    """A line of a task's file that is not a valid item (load_jsonl adds the file and line)."""


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


def packages_for(tasks: list[str]) -> list[Package]:
    """The packages that the given task names (or aliases) need; all of them for an empty list."""
    if not tasks:
        return list(PACKAGES.values())
    needed: list[Package] = []
    for name in expand_tasks(tasks):
        package = get_task(name).package
        if package is not None and package not in needed:
            needed.append(package)
    return needed


def fetch_tasks(tasks: list[str] | None = None, cache_dir: str | Path | None = None,
                wheel_dir: str | Path | None = None, force: bool = False, log=print) -> dict[str, list[Path]]:
    """Fetch the data of ``tasks`` (every task when empty). Returns package -> cached files."""
    out = {}
    for package in packages_for(list(tasks or [])):
        paths = fetch_package(package, cache_dir, wheel_dir, force, log=log)
        log(f"{package.spec}: {len(paths)} file(s) in {package_dir(package, cache_dir)}")
        out[package.name] = paths
    return out
