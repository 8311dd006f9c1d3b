"""Flow parameters: each flow takes the fields of one model below as its own top-level parameters.

Prefect merges a run's parameters over its deployment's defaults one top-level key at a time, so
a run started with `{"mode": "relatif"}` (UI, CLI, API, automation) changes the mode alone and
keeps the deployment's workspace, landing and model. Groups of settings (workspace, model,
projection, Fisher, refresh policy) stay pydantic models, each a section of the UI form; a group
given in part replaces that whole group, as a default object would. A flow's signature and its
model name the same fields from one definition each (`param`), and tests/test_params.py keeps
them equal.

Every path is a string so the same parameters work for local paths and fsspec URLs, and a
deployment's stored parameters stay plain JSON.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from sample import QUERIES_PATH, SHARDS_DIR
from scoring.engine import TASK_ROWS
from valuation.config import DEFAULT_MODE, FisherConfig, InfluenceMode, ProjectionConfig
from valuation.data import SpecialTokenRule, SpecialTokens

SAMPLE_MODEL = "sample"


class Workspace(BaseModel):
    """Where a valuation keeps its state: the gradient store, models, quarantine and reports."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str = Field(default=".dataworth", description="directory holding all of the state below")
    store: str = Field(default="", description="the gradient store's URL, e.g. s3://bucket/dataworth/store.zarr "
                       "shared by the workers of several machines; empty: <root>/store.zarr")

    @property
    def path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    @property
    def key(self) -> str:
        """This workspace in artifact keys (lowercase letters, digits, dashes): its directory's name
        and a hash of its path, so the artifacts of two workspaces never share a key."""
        name = re.sub(r"[^a-z0-9]+", "-", self.path.name.lower()).strip("-")[:24] or "workspace"
        return f"{name}-{hashlib.sha256(str(self.path).encode()).hexdigest()[:8]}"

    @property
    def store_url(self) -> str:
        return self.store or str(self.path / "store.zarr")

    @property
    def models(self) -> Path:
        return self.path / "models"

    @property
    def quarantine(self) -> Path:
        return self.path / "quarantine"

    @property
    def reports(self) -> Path:
        return self.path / "reports"

    @property
    def stability(self) -> Path:
        """The latest stability measurement (nightly when due, or `dataworth stability`), shown on reports."""
        return self.path / "stability.json"


class ModelParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name_or_path: str = Field(
        default=SAMPLE_MODEL,
        description="'sample' (a tiny GPT-2 trained on the bundled corpus on first use), "
        "or a local directory saved with save_pretrained",
    )
    device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    devices: list[str] = Field(
        default=[], description="shards fan out over these devices, one logging task each at a time "
        "(e.g. cuda:0, cuda:1); empty: just `device`",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 autocast on GPU, fp32 on CPU"
    )
    batch_size: int = Field(default=16, ge=1, description="examples per forward/backward pass; lower it when "
                            "memory runs out")
    max_length: int = Field(default=256, ge=8, description="tokens per example; longer are truncated")
    bos: SpecialTokenRule = Field(
        default="auto", description="BOS before each text and prompt: auto (what the tokenizer adds, as the "
        "model's config says), add (always its bos_token), omit (none); an existing store keeps its own",
    )
    eos: SpecialTokenRule = Field(
        default="auto", description="EOS ending each text and each response: auto (what the tokenizer adds "
        "after a text, and its eos_token after responses), add (always its eos_token), omit (none); "
        "an existing store keeps its own",
    )

    @property
    def special_tokens(self) -> SpecialTokens:
        return SpecialTokens(bos=self.bos, eos=self.eos)


class RefreshPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min_new_fraction: float = Field(
        default=0.1, ge=0.0, description="refresh when rows added since the last snapshot exceed this fraction"
    )
    max_age_hours: float = Field(default=24 * 7, gt=0, description="refresh a snapshot older than this")
    force: bool = Field(default=False, description="refresh now whatever the above say")


