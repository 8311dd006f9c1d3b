"""The contribution report as data: what every output format and every export is rendered from.

Models are frozen and reject unknown fields, so a report loaded from disk is exactly what was
written, and an export cannot carry a field nobody reviewed for leaks.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, model_validator

from scoring.results import Stability


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Provenance(_Model):
    """Everything needed to reproduce the figures, or to tell why two reports differ; no local
    path of the operator's machine and no shard name (an export must not carry another provider's)."""

    model_name: str  # a hub id, "sample", or the model directory's name
    model_fingerprint: str
    projection_fingerprint: str
    projection: dict  # the projection config (kind, ranks, seed, ...) as stored with the gradients
    store: str  # the store's name ("store.zarr", "s3://…/store.zarr")
    store_version: str  # rows, shards and a digest of the manifest
    storage_precision: str  # how rows are stored (bf16, int8 with a per-row scale, ...)
    # What a PCA projection was fitted on: example count, shard count and a content sha256 (no
    # shard names); None for random projections and stores made before it was recorded.
    projection_calibration: dict | None = None
    fisher_snapshot: int | None  # None: influence without preconditioning
    fisher: dict  # estimator settings (the store's Fisher identity) and the damping alpha
    influence_mode: str
    max_length: int  # tokens per example, longer ones cut from the right
    precision: str  # of the query gradients (fp32, bf16 or fp16 autocast); the nightly logs rows alike
    tokenization: dict  # the bos/eos setting and the special tokens it gave (valuation.data.encoding_settings)
    query_set_sha256: str
    code_version: str  # git:<describe> of a checkout, else the package version
    created_at: datetime
    run_id: str | None = None


class ExampleEvidence(_Model):
    example_id: str
    provider: str
    score: float  # positive: the example lowered the query's loss
    snippet: str


class QueryEvidence(_Model):
    """A provider's own best examples for one query, with its credit on that query."""

    query_id: str
    credit: float
    examples: list[ExampleEvidence]


class ProviderReport(_Model):
    """One provider's figures (valuation.credit.summarise says how each is computed)."""

    provider: str
    share: float  # the headline: its share of the help, every query weighing the same
    share_low: float  # the band (Report.band says how it was obtained)
    share_high: float
    rank: int  # 1 = largest share, among all providers the report covers
    rank_low: int  # the best and worst rank its band allows: providers whose bands overlap tie
    rank_high: int
    net: float  # signed, per-query normalised credit in [-1, 1]: below 0, on balance it hurt
    queries_helped: int
    queries_hurt: int
    total_credit: float  # raw sums of influence: their scale differs from query to query
    positive_credit: float
    examples: int  # examples valued
    top_examples_by_query: list[QueryEvidence]  # its highest-credit queries first

    @property
    def rank_range(self) -> str:
        """"3" when its band overlaps no other provider's, else the ranks it ties over, e.g. "2–4"."""
        return str(self.rank) if self.rank_low == self.rank_high else f"{self.rank_low}–{self.rank_high}"


class ProviderCredit(_Model):
    provider: str
    credit: float


class QueryReport(_Model):
    query_id: str
    snippet: str
    top_providers: list[ProviderCredit]
    top_examples: list[ExampleEvidence]
    score_quantiles: dict[str, float] | None = None  # e.g. {"p50": ..., "p99": ...} over all examples


class CreditMatrix(_Model):
    queries: list[str]
    providers: list[str]
    values: list[list[float]]  # queries x providers

    @model_validator(mode="after")
    def _shape(self) -> CreditMatrix:
        if len(self.values) != len(self.queries) or any(len(r) != len(self.providers) for r in self.values):
            raise ValueError("credit matrix values must be queries x providers")
        return self


class Band(_Model):
    """How share_low/share_high were obtained, so a reader can judge (and reproduce) them."""

    method: str = "bootstrap over queries"
    resamples: int
    seed: int
    low_percentile: float = 5.0  # those of valuation.credit.summarise
    high_percentile: float = 95.0


class ScoreHistogram(_Model):
    """Per provider, counts of its examples' scores in shared bins (the distribution chart)."""

    label: str  # what was binned, e.g. "mean influence over queries"
    bin_edges: list[float]
    counts: dict[str, list[int]]

    @model_validator(mode="after")
    def _bins(self) -> ScoreHistogram:
        if len(self.bin_edges) < 2 or any(len(c) != len(self.bin_edges) - 1 for c in self.counts.values()):
            raise ValueError("each provider needs one count per bin (len(bin_edges) - 1)")
        return self


SCHEMA_VERSION = 3  # 2: per-query weighted shares, rank ranges, stability variants; 3: full provenance


class Report(_Model):
    schema_version: int = SCHEMA_VERSION
    title: str
    scope: str | None = None  # a provider's name in a per-provider export; None for the full report
    providers_total: int  # how many providers the ranks are among (an export lists only its own)
    provenance: Provenance
    band: Band
    providers: list[ProviderReport]
    queries: list[QueryReport]
    credit_matrix: CreditMatrix
    stability: Stability | None = None
    score_histogram: ScoreHistogram | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Report:
        names = [p.provider for p in self.providers]
        if self.providers_total < len(names) or (self.scope is None and self.providers_total != len(names)):
            raise ValueError("providers_total must count the report's providers (all of them, but in an export)")
        if len(set(names)) != len(names):
            raise ValueError("provider names must be unique")
        if self.credit_matrix.providers != names:
            raise ValueError("credit matrix columns must be the report's providers, in order")
        if self.credit_matrix.queries != [q.query_id for q in self.queries]:
            raise ValueError("credit matrix rows must be the report's queries, in order")
        if self.score_histogram and not set(self.score_histogram.counts) <= set(names):
            raise ValueError("score histogram names a provider the report does not have")
        return self

    def provider(self, name: str) -> ProviderReport:
        for p in self.providers:
            if p.provider == name:
                return p
        raise KeyError(f"no provider {name!r} in this report")

    def ranked_providers(self) -> list[ProviderReport]:
        """By rank (largest share first), ties by name: the one order every table and the diff use."""
        return sorted(self.providers, key=lambda p: (p.rank, p.provider))
