"""The attribution methods the checks compare, and their scores on a task.

A method is a point in a small space: which gradients (LoGra projections, a dense projection of
full gradients, or the full gradients themselves), which Fisher (empirical, sampled-label "true",
or none), the damping alpha and the mode. LoGra methods run the production code path
(`LoGra.log_batch`, `FisherPartial.snapshot`, `influence_scores`); an ensemble averages the
scores of several projection seeds, each at a lower rank so the total storage stays the same.
LoGra methods of a language model can also track its LM head, or the head and the input
embedding (`embeddings`), which the shipped selection leaves out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from valuation.config import FisherConfig, InitMethod, ProjectionConfig
from valuation.fisher import FisherPartial, FisherSnapshot
from valuation.influence import PreconditionedQueries, influence_scores
from valuation.layout import GradientLayout
from valuation.logra import LoGra
from valuation.objectives import Batch
from valuation.targets import select_modules

from .gradients import Blocks, DenseProjection, exact_scores, per_example_gradients, plain_scores
from .peers import PeerUnavailableError, bm25_scores, ekfac_scores, tfidf_scores
from .tasks.base import Task

Gradients = Literal["logra", "dense", "full", "ekfac", "tfidf", "bm25"]
FisherChoice = Literal["empirical", "true", "exact", "none"]
Mode = Literal["dot", "relatif", "cosine"]
Embeddings = Literal["none", "head", "both"]
EMBEDDING_SUFFIX = {"none": "", "head": "-head", "both": "-head-emb"}
PEERS = ("ekfac", "tfidf", "bm25")  # scored by their own code: rank, Fisher, damping and mode do not apply


class Method(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gradients: Gradients = "logra"
    rank: int = Field(default=16, ge=1, description="k_in = k_out per module (logra, dense)")
    init: InitMethod = "random"
    seeds: tuple[int, ...] = Field(
        default=(0,), min_length=1,
        description="projection seeds; >1: an ensemble. PCA: 0 fits on all training data, s > 0 on the "
        "random half drawn with seed s (what moves PCA credit is the calibration data)",
    )
    fisher: FisherChoice = "empirical"
    samples: int = Field(default=1, ge=1, description="sampled labels per example (fisher='true')")
    damping: float = Field(default=0.1, ge=0)
    mode: Mode = "relatif"
    embeddings: Embeddings = Field(
        default="none",
        description="logra: also track the LM head (head), or the head and the input embedding (both); "
        "where they are tied (GPT-2) the two uses of the one weight are two blocks of the row",
    )

    @model_validator(mode="after")
    def _meaningful(self) -> Method:
        if self.gradients in PEERS:
            return self
        if self.fisher == "none" and self.gradients != "full":
            raise ValueError("without a Fisher only plain gradient products are defined (full gradients)")
        if self.init == "pca" and (self.gradients != "logra" or len(self.seeds) > 1):
            raise ValueError("PCA init is deterministic and LoGra-only: one seed, logra gradients")
        if self.gradients == "full" and self.fisher != "none" and (self.damping <= 0 or self.mode == "cosine"):
            raise ValueError("exact influence needs damping > 0 and is scored by dot or relatif")
        if self.samples > 1 and self.fisher != "true":
            raise ValueError("samples apply to the sampled-label Fisher (fisher='true') only")
        if self.embeddings != "none" and self.gradients != "logra":
            raise ValueError("the LM head and embeddings are tracked by LoGra methods only (gradients='logra')")
        return self

    @property
    def name(self) -> str:
        if self.gradients in PEERS:
            return self.gradients
        if self.fisher == "none":
            return f"grad-{self.mode}"
        tail = f"a{self.damping:g}-{self.mode}"
        fisher = {"empirical": "", "true": "-true", "exact": "-exact"}[self.fisher]
        fisher += str(self.samples) if self.samples > 1 else ""
        if self.gradients == "full":
            return f"exact{fisher}-{tail}"
        seeds = f"x{len(self.seeds)}" if len(self.seeds) > 1 else ""
        head = "logra-" + self.init if self.gradients == "logra" else "dense"
        return f"{head}-r{self.rank}{seeds}{fisher}-{tail}{EMBEDDING_SUFFIX[self.embeddings]}"

    @property
    def fisher_config(self) -> FisherConfig:
        return FisherConfig(estimator="empirical" if self.fisher == "none" else self.fisher, samples=self.samples)


def with_embeddings(projection: ProjectionConfig, model: nn.Module, embeddings: Embeddings) -> ProjectionConfig:
    """`projection` also selecting the model's LM head (transformers' output embedding) and, for
    "both", its input embedding, by exact name: wildcards never pick an embedding."""
    if embeddings == "none":
        return projection
    def get(which: str) -> nn.Module | None:
        return getattr(model, f"get_{which}_embeddings", lambda: None)()

    wanted = [get("output"), *([get("input")] if embeddings == "both" else [])]
    names = [next(n for n, m in model.named_modules() if m is module) for module in wanted if module is not None]
    if len(names) < len(wanted):
        raise ValueError(f"{type(model).__name__} has no LM head or input embedding to track ({embeddings})")
    return projection.model_copy(update={
        "modules": [*projection.modules, *names],
        "exclude": [p for p in projection.exclude if not any(fnmatchcase(n, p) for n in names)],
    })


def half_of(batches: Sequence[Batch], n_train: int, seed: int) -> list[Batch]:
    """The batches cut to a random half of the training examples (drawn with `seed`)."""
    keep = np.zeros(n_train, dtype=bool)
    keep[np.random.default_rng(seed).choice(n_train, size=n_train // 2, replace=False)] = True
    out: list[Batch] = []
    start = 0
    for batch in batches:
        size = len(batch["example_ids"])
        rows = np.flatnonzero(keep[start : start + size])
        start += size
        if rows.size:
            out.append({k: v[torch.as_tensor(rows)] if isinstance(v, torch.Tensor) else [v[i] for i in rows]
                        for k, v in batch.items()})
    return out


@dataclass
class LoggedRows:
    layout: GradientLayout
    train: torch.Tensor  # data-label gradients: what the store keeps
    fisher: torch.Tensor  # what the Fisher sums
    queries: torch.Tensor


class Scorer:
    """Scores (queries x train, float64 numpy) of methods on one task; gradients that several
    methods need are computed once."""

    def __init__(self, task: Task):
        self.task = task
        self._logged: dict[tuple, LoggedRows] = {}
        # The last Fisher snapshot only: methods that differ just in mode come one after the other,
        # and keeping every (rows, alpha) snapshot of a large grid would hold gigabytes.
        self._snapshot: tuple[tuple, FisherSnapshot] | None = None
        self._full: tuple[Blocks, Blocks] | None = None
        self._full_fisher: dict[str, Blocks] = {}  # the last estimator's only: they are large

    def scores(self, method: Method) -> np.ndarray:
        """Raises PeerUnavailableError when a peer cannot run here (a missing extra, no texts)."""
        if method.gradients in PEERS:
            return self._peer(method.gradients)
        if method.gradients == "full":
            train, queries = self.full_gradients()
            if method.fisher == "none":
                return plain_scores(train, queries, method.mode).numpy()
            fisher = None if method.fisher == "empirical" else self.full_fisher_gradients(method.fisher_config)
            return exact_scores(train, queries, method.damping, method.mode, fisher).numpy()
        return torch.stack([self._seed_scores(method, seed) for seed in method.seeds]).mean(dim=0).numpy()

    def _peer(self, name: str) -> np.ndarray:
        task = self.task
        if name == "ekfac":
            modules = list(select_modules(task.model, task.projection))
            return ekfac_scores(task.model, task.objective, modules, task.train_batches, task.query_batches)
        if task.train_texts is None or task.query_texts is None:
            raise PeerUnavailableError(f"task {task.name} has no texts for {name}")
        lexical = tfidf_scores if name == "tfidf" else bm25_scores
        return lexical(task.train_texts, task.query_texts)

    def _seed_scores(self, method: Method, seed: int) -> torch.Tensor:
        key = (method.gradients, method.rank, method.init, seed, method.fisher, method.samples, method.embeddings)
        if key not in self._logged:
            self._logged[key] = self._log(method, seed) if method.gradients == "logra" else self._dense(method, seed)
        rows = self._logged[key]
        if self._snapshot is None or self._snapshot[0] != (key, method.damping):
            partial = FisherPartial.zeros(rows.layout).update(rows.fisher)
            self._snapshot = ((key, method.damping), partial.snapshot(method.damping))
        snapshot = self._snapshot[1]
        queries = PreconditionedQueries.build(rows.queries, snapshot)
        return influence_scores(queries, rows.train, method.mode, snapshot.self_influence(rows.train))

    def _projection(self, method: Method, seed: int):
        tracked = with_embeddings(self.task.projection, self.task.model, method.embeddings)
        return tracked.model_copy(
            update={"rank_in": method.rank, "rank_out": method.rank, "init": "random", "seed": seed}
        )

    def _log(self, method: Method, seed: int) -> LoggedRows:
        task, config = self.task, self._projection(method, seed)
        # A seed redraws the sampled labels too, as `dataworth stability` does (seed 0: the defaults').
        fisher = method.fisher_config.model_copy(update={"sample_seed": seed})
        if method.init == "pca":
            calibration = task.train_batches if seed == 0 else half_of(task.train_batches, task.n_train, seed)
            logra = LoGra.with_pca(task.model, config, calibration, task.objective, fisher)
        else:
            logra = LoGra(task.model, config)
        try:
            logged = [logra.log_batch(b, task.objective, fisher=fisher) for b in task.train_batches]
            queries = torch.cat([logra.log_batch(b, task.objective).rows for b in task.query_batches])
        finally:
            logra.remove()
        return LoggedRows(
            logra.layout,
            torch.cat([part.rows for part in logged]),
            torch.cat([part.fisher_rows for part in logged]),
            queries,
        )

    def _dense(self, method: Method, seed: int) -> LoggedRows:
        with LoGra(self.task.model, self._projection(method, seed)) as logra:
            layout = logra.layout  # only its sizes: the dense rows take LoGra's storage per module
        train, queries = self.full_gradients()
        project = DenseProjection.for_blocks(train, layout, seed)
        rows = project(train)
        fisher = rows
        if method.fisher != "empirical":
            draws = self.full_fisher_gradients(method.fisher_config)
            n, k = rows.shape[0], rows.shape[1]
            fisher = project({name: g.reshape(-1, g.shape[-1]) for name, g in draws.items()}).reshape(n, -1, k)
        return LoggedRows(layout, rows, fisher, project(queries))

    def _modules(self):
        return select_modules(self.task.model, self.task.projection)

    def full_gradients(self) -> tuple[Blocks, Blocks]:
        if self._full is None:
            task = self.task
            self._full = (
                per_example_gradients(task.model, self._modules(), task.train_batches, task.objective),
                per_example_gradients(task.model, self._modules(), task.query_batches, task.objective),
            )
        return self._full

    def full_fisher_gradients(self, fisher: FisherConfig) -> Blocks:
        """Full per-example gradients of the estimator's label draws (examples x draws x weights)."""
        key = fisher.model_dump_json()
        if key not in self._full_fisher:
            task = self.task
            self._full_fisher = {key: per_example_gradients(task.model, self._modules(), task.train_batches,
                                                            task.objective, fisher)}
        return self._full_fisher[key]
