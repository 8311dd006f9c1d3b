"""What a counterfactual check needs from a task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from valuation.config import ProjectionConfig
from valuation.objectives import Batch, Objective

from ..retrain import Retrain


@dataclass
class Task:
    """A model trained on the whole training set, its data, and how to retrain it on a subset.

    `model` must be what `retrain(all indices, seed=0)` trains: the methods value the data for
    this model, the retrains measure what the data did to it. Batches carry `example_ids`.
    """

    name: str
    model: nn.Module
    objective: Objective
    train_batches: Sequence[Batch]  # every training example once, in index order
    query_batches: Sequence[Batch]
    providers: list[str]  # per training example
    query_ids: list[str]
    retrain: Retrain
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)  # tracked modules; methods set ranks
    identity: dict[str, Any] = field(default_factory=dict)  # the configuration that fixes the retrains
    # The documents as text, for the lexical peers (TF-IDF, BM25); None where there is no text.
    train_texts: list[str] | None = None
    query_texts: list[str] | None = None

    @property
    def n_train(self) -> int:
        return len(self.providers)

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)
