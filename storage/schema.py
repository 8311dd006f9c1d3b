"""The store's layout on disk: node names, the identity attributes and the per-row metadata.

    <store>/                      root group; attrs["dataworth"] = StoreAttributes
      rows                        N x K, storage dtype of the codec, chunked by rows
      row_scale                   N float32 (scaled precisions only)
      meta/example_id|provider|shard|snippet   N strings;  meta/n_tokens  N int64
      manifest/                   attrs["entries"]: committed shards, in row order, and
                                  attrs["totals"]: which totals group sums them (the commit point)
      totals/t<n>/                running sums over the n committed shards: fisher (float64),
                                  provider_sums, provider_rows (one generation, two mid-commit)
      snapshots/                  attrs["versions"]: registered Fisher snapshots
      snapshots/v000001/          eigvals, eigvecs; derived/d<k>/ self_influence, normalised sums
      staging/<worker>/<hash>/    a parallel logger's rows, waiting for the committer

Rows beyond the manifest's last entry are an uncommitted tail: readers never see it and the next
commit cuts it off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, ConfigDict

from valuation.config import FisherConfig
from valuation.layout import GradientLayout
from valuation.spec import ProjectionSpec

from .codecs import CodecConfig
from .errors import RowsInvalidError

SCHEMA_VERSION = 2  # 1: a Fisher partial per shard (storage/migrate.py upgrades it)
ATTRS_KEY = "dataworth"

ROWS = "rows"
ROW_SCALE = "row_scale"
META = "meta"
STRING_COLUMNS = ("example_id", "provider", "shard", "snippet")
SNIPPET_CHARS = 512  # reports show ~160; whole documents would outweigh the gradients
INT_COLUMNS = ("n_tokens",)
MANIFEST = "manifest"
TOTALS = "totals"
SNAPSHOTS = "snapshots"
STAGING = "staging"

_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_node_name(value: str, what: str) -> str:
    """Shard hashes and worker ids become Zarr node names: keep them path- and URL-safe."""
    if not _NODE_NAME.match(value):
        raise RowsInvalidError(
            f"{what} {value!r} must be 1-200 characters of letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    return value


class StoreAttributes(BaseModel):
    """What the rows are: written once at creation, checked before every append."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int
    model_fingerprint: dict[str, Any]
    projection_spec: dict[str, Any]
    codec: CodecConfig
    chunk_rows: int
    created_at: str
    code_version: str
    # Fisher sums of different estimators must not be added up: part of the identity.
    fisher: dict[str, Any]
    # What a PCA projection was fitted on (shards, example count, content hash); None for random
    # projections, and for stores made before it was recorded.
    calibration: dict[str, Any] | None = None
    # The BOS/EOS setting its rows were tokenised with and the special tokens it resolved to
    # (valuation.data.Encoder.identity); None for stores made before it was recorded, whose rows
    # got the tokenizer's own (bos and eos "auto").
    encoding: dict[str, Any] | None = None

    @property
    def fisher_estimator(self) -> str:
        return str(self.fisher["estimator"])

    @property
    def spec(self) -> ProjectionSpec:
        return ProjectionSpec.from_dict(self.projection_spec)

    @property
    def layout(self) -> GradientLayout:
        return GradientLayout.from_dict(self.projection_spec["layout"])


# What an estimator setting was before its field existed: a stored identity that lacks the field
# was written then, and its sums were made that way (one label per token before `samples`).
LEGACY_FISHER_FIELDS: dict[str, Any] = {"samples": 1}
SAMPLED_LABEL_FIELDS = ("samples", "sample_seed")  # meaningful to the sampled-label estimator only


def fisher_identity(config: FisherConfig | dict[str, Any] | None) -> dict[str, Any]:
    """Everything of a FisherConfig that changes what the summed rows are: all of it but the
    damping (applied only when a snapshot is built), and the sampled-label settings only for the
    sampled-label estimator, so an empirical store never refuses rows over a seed it never used.
    New fields join the identity by default; a stored identity without one was written before the
    field existed and gets its value of that time (LEGACY_FISHER_FIELDS), never today's default."""
    if isinstance(config, FisherConfig):
        identity = config.model_dump(mode="json", exclude={"damping"})
        if identity["estimator"] == "auto":  # what it stands for depends on the objective
            raise ValueError("Fisher estimator 'auto' must be resolved for the model's objective before its sums "
                             "are stored: FisherConfig.resolved(classifier=...)")
    else:
        # Told nothing of its estimator (None, or a dict without one): the sampled-label one, the
        # default before "auto" (which stands for no one estimator and is never stored).
        defaults = FisherConfig(estimator="true").model_dump(mode="json", exclude={"damping"})
        identity = {**defaults, **LEGACY_FISHER_FIELDS, **(config or {})}
    if identity["estimator"] != "true":
        identity = {k: v for k, v in identity.items() if k not in SAMPLED_LABEL_FIELDS}
    return identity


@dataclass
class RowMetadata:
    """Who each row belongs to, as handed to a commit (the store adds the shard column).

    `snippets` (optional) is the start of each example's text, kept so reports can show the top
    examples without the source shards; the store keeps at most SNIPPET_CHARS of each.
    """

    example_ids: list[str]
    providers: list[str]
    n_tokens: np.ndarray
    snippets: list[str] | None = None

    def __post_init__(self) -> None:
        self.example_ids = [str(i) for i in self.example_ids]
        self.providers = [str(p) for p in self.providers]
        self.n_tokens = np.asarray(self.n_tokens, dtype=np.int64).reshape(-1)
        if self.snippets is None:
            self.snippets = [""] * len(self.example_ids)
        self.snippets = [str(s)[:SNIPPET_CHARS] for s in self.snippets]
        lengths = {len(self.example_ids), len(self.providers), len(self.n_tokens), len(self.snippets)}
        if len(lengths) != 1:
            raise RowsInvalidError(
                f"metadata columns differ in length: {len(self.example_ids)} example ids, "
                f"{len(self.providers)} providers, {len(self.n_tokens)} token counts, {len(self.snippets)} snippets"
            )

    def __len__(self) -> int:
        return len(self.example_ids)

    def slice(self, start: int, stop: int) -> RowMetadata:
        return RowMetadata(
            self.example_ids[start:stop], self.providers[start:stop], self.n_tokens[start:stop],
            cast(list[str], self.snippets)[start:stop],  # a list once __post_init__ has run
        )


@dataclass
class StoredMetadata(RowMetadata):
    """Metadata read back from the store: the input columns plus each row's shard hash."""

    shards: list[str] = field(default_factory=list)
