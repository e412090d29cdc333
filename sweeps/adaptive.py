"""Where a cell's next trials go: quasi-random first, then past an edge optimum, then where Optuna points.

``next_trials(study, cell, history)`` is a pure function: the study's seed, the cell and the cell's
settled trials (with their outcomes) determine its answer, so a sweep that crashed proposes exactly
the trials it would have proposed. No Hydra, no launcher, no storage.

1. Phase 1 (``qmc``): the cell's scrambled Sobol points over the prior box. They come from
   ``scipy.stats.qmc`` (``study.cell_trials``) rather than Optuna's QMCSampler, because a cell's
   points are then a pure function of (seed, cell, n) whose prefix never moves, where QMCSampler
   numbers its points by the trials of whatever study it samples for.
2. Box moves (``move``): whenever the cell's best run sits on an edge of its box (``aunet.laws.box_edge``,
   the analysis's own warning rule) after phase 1 or a later round, the box grows past that edge by
   one prior box width and ``move_trials`` Sobol points fill the new part, before anything else; up to
   ``max_moves`` times. A cell where every run diverged moves its LR down.
3. Phase 2 (``adaptive``): an Optuna sampler (GP or TPE), rebuilt from the history with a seed drawn
   from the study seed, the cell and the history's length, is asked for ``adaptive_batch`` points at
   a time (ask/tell) over the final box.
4. Seed reruns (``seed``): last, the cell's best configuration is run again with training seeds
   1 .. ``seeds`` - 1, so that the analysis can weigh its 1% band against seed noise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from aunet.laws import box_edge
from sweeps.study import StudyConfig, Trial, box, cell_trials, in_box, trial_at, unit_points

Box = tuple[float, float, float, float]  # (lr_min, lr_max, bsz_min, bsz_max)


@dataclass(frozen=True)
class CellPrior:
    """Where one (family, budget) cell of a study starts: its prior optimum and the grain of its BSZ."""

    family: str
    budget: float
    lr: float  # the prior law's LR and BSZ: the centre of the prior box
    bsz: float
    seq_len: int  # BSZ is whole sequences of this many units
    bsz_limit: float = math.inf  # the largest BSZ that still trains aunet.ladder.MIN_STEPS steps (moves stop there)


@dataclass(frozen=True)
class Outcome:
    """A settled trial as the proposer sees it (``sweeps.ledger.Row`` has the same fields)."""

    trial: Trial
    status: str  # finished, diverged, failed, ...
    loss: float | None


def next_trials(study: StudyConfig, cell: CellPrior, history: Sequence[Outcome]) -> list[Trial]:
    """The cell's next trials given its settled ones (none: the cell is done)."""
    phases = [h.trial.phase for h in history]
    if phases.count("qmc") < study.trials:
        return cell_trials(study, cell.family, cell.budget, cell.seq_len, cell.lr, cell.bsz)[phases.count("qmc"):]
    current = cell_box(study, cell, history)
    moves = len({h.trial.box for h in history if h.trial.phase == "move"})
    if moves < study.max_moves:
        sides = edge_sides(current, history)
        if sides[1] == "upper" and current[3] + cell.seq_len > cell.bsz_limit:
            sides = (sides[0], "")  # larger batches would train too few steps: the box stays below them
        if any(sides):
            return move_trials(study, cell, history, current, sides, moves + 1)
    wanted = study.adaptive_trials - phases.count("adaptive") if "adaptive" in study.phases else 0
    if wanted > 0:
        return adaptive_trials(study, cell, history, current, min(wanted, study.adaptive_batch))
    return seed_trials(study, cell, history, current)


def seed_trials(study: StudyConfig, cell: CellPrior, history: Sequence[Outcome], current: Box) -> list[Trial]:
    """The best configuration of the search (seed reruns excluded) with each seed it still lacks."""
    searched = [h for h in history if _searched(h)]
    if study.seeds < 2 or not searched:
        return []
    best = min(searched, key=lambda h: h.loss).trial
    done = {h.trial.seed for h in history if h.trial.phase == "seed"}
    missing = [s for s in range(1, study.seeds) if s not in done]
    return [Trial(cell.family, cell.budget, len(history) + k, best.lr, best.bsz, "seed", current, seed)
            for k, seed in enumerate(missing)]


