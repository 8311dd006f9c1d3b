"""Progress in the run's log (the Prefect UI's Logs tab), not only as a terminal bar.

tqdm bars go to the flow process's stderr, which the UI never shows; a run of hours needs lines
in its own log saying how far it is. Each reporter logs at every `step` of the way (10% by
default) and at the end, so a long run logs about ten lines per stage, whatever its size.
"""

from __future__ import annotations

import logging
from typing import Any

from dask.callbacks import Callback


class RunProgress:
    """Call with the count done so far; logs `what: 40% (80/200 unit)` each time another step is passed."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, what: str, total: int, unit: str,
                 step: float = 0.1):
        self.logger, self.what, self.total, self.unit, self.step = logger, what, total, unit, step
        self._logged = -1

    def __call__(self, done: int) -> None:
        if self.total <= 0:
            return
        reached = int(min(done, self.total) / self.total / self.step + 1e-9)
        if reached > self._logged:
            self._logged = reached
            self.logger.info("%s: %d%% (%d/%d %s)", self.what, 100 * min(done, self.total) // self.total,
                             done, self.total, self.unit)


class DaskProgress(Callback):
    """Dask's local schedulers report each finished task here (a distributed cluster does not:
    its dashboard shows its progress)."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, what: str):
        super().__init__()
        self.logger, self.what = logger, what
        self.progress: RunProgress | None = None

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self.progress = RunProgress(self.logger, self.what, total, "Dask tasks")

    def _posttask(self, key: Any, result: Any, dsk: Any, state: dict[str, Any], worker_id: Any) -> None:
        if self.progress is not None:
            self.progress(len(state["finished"]))
