"""Timing and peak memory of one piece of work, the same way for every approach compared.

Peak memory is the rise above the level at the start: on a GPU from torch.cuda's allocator
statistics; on a Linux CPU from the process's peak resident set (VmHWM), whose high-water mark is
reset through /proc/self/clear_refs, after returning freed heap to the system (malloc_trim) so
one approach cannot reuse pages another left behind. Elsewhere peak memory is not measured (None).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _release_free_heap() -> None:
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).malloc_trim(0)


def peak_memory_bytes(work: Callable[[], object], device: torch.device) -> int | None:
    """Peak memory above the starting level while `work()` runs (None where it cannot be measured)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        work()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    try:
        _release_free_heap()
        CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident set
        start = _status_kib("VmRSS")
    except OSError:
        return None
    work()
    return (_status_kib("VmHWM") - start) * 1024


@dataclass
class Rounds:
    """Wall and process-CPU seconds of each action, one entry per interleaved round."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.wall.items()}

    def ratios(self, baseline: str, clock: str = "wall") -> dict[str, dict[str, float]]:
        """Per action, baseline time / action time taken round by round (so a slow spell of the
        machine moves both alike): median, min and max over the rounds."""
        times = getattr(self, clock)
        out = {}
        for name, values in times.items():
            per_round = [b / v for b, v in zip(times[baseline], values)]
            out[name] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round)}
        return out


def timed_rounds(actions: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> Rounds:
    """Each action once to warm up, then `repeats` rounds running every action in turn. CPU time
    is the whole process's (all threads): on a shared machine it counts this work, not the wait."""
    def timed(action: Callable[[], object]) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    for action in actions.values():
        action()
    rounds = Rounds({name: [] for name in actions}, {name: [] for name in actions})
    for _ in range(repeats):
        for name, action in actions.items():
            wall, cpu = timed(action)
            rounds.wall[name].append(wall)
            rounds.cpu[name].append(cpu)
    return rounds


def median_seconds(actions: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median wall time of each action over interleaved rounds (see `timed_rounds`)."""
    return timed_rounds(actions, repeats, device).medians()
