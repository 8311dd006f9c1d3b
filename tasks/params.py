"""Flow parameters as pydantic models: the Prefect UI renders each as a form with defaults.

Every path is a string so the same parameters work for local paths and fsspec URLs, and a
deployment's stored parameters stay plain JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sample import QUERIES_PATH, SHARDS_DIR
from scoring.engine import TASK_ROWS
from valuation.config import DEFAULT_MODE, FisherConfig, InfluenceMode, ProjectionConfig

SAMPLE_MODEL = "sample"


def _calibration_examples() -> int:
    return Field(  # PCA init (the default): what the store's projection is fitted on, once
        default=512, ge=1, description="PCA init: the store's projection is fitted on up to this many of the "
        "first night's valid examples, taken in turn from each of its shards (recorded in the store and reports)",
    )


def _settle_seconds() -> float:
    return Field(  # one definition for the ingest and nightly parameters (a fresh FieldInfo for each)
        default=60.0, ge=0, description="a shard modified less than this many seconds ago may still be uploading: "
        "it waits for a later run (0: take every shard at once; see docs/operations.md, landing shards)",
    )


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
    batch_size: int = Field(default=16, ge=1)
    max_length: int = Field(default=256, ge=8, description="tokens per example; longer are truncated")


class IngestParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: Workspace = Workspace()
    landing: str = Field(
        default=str(SHARDS_DIR),
        description="directory (or fsspec URL) where new shards (*.jsonl, *.parquet) arrive",
    )
    model: ModelParams = ModelParams()
    projection: ProjectionConfig = ProjectionConfig()
    # The core's defaults (four sampled labels per token; docs/evaluation.md says why).
    fisher: FisherConfig = FisherConfig()
    calibration_examples: int = _calibration_examples()
    max_shard_mb: float = Field(default=256.0, gt=0, description="larger shards are quarantined")
    settle_seconds: float = _settle_seconds()


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
        default=[0, 1, 2], min_length=2, description="projection seeds (PCA init: seeds of the calibration halves)"
    )
    max_age_hours: float = Field(default=24 * 7, gt=0, description="measure again when the last is older than this")
    max_examples: int = Field(
        default=2000, ge=2, description="a seeded sample of the landing shards' examples to measure on: "
        "the cost is one logging pass over them per variant",
    )


class RefreshParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: Workspace = Workspace()
    damping: float = Field(default=FisherConfig().damping, ge=0.0,
                           description="alpha in lambda = alpha * mean eigenvalue")
    policy: RefreshPolicy = RefreshPolicy()


class ScoreParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: Workspace = Workspace()
    queries: str = Field(default=str(QUERIES_PATH), description="JSONL of model outputs to value")
    generate_max_new_tokens: int = Field(
        default=64, ge=0, description="queries with a prompt and no response get the model's greedy response "
        "of up to this many tokens first (0: such queries are an error)",
    )
    model: ModelParams = ModelParams()
    mode: InfluenceMode = Field(default=DEFAULT_MODE, description="dot (best on the real tasks of docs/evaluation.md), "
                                "cosine or relatif")
    snapshot: int | None = Field(default=None, description="Fisher snapshot version; latest when empty")
    top_k: int = Field(default=5, ge=1, le=100)
    task_rows: int = Field(default=TASK_ROWS, ge=1, description="rows per Dask task, in whole store chunks")
    dask_address: str | None = Field(default=None, description="distributed scheduler address; threads when empty")


class NightlyParams(BaseModel):
    """Ingest new shards, refresh the Fisher if due, score the standing queries, publish reports."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: Workspace = Workspace()
    landing: str = IngestParams.model_fields["landing"].default
    queries: str = ScoreParams.model_fields["queries"].default
    model: ModelParams = ModelParams()
    projection: ProjectionConfig = ProjectionConfig()
    fisher: FisherConfig = FisherConfig()
    calibration_examples: int = _calibration_examples()
    refresh: RefreshPolicy = RefreshPolicy()
    stability: StabilityPolicy = StabilityPolicy()
    settle_seconds: float = _settle_seconds()
    mode: InfluenceMode = DEFAULT_MODE
    top_k: int = Field(default=5, ge=1, le=100)
    dask_address: str | None = None

    def ingest(self) -> IngestParams:
        return IngestParams(workspace=self.workspace, landing=self.landing, model=self.model,
                            projection=self.projection, fisher=self.fisher,
                            calibration_examples=self.calibration_examples, settle_seconds=self.settle_seconds)

    def refresh_fisher(self) -> RefreshParams:
        return RefreshParams(workspace=self.workspace, damping=self.fisher.damping, policy=self.refresh)

    def score(self) -> ScoreParams:
        return ScoreParams(workspace=self.workspace, queries=self.queries, model=self.model,
                           mode=self.mode, top_k=self.top_k, dask_address=self.dask_address)
