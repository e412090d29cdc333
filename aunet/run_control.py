"""What a training process does around its steps, for the trainer and the packed trainer alike: it turns
preemption signals into a checkpoint at the next step boundary, and shows its progress."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from typing import Any

log = logging.getLogger("aunet.train")

PREEMPT_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class PreemptionGuard:
    """Turns SIGUSR2/SIGTERM into a flag checked between steps, then hands the signal on.

    The previous handlers (submitit's requeue logic) run after our checkpoint is safe.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionGuard:
        for sig in PREEMPT_SIGNALS:
            with contextlib.suppress(ValueError):  # not in the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("received signal %d: checkpointing at the next step boundary", signum)
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def hand_on(self) -> None:
        """Call the handler that was there before ours (submitit requeues the job there)."""
        previous = self._previous.get(self.signum)
        if callable(previous):
            previous(self.signum, None)


class Progress:
    """tqdm bar on a terminal, periodic log lines otherwise."""

    def __init__(self, mode: str, total: int, start: int, active: bool):
        self.bar = None
        self.active = active and mode != "off"
        self.log_lines = mode == "log" or (mode == "auto" and not sys.stderr.isatty())
        self.total = total
        self.start_time = time.time()
        self.start_step = start
        self.bytes = 0.0
        if self.active and not self.log_lines:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, loss: float, step_bytes: float) -> None:
        if not self.active:
            return
        self.bytes += step_bytes
        elapsed = max(time.time() - self.start_time, 1e-9)
        rate = self.bytes / elapsed
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", bytes_s=f"{rate:,.0f}")
        elif step % max(1, self.total // 20) == 0 or step == self.total:
            eta = elapsed / max(step - self.start_step, 1) * (self.total - step)
            log.info("step %d/%d loss %.4f %.0f bytes/s eta %.0fs", step, self.total, loss, rate, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
