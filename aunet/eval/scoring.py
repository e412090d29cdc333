"""Likelihood scoring and accuracy, the same code path for byte and BPE models.

The scorer sees text. A byte model reads ``EOS + context + option`` as bytes (EOS is
the document separator it saw in training); a BPE model reads ``EOS`` then the
context's tokens then the option's tokens, the two tokenised separately so that the
option's tokens cover exactly its bytes. The score of an option is the sum of the
negative log-likelihoods (nats) of its units given everything before.

Multiple choice (Sec. 3.1; Brown et al., 2020): the chosen option has the lowest NLL
divided by its length in characters (UTF-8 bytes): ``acc_char``, the headline. Also
reported: unnormalised NLL (``acc_raw``) and NLL per model unit (``acc_token``; per
byte for byte models, so it equals ``acc_char`` there). Ties go to the first option.

Efficiency: the rows of a causal model are shared where they can be. The units an
option needs are ``EOS + context + option`` minus its last unit; whenever that is a
prefix of another needed row, one forward pass serves both. So options that differ
only in their last unit (MMLU's " A".." D" for every model; " yes"/" no" for BPE)
cost one row per item, and identical rows are computed once. Rows are sorted by
length and batched up to ``batch_units`` units, padded on the right (never read: the
models are causal). Contexts longer than the model's ``seq_len`` are cut on the left.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from aunet.data.packing import bits_per_byte
from aunet.eval.codec import as_bytes, check_codec, encode, is_bpe, pad_id, prefix_id
from aunet.eval.generation import greedy_generations
from aunet.eval.registry import Item, TaskSpec, expand_tasks, get_task
from aunet.eval.tasks import build_items
from aunet.generate import step_threads

DEFAULT_BATCH_UNITS = 8192


@dataclass
class PairScore:
    """Score of one continuation: NLL in nats, its length in bytes and in model units, greedy or not."""

    nll: float
    n_bytes: int
    n_units: int
    greedy: bool


@dataclass
class OptionScores:
    """Per-option scores of one item (arrays over its options)."""

    nll: np.ndarray
    n_bytes: np.ndarray
    n_units: np.ndarray
    greedy: np.ndarray

    def choice(self, norm: str = "char") -> int:
        """Index of the chosen option: lowest NLL per byte ("char"), in total ("raw") or per unit ("token")."""
        denom = {"char": self.n_bytes, "raw": np.ones_like(self.nll), "token": self.n_units}[norm]
        return int(np.argmin(self.nll / denom))


# ---------------------------------------------------------------------------- encoding
def max_len(model: nn.Module) -> int:
    cfg = getattr(model, "cfg", None)
    return int(getattr(cfg, "seq_len", 2048))


def encode_pair(model: nn.Module, context: str | bytes, continuation: str | bytes,
                codec: Any = None) -> tuple[list[int], list[int], int]:
    """(context ids with the EOS prefix, continuation ids, continuation bytes)."""
    cont_bytes = as_bytes(continuation)
    if not cont_bytes:
        raise ValueError("cannot score an empty continuation")
    ctx = [prefix_id(model, codec), *encode(model, context, codec)]
    cont = encode(model, cont_bytes, codec)
    if is_bpe(model) and bytes(codec.decode(cont)) != cont_bytes:
        raise ValueError(f"the tokenizer does not round-trip the option {cont_bytes[:60]!r}: its tokens would not "
                         "cover exactly its bytes")
    return ctx, cont, len(cont_bytes)


# ---------------------------------------------------------------------------- scoring


def cut_requests(requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                 limit_len: int) -> tuple[list[tuple[int, ...]], list[int]]:
    """Each request as its whole unit sequence (context cut on the left so the model reads at most
    ``limit_len`` units) and where its continuation starts in it; bad requests fail before any work."""
    fulls: list[tuple[int, ...]] = []
    starts: list[int] = []
    for ctx, cont in requests:
        if not cont:
            raise ValueError("cannot score an empty continuation")
        if not ctx:
            raise ValueError("every continuation needs a context of at least one unit (the EOS prefix)")
        if len(cont) > limit_len:
            raise ValueError(f"a continuation of {len(cont)} units does not fit the model's {limit_len}-unit "
                             "input (the input is the context and all but the last unit of the continuation)")
        full = tuple(ctx) + tuple(cont)
        if len(full) - 1 > limit_len:  # the model reads full[:-1]
            full = full[len(full) - 1 - limit_len:]
        fulls.append(full)
        starts.append(len(full) - len(cont))
    return fulls, starts


def shared_rows(fulls: Sequence[tuple[int, ...]]) -> tuple[list[tuple[int, ...]], dict[int, list[int]]]:
    """The rows to run, longest first, and for each row the requests it serves.

    One row serves every request whose needed prefix (all but the last unit) it starts with.
    """
    keys = sorted({f[:-1] for f in fulls})
    cover: dict[tuple[int, ...], tuple[int, ...]] = {}
    current: tuple[int, ...] | None = None
    for key in reversed(keys):
        if current is None or current[:len(key)] != key:
            current = key
        cover[key] = current
    rows = sorted(set(cover.values()), key=len, reverse=True)
    row_index = {r: i for i, r in enumerate(rows)}
    by_row: dict[int, list[int]] = {}
    for j, f in enumerate(fulls):
        by_row.setdefault(row_index[cover[f[:-1]]], []).append(j)
    return rows, by_row


def continuation_score(logits: torch.Tensor, lse: torch.Tensor, full: tuple[int, ...],
                       start: int) -> tuple[float, int, bool]:
    """(NLL in nats, units, greedy) of ``full[start:]`` from one row's logits and log-normalisers."""
    positions = torch.arange(start - 1, len(full) - 1, device=logits.device)
    targets = torch.tensor(full[start:], dtype=torch.long, device=logits.device)
    lg = logits[positions]
    lp = lg.gather(1, targets[:, None])[:, 0] - lse[positions]
    return -float(lp.double().sum()), len(full) - start, bool((lg.argmax(-1) == targets).all())


