"""Retraining, the expensive half of every counterfactual check, and its resumable record.

A retrain function trains the task's model on a subset of the training examples and returns the
loss of every query under the retrained model:

    retrain(train_indices: np.ndarray, seed: int) -> np.ndarray   # one loss per query

It may be a Python callable or a shell command (`CommandRetrain`). `OutcomeCache` keys each
outcome by the content of the subset and the seed, so LDS, brittleness and leave-one-provider-out
share retrains of the same subset, and writes a JSON checkpoint after every retrain: a killed run
picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

CHECKPOINT_FORMAT = "dataworth-eval-checkpoint/1"


class Retrain(Protocol):
    def __call__(self, train_indices: np.ndarray, seed: int) -> np.ndarray: ...


class RetrainError(RuntimeError):
    pass


@dataclass(frozen=True)
class CommandRetrain:
    """Retrain by running a shell command.

    Placeholders: `{indices}`, a JSON file holding the list of training indices to train on;
    `{seed}`, the retrain's seed; `{output}`, where the command must write the query losses as
    a JSON list of numbers, in query order. Paths are shell-quoted.
    """

    command: str
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        missing = [p for p in ("{indices}", "{output}") if p not in self.command]
        if missing:
            raise ValueError(f"retrain command needs the placeholders {', '.join(missing)}: {self.command!r}")

    def __call__(self, train_indices: np.ndarray, seed: int) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="dataworth-retrain-") as tmp:
            indices_path, output_path = Path(tmp) / "indices.json", Path(tmp) / "losses.json"
            indices_path.write_text(json.dumps(np.asarray(train_indices, dtype=np.int64).tolist()))
            # Only our three placeholders: the command may hold other braces (shell, JSON).
            command = (
                self.command.replace("{indices}", shlex.quote(str(indices_path)))
                .replace("{output}", shlex.quote(str(output_path)))
                .replace("{seed}", str(int(seed)))
            )
            done = subprocess.run(
                command, shell=True, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
            if done.returncode != 0:
                raise RetrainError(f"retrain command exited with {done.returncode}: {command}\n{done.stderr[-2000:]}")
            try:
                return np.asarray(json.loads(output_path.read_text()), dtype=np.float64)
            except (OSError, ValueError) as err:
                raise RetrainError(f"retrain command wrote no readable JSON list to {{output}}: {err}") from None


def subset_key(train_indices: np.ndarray, seed: int) -> str:
    """Identity of one retrain: the set of training indices (order-free) and the seed."""
    indices = np.unique(np.asarray(train_indices, dtype="<i8"))
    return f"{hashlib.sha256(indices.tobytes()).hexdigest()[:20]}-n{indices.size}-s{int(seed)}"


class OutcomeCache:
    """Query losses per (subset, seed), retrained on first request and checkpointed to `path`.

    `identity` says what the outcomes are outcomes of (task, its configuration, the retrain
    command); a checkpoint written under another identity is refused rather than mixed in.
    """

    def __init__(self, retrain: Retrain, n_queries: int, identity: dict[str, Any], path: str | Path | None = None):
        self.retrain = retrain
        self.n_queries = n_queries
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        self.path = Path(path) if path is not None else None
        self.outcomes: dict[str, list[float]] = {}
        self.reused = 0
        self.retrained = 0
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None  # only called with a checkpoint path
        saved = json.loads(self.path.read_text())
        if saved.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.path} is not a dataworth evaluation checkpoint")
        if saved["identity"] != self.identity:
            raise ValueError(
                f"{self.path} holds retrains of another task or configuration; "
                f"use another checkpoint path (saved: {saved['identity']}, now: {self.identity})"
            )
        self.outcomes = saved["outcomes"]

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(self.path.name + ".tmp")
        payload = {"format": CHECKPOINT_FORMAT, "identity": self.identity, "outcomes": self.outcomes}
        staging.write_text(json.dumps(payload))
        os.replace(staging, self.path)  # a crash mid-write leaves the previous checkpoint whole

    def run(self, jobs: Sequence[tuple[np.ndarray, int]], desc: str) -> None:
        """Do every (subset, seed) retrain not yet done, with a progress bar over all of them."""
        with tqdm(jobs, desc=desc, unit="retrain", leave=False) as bar:
            for indices, seed in bar:
                if subset_key(indices, seed) in self.outcomes:
                    self.reused += 1  # done by an earlier check or an earlier (interrupted) run
                else:
                    self.losses(indices, seed)

    def losses(self, train_indices: np.ndarray, seed: int) -> np.ndarray:
        key = subset_key(train_indices, seed)
        if key in self.outcomes:
            return np.asarray(self.outcomes[key])
        losses = np.asarray(self.retrain(np.unique(np.asarray(train_indices, dtype=np.int64)), seed), dtype=np.float64)
        if losses.shape != (self.n_queries,):
            raise RetrainError(
                f"retrain returned shape {losses.shape}, expected one loss per query ({self.n_queries},)"
            )
        if not np.isfinite(losses).all():
            raise RetrainError(f"retrain on {key} returned non-finite query losses (did training diverge?)")
        self.outcomes[key] = losses.tolist()
        self.retrained += 1
        self._save()
        return losses

    def mean_losses(self, train_indices: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """Query losses averaged over retrains with each seed: averaging cancels training noise."""
        return np.mean([self.losses(train_indices, s) for s in seeds], axis=0)