class StabilityPolicy(BaseModel):
    """When the nightly run measures how much credit moves with the projection (docs/operations.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="measure in the nightly run when due (before scoring)")
    variants: list[int] = Field(
        default=[0, 1, 2], min_length=2, description="projection seeds (PCA init: seeds of the calibration halves), "
        "also seeding the sampled labels (true Fisher)"
    )
    max_age_hours: float = Field(default=24 * 7, gt=0, description="measure again when the last is older than this")
    max_examples: int = Field(
        default=2000, ge=2, description="a seeded sample of the landing shards' examples to measure on: "
        "the cost is one logging pass over them per variant",
    )


# Limits of the top-level numbers live in their types: Prefect builds a flow's schema (the UI form
# and the API's check of a run's parameters) from each parameter's annotation, default and
# description, and drops the limits of a Field default.
TopK = Annotated[int, Field(ge=1, le=100)]

# One definition of each top-level flow parameter: the models below and the flows' signatures
# (flows/*.py) each take a fresh FieldInfo of it (pydantic must not share one between models).
_PARAMETERS: dict[str, dict[str, Any]] = {
    "workspace": dict(default=Workspace(), description="where the store, models, quarantine and reports live"),
    "landing": dict(default=str(SHARDS_DIR),
                    description="directory (or fsspec URL) where new shards (*.jsonl, *.parquet) arrive"),
    "queries": dict(default=str(QUERIES_PATH), description="JSONL of the model outputs to value"),
    "model": dict(default=ModelParams(), description="the model whose training data is valued, and how it runs"),
    "projection": dict(
        default=ProjectionConfig(),
        description="LoGra projection of a NEW store; an existing store keeps its own (another needs a new workspace)",
    ),
    # The core's defaults (eight sampled labels per token; docs/evaluation.md says why).
    "fisher": dict(default=FisherConfig(), description="Fisher estimator of a NEW store (an existing store keeps "
                   "its own); damping applies at the next refresh"),
    "calibration_examples": dict(
        default=512, description="PCA init: the store's projection is fitted on up to this many of the "
        "first night's valid examples, taken in turn from each of its shards (recorded in the store and reports)",
    ),
    "refresh": dict(default=RefreshPolicy(), description="when the Fisher snapshot is recomputed"),
    "stability": dict(default=StabilityPolicy(), description="when the nightly run measures how much credit moves "
                      "with the projection (shown on reports)"),
    "max_shard_mb": dict(default=256.0, description="larger shards are quarantined"),
    "settle_seconds": dict(
        default=60.0, description="a shard modified less than this many seconds ago may still be uploading: "
        "it waits for a later run (0: take every shard at once; see docs/operations.md, landing shards)",
    ),
    "damping": dict(default=FisherConfig().damping, description="alpha in lambda = alpha * mean eigenvalue"),
    "generate_max_new_tokens": dict(
        default=64, description="queries with a prompt and no response get the model's greedy response "
        "of up to this many tokens first (0: such queries are an error)",
    ),
    "mode": dict(default=DEFAULT_MODE, description="influence mode: dot (best on the real tasks of "
                 "docs/evaluation.md), cosine or relatif"),
    "snapshot": dict(default=None, description="Fisher snapshot version to score with; the latest when empty"),
    "top_k": dict(default=5, description="top training examples shown per query and per provider"),
    "task_rows": dict(default=TASK_ROWS, description="rows per Dask task, in whole store chunks"),
    "dask_address": dict(
        default=None, description="Dask scheduler to score on, one of those the worker allows "
        "(DATAWORTH_DASK_ADDRESSES); local threads when empty",
    ),
}


def param(name: str) -> Any:
    """A fresh pydantic Field of the flow parameter `name`, for a model or a flow's signature."""
    return Field(**_PARAMETERS[name])


class IngestParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: Workspace = param("workspace")
    landing: str = param("landing")
    model: ModelParams = param("model")
    projection: ProjectionConfig = param("projection")
    fisher: FisherConfig = param("fisher")
    calibration_examples: PositiveInt = param("calibration_examples")
    max_shard_mb: PositiveFloat = param("max_shard_mb")
    settle_seconds: NonNegativeFloat = param("settle_seconds")


class RefreshParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: Workspace = param("workspace")
    damping: NonNegativeFloat = param("damping")
    policy: RefreshPolicy = param("refresh")


class ScoreParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: Workspace = param("workspace")
    queries: str = param("queries")
    generate_max_new_tokens: NonNegativeInt = param("generate_max_new_tokens")
    model: ModelParams = param("model")
    mode: InfluenceMode = param("mode")
    snapshot: int | None = param("snapshot")
    top_k: TopK = param("top_k")
    task_rows: PositiveInt = param("task_rows")
    dask_address: str | None = param("dask_address")


class NightlyParams(BaseModel):
    """Ingest new shards, refresh the Fisher if due, score the standing queries, publish reports."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: Workspace = param("workspace")
    landing: str = param("landing")
    queries: str = param("queries")
    model: ModelParams = param("model")
    projection: ProjectionConfig = param("projection")
    fisher: FisherConfig = param("fisher")
    calibration_examples: PositiveInt = param("calibration_examples")
    refresh: RefreshPolicy = param("refresh")
    stability: StabilityPolicy = param("stability")
    max_shard_mb: PositiveFloat = param("max_shard_mb")
    settle_seconds: NonNegativeFloat = param("settle_seconds")
    generate_max_new_tokens: NonNegativeInt = param("generate_max_new_tokens")
    mode: InfluenceMode = param("mode")
    top_k: TopK = param("top_k")
    dask_address: str | None = param("dask_address")

    def ingest(self) -> IngestParams:
        return IngestParams(workspace=self.workspace, landing=self.landing, model=self.model,
                            projection=self.projection, fisher=self.fisher,
                            calibration_examples=self.calibration_examples, max_shard_mb=self.max_shard_mb,
                            settle_seconds=self.settle_seconds)

    def refresh_fisher(self) -> RefreshParams:
        return RefreshParams(workspace=self.workspace, damping=self.fisher.damping, policy=self.refresh)

    def score(self) -> ScoreParams:
        return ScoreParams(workspace=self.workspace, queries=self.queries, model=self.model,
                           generate_max_new_tokens=self.generate_max_new_tokens, mode=self.mode, top_k=self.top_k,
                           dask_address=self.dask_address)


def flow_kwargs(params: BaseModel) -> dict[str, Any]:
    """A parameters model as the keyword arguments of its flow: its top-level fields, groups kept as models."""
    return dict(params)
