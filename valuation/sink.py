"""Where logged rows go: a small protocol, so training-loop integrations need no storage code.

    sink.open(session)                                 # once, before the first rows
    sink.write(logged)                                 # a LoggedBatch: rows, Fisher rows, ids, tokens
    sink.close()                                       # the rows are all handed over after this

`storage.sink.StoreSink` writes into a GradientStore; `ListSink` keeps the rows in memory.
`log_into_sink` runs the whole thing after (or without) training; `valuation.hf.LoGraCallback`
calls it when a Hugging Face Trainer finishes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

from .config import FisherConfig, ProjectionConfig
from .data import to_device
from .fingerprint import model_fingerprint
from .fisher import FisherPartial
from .logra import LoggedBatch, LoGra
from .objectives import Batch, CausalLMObjective, Objective, resolve_fisher
from .spec import ProjectionSpec

Projections = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LogSession:
    """What rows logged together share: a sink needs it to keep them (and check them) correctly."""

    spec: ProjectionSpec
    model_fingerprint: dict
    projections: Projections  # (P_in, P_out) per module: needed to rebuild PCA projections
    fisher: FisherConfig  # how the Fisher rows were made
    calibration: dict | None = None  # what a PCA projection was fitted on (None: random init)


class RowSink(Protocol):
    def open(self, session: LogSession) -> None: ...

    def write(self, logged: LoggedBatch) -> None: ...

    def close(self) -> None: ...


class ListSink:
    """Keeps every logged batch in memory: for notebooks, tests and small runs."""

    def __init__(self) -> None:
        self.session: LogSession | None = None
        self.batches: list[LoggedBatch] = []
        self.closed = False

    def open(self, session: LogSession) -> None:
        self.session, self.batches, self.closed = session, [], False

    def write(self, logged: LoggedBatch) -> None:
        self.batches.append(logged)

    def close(self) -> None:
        self.closed = True

    @property
    def rows(self) -> torch.Tensor:
        return torch.cat([b.rows for b in self.batches])

    @property
    def ids(self) -> list[str] | None:
        named = [b.ids for b in self.batches]
        return None if any(ids is None for ids in named) else [i for ids in named if ids for i in ids]

    def fisher(self) -> FisherPartial:
        """Fisher partial sums of everything written."""
        if self.session is None:
            raise RuntimeError("nothing was logged into this sink")
        partial = FisherPartial.zeros(self.session.spec.layout)
        for b in self.batches:
            partial.update(b.fisher_rows)
        return partial


def log_into_sink(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    sink: RowSink,
    config: ProjectionConfig | None = None,
    *,
    objective: Objective | None = None,
    fisher: FisherConfig | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> LoGra:
    """Log every batch's rows into `sink` (opened first, closed after the last batch) and take the
    add-ons out again, also on failure; a failed run leaves the sink unclosed (what it committed
    stays: a StoreSink re-run adds the rest). PCA init fits its projections on `batches` first
    (one more pass). Batches carry `example_ids`. Returns the removed LoGra (`spec`, `layout`)."""
    config = config or ProjectionConfig()
    objective = objective or CausalLMObjective()
    fisher = resolve_fisher(fisher, objective)  # the store records the estimator "auto" stood for
    was_training = model.training
    model.eval()  # dropout off: a row is the gradient of the model as it predicts
    fingerprint = model_fingerprint(model)
    device = next(model.parameters()).device
    try:
        calibration = None
        if config.init == "pca":
            ids: list[str] = []

            def calibration_batches() -> Iterator[Batch]:
                for batch in batches:
                    ids.extend(str(i) for i in batch["example_ids"])
                    yield to_device(dict(batch), device)

            logra = LoGra.with_pca(model, config, calibration_batches(), objective, fisher)
            digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
            calibration = {"examples": len(ids), "example_ids_sha256": digest}  # every batch: the PCA's data
        else:
            logra = LoGra(model, config)
        try:
            sink.open(LogSession(logra.spec, fingerprint, logra.projections(), fisher, calibration))
            for batch in batches:
                sink.write(logra.log_batch(to_device(dict(batch), device), objective, fisher=fisher,
                                           autocast_dtype=autocast_dtype))
            sink.close()
        finally:
            logra.remove()
    finally:
        model.train(was_training)
    return logra