def cell_box(study: StudyConfig, cell: CellPrior, history: Sequence[Outcome]) -> Box:
    """The cell's search box now: the prior box grown by every move so far (the hull of its trials' boxes)."""
    boxes = [(*box(cell.lr, study.lr_factor), *box(cell.bsz, study.bsz_factor))]
    boxes += [h.trial.box for h in history if h.trial.box]
    return (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))


def edge_sides(current: Box, history: Sequence[Outcome]) -> tuple[str, str]:
    """Which edge ("lower", "upper" or "") of the box the best finished run sits on, in LR and in BSZ."""
    finished = [h for h in history if _searched(h)]
    if finished:
        best = min(finished, key=lambda h: h.loss).trial
        return box_edge(best.lr, current[0], current[1]), box_edge(best.bsz, current[2], current[3])
    if any(h.status == "diverged" for h in history):
        return "lower", ""  # nothing trained: every LR tried was too high
    return "", ""


def move_trials(study: StudyConfig, cell: CellPrior, history: Sequence[Outcome], current: Box, sides: tuple[str, str],
                move: int) -> list[Trial]:
    """Sobol points in the strip one prior box width past each edge; every such trial carries the grown box."""
    strip = [*_grow(current[0], current[1], sides[0], study.lr_factor),
             *_grow(current[2], current[3], sides[1], study.bsz_factor)]
    strip[3] = min(strip[3], cell.bsz_limit) if sides[1] == "upper" else strip[3]
    grown = (min(current[0], strip[0]), max(current[1], strip[1]), min(current[2], strip[2]),
             max(current[3], strip[3]))
    points = in_box(unit_points(cell.family, cell.budget, study.seed, study.move_trials, f":move{move}"), strip)
    start = len(history)
    return [trial_at(cell.family, cell.budget, start + k, lr, bsz, cell.seq_len, "move", grown)
            for k, (lr, bsz) in enumerate(points)]


def _grow(lo: float, hi: float, side: str, factor: float) -> tuple[float, float]:
    """The strip past ``side`` of [lo, hi], one prior box width (factor²) wide; the whole range if no side."""
    return (lo / factor**2, lo) if side == "lower" else (hi, hi * factor**2) if side == "upper" else (lo, hi)


def adaptive_trials(study: StudyConfig, cell: CellPrior, history: Sequence[Outcome], current: Box,
                    count: int) -> list[Trial]:
    """``count`` points from Optuna's sampler, told every settled trial of the cell (ask/tell, in memory).

    A diverged run is told as the cell's worst finished loss (that region is bad, and the sampler
    must learn it); a failed one as a failed trial. Points already asked in this round count as
    running, so a batch spreads out.
    """
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = {"lr": FloatDistribution(current[0], current[1], log=True),
             "bsz": FloatDistribution(current[2], current[3], log=True)}
    worst = max((h.loss for h in history if _finished(h)), default=None)
    seed = stream_seed(study.seed, cell, f":adaptive{len(history)}")
    search = optuna.create_study(sampler=make_sampler(study.sampler, seed), direction="minimize")
    for h in history:
        # BSZ snapped to whole sequences may fall just outside the box it was drawn from.
        params = {"lr": min(max(h.trial.lr, current[0]), current[1]),
                  "bsz": min(max(float(h.trial.bsz), current[2]), current[3])}
        value = h.loss if _finished(h) else worst if h.status == "diverged" else None
        search.add_trial(create_trial(params=params, distributions=space, value=value,
                                      state=TrialState.COMPLETE if value is not None else TrialState.FAIL))
    trials = []
    for k in range(count):
        asked = search.ask(space)
        trials.append(trial_at(cell.family, cell.budget, len(history) + k, asked.params["lr"], asked.params["bsz"],
                               cell.seq_len, "adaptive", current))
    return trials


def _searched(outcome: Outcome) -> bool:
    """A finished run of the search itself: seed reruns and the run at the prediction only measure it."""
    return _finished(outcome) and outcome.trial.phase not in ("seed", "predicted")


def _finished(outcome: Outcome) -> bool:
    return outcome.status == "finished" and outcome.loss is not None and math.isfinite(outcome.loss)


def make_sampler(name: str, seed: int):
    """Phase 2's Optuna sampler; phase 1 is its start-up, so it models the history from the first ask."""
    import optuna

    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=0)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=0, multivariate=True, constant_liar=True)


def stream_seed(seed: int, cell: CellPrior, stream: str) -> int:
    """A 32-bit seed for one proposal of one cell: the same study seed, cell and history give the same one."""
    digest = hashlib.sha256(f"{seed}:{cell.family}:{cell.budget:.6g}{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