@torch.inference_mode()
def score_ids(model: nn.Module, requests: Sequence[tuple[Sequence[int], Sequence[int]]], pad: int,
              batch_units: int = DEFAULT_BATCH_UNITS, max_rows: int = 64,
              limit_len: int | None = None, threads: int | None = None) -> list[tuple[float, int, bool]]:
    """(NLL in nats, units, greedy) of each continuation given its context (both unit ids).

    Contexts are cut on the left so that the model reads at most ``limit_len`` units
    (the model's seq_len by default). ``threads``: see :func:`step_threads`.
    """
    fulls, starts = cut_requests(requests, limit_len or max_len(model))
    rows, by_row = shared_rows(fulls)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    results: list[tuple[float, int, bool] | None] = [None] * len(fulls)
    i = 0
    with step_threads(model, threads):
        try:
            while i < len(rows):
                width = len(rows[i])
                n = max(1, min(max_rows, batch_units // max(width, 1), len(rows) - i))
                batch = rows[i:i + n]
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                for b, row in enumerate(batch):
                    ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
                logits = model(ids.to(device)).float()
                lse = torch.logsumexp(logits, dim=-1)  # [B, T]: log-normaliser at every position
                for b in range(len(batch)):
                    for j in by_row[i + b]:
                        results[j] = continuation_score(logits[b], lse[b], fulls[j], starts[j])
                i += n
        finally:
            model.train(was_training)
    return results  # type: ignore[return-value]


def score_pairs(model: nn.Module, pairs: Sequence[tuple[str | bytes, str | bytes]], codec: Any = None,
                batch_units: int = DEFAULT_BATCH_UNITS) -> list[PairScore]:
    """Score (context, continuation) text pairs: NLL (nats), bytes, units and greediness of each continuation."""
    check_codec(model, codec)
    encoded = [encode_pair(model, c, x, codec) for c, x in pairs]
    raw = score_ids(model, [(c, x) for c, x, _ in encoded], pad_id(model, codec), batch_units)
    return [PairScore(nll, nb, nu, g) for (nll, nu, g), (_, _, nb) in zip(raw, encoded)]


def score_options(model: nn.Module, items: Sequence[Item], codec: Any = None,
                  batch_units: int = DEFAULT_BATCH_UNITS) -> list[OptionScores]:
    """Per-option NLL (nats), length in bytes and in units, for each item (one batched pass over all)."""
    pairs, spans = [], []
    for item in items:
        spans.append((len(pairs), len(pairs) + len(item.options)))
        pairs.extend(item.pairs())
    scores = score_pairs(model, pairs, codec, batch_units)
    out = []
    for a, b in spans:
        s = scores[a:b]
        out.append(OptionScores(np.array([x.nll for x in s]), np.array([x.n_bytes for x in s], dtype=float),
                                np.array([x.n_units for x in s], dtype=float), np.array([x.greedy for x in s])))
    return out


# ---------------------------------------------------------------------------- statistics
def bootstrap_ci(correct: Sequence[float], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item scores (0/1)."""
    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass
class TaskResult:
    """One task's scores. ``acc`` is the headline: acc_char for multiple choice, exact match for generation."""

    task: str
    metric: str  # "acc_char" or "exact_match"
    acc: float
    ci95: tuple[float, float]
    chance: float
    n: int
    acc_char: float = math.nan
    acc_raw: float = math.nan
    acc_token: float = math.nan
    majority: float = math.nan  # always answering the most frequent gold position
    gold_bpb: float = math.nan  # bits per byte of the gold continuations: moves with compute where acc sits at chance
    seconds: float = 0.0
    per_item: list[bool] = field(default_factory=list, repr=False)

    @property
    def items_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else math.nan

    def flat(self) -> dict[str, float]:
        """Flat scores for a run record: ``<task>`` (headline), ``<task>_ci_low`` ..."""
        t = self.task
        out = {t: self.acc, f"{t}_ci_low": self.ci95[0], f"{t}_ci_high": self.ci95[1], f"{t}_chance": self.chance,
               f"{t}_n": float(self.n)}
        if self.metric == "acc_char":
            out.update({f"{t}_acc_raw": self.acc_raw, f"{t}_acc_token": self.acc_token, f"{t}_gold_bpb": self.gold_bpb})
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_item")
        d["items_per_s"] = self.items_per_s
        return d


def _generate_matches(model: nn.Module, items: Sequence[Item], codec: Any = None) -> list[bool]:
    """Exact match of greedy cached generation against each item's target (CUTE).

    The model generates as many bytes as the target has (the answer and its closing
    quote), so the answer must be complete and closed.
    """
    missing = [it.id for it in items if it.target is None]
    if missing:
        raise ValueError(f"items {missing[:3]} have no generation target")
    targets = [it.target.encode("utf-8") for it in items]  # type: ignore[union-attr]
    outputs = greedy_generations(model, [it.context for it in items], [len(t) for t in targets], codec)
    return [o == t for o, t in zip(outputs, targets)]


def evaluate_task(model: nn.Module, task: str | TaskSpec, limit: int | None = None, shots: int = 0, seed: int = 0,
                  codec: Any = None, cache_dir: str | None = None, n_boot: int = 1000,
                  batch_units: int = DEFAULT_BATCH_UNITS, items: Sequence[Item] | None = None) -> TaskResult:
    """Accuracy of ``model`` on one task, with a bootstrap 95% interval and the chance level.

    ``items`` overrides the task's own data (hand-made items in tests).
    """
    spec = get_task(task) if isinstance(task, str) else task
    check_codec(model, codec)
    started = time.time()
    if items is None:
        items = build_items(spec, limit, shots, seed, cache_dir)
    if not items:
        raise ValueError(f"task '{spec.name}' has no items to evaluate")
    golds = np.array([it.gold for it in items])
    majority = float(np.bincount(golds).max() / len(golds))
    if spec.kind == "gen":
        correct = _generate_matches(model, items, codec)
        acc = float(np.mean(correct))
        chance = spec.chance_override if spec.chance_override is not None else 0.0
        return TaskResult(spec.name, "exact_match", acc, bootstrap_ci(correct, n_boot, seed), chance, len(items),
                          majority=math.nan, seconds=time.time() - started, per_item=list(map(bool, correct)))
    scores = score_options(model, items, codec, batch_units)
    hits = {norm: np.array([s.choice(norm) == it.gold for s, it in zip(scores, items)])
            for norm in ("char", "raw", "token")}
    chance = spec.chance_override if spec.chance_override is not None else \
        float(np.mean([1 / len(it.options) for it in items]))
    gold_nats = sum(float(s.nll[it.gold]) for s, it in zip(scores, items))
    gold_bytes = sum(int(s.n_bytes[it.gold]) for s, it in zip(scores, items))
    return TaskResult(spec.name, "acc_char", float(hits["char"].mean()), bootstrap_ci(hits["char"], n_boot, seed),
                      chance, len(items), acc_char=float(hits["char"].mean()), acc_raw=float(hits["raw"].mean()),
                      acc_token=float(hits["token"].mean()), majority=majority,
                      gold_bpb=bits_per_byte(gold_nats, gold_bytes), seconds=time.time() - started,
                      per_item=[bool(h) for h in hits["char"]])


def evaluate_tasks(model: nn.Module, tasks: Sequence[str] | str, limit: int | None = None, shots: int = 0,
                   seed: int = 0, codec: Any = None, cache_dir: str | None = None,
                   errors: dict[str, str] | None = None, log=None,
                   batch_units: int = DEFAULT_BATCH_UNITS) -> dict[str, TaskResult]:
    """TaskResult per task (groups such as "cute" expanded). Unknown names fail before any work.

    With ``errors`` given, a failing task is recorded there (name -> message) and the
    others go on; without it, the first failure raises.
    """
    names = expand_tasks(tasks)
    out: dict[str, TaskResult] = {}
    for name in names:
        try:
            out[name] = evaluate_task(model, name, limit, shots, seed, codec, cache_dir, batch_units=batch_units)
        except Exception as err:
            if errors is None:
                raise
            errors[name] = f"{type(err).__name__}: {err}"
            if log is not None:
                log(f"{name}: failed: {errors[name]}")
            continue
        if log is not None:
            r = out[name]
            log(f"{name}: {r.metric} {r.acc:.3f} [{r.ci95[0]:.3f}, {r.ci95[1]:.3f}] chance {r.chance:.3f} "
                f"n={r.n} ({r.items_per_s:.1f} items/s)")
    return out
