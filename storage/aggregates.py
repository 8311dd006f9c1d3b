"""Per-shard sums kept beside the rows: the Fisher partial and each provider's sum of rows.

Both are sums over rows, so the store's totals are sums over committed shards. They are keyed by
shard hash and written before the shard's manifest entry: a crash leaves at most an orphan that
nothing reads (only committed shards are summed) and the rerun overwrites.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import zarr

from valuation.fisher import FisherPartial
from valuation.layout import GradientLayout

from .codecs import put_array
from .schema import RowMetadata

FISHER = "fisher"
PROVIDER_SUMS = "provider_sums"
PROVIDER_ROWS = "provider_rows"


@dataclass
class ShardAggregates:
    fisher: FisherPartial
    providers: list[str]
    provider_sums: np.ndarray  # providers x K, float64 sums of the decoded (stored) rows
    provider_rows: np.ndarray  # providers, int64

    @classmethod
    def compute(cls, decoded: np.ndarray, meta: RowMetadata, fisher: FisherPartial) -> ShardAggregates:
        # Sums of the rows as stored, so credit from sums equals the sum of per-row scores.
        providers, codes = np.unique(np.asarray(meta.providers, dtype=object), return_inverse=True)
        sums = np.zeros((len(providers), decoded.shape[1]), dtype=np.float64)
        for i in range(len(providers)):
            sums[i] = decoded[codes == i].sum(axis=0, dtype=np.float64)
        counts = np.bincount(codes, minlength=len(providers)).astype(np.int64)
        return cls(fisher, [str(p) for p in providers], sums, counts)


def _flatten(partial: FisherPartial) -> np.ndarray:
    blocks = [partial.sums[m.name].numpy().ravel() for m in partial.layout.modules]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float64)


def _unflatten(flat: np.ndarray, layout: GradientLayout, count: int) -> FisherPartial:
    sums, start = {}, 0
    for m in layout.modules:
        stop = start + m.size * m.size
        sums[m.name] = torch.from_numpy(np.ascontiguousarray(flat[start:stop]).reshape(m.size, m.size))
        start = stop
    return FisherPartial(layout, sums, count)


def write_aggregates(group: zarr.Group, aggregates: ShardAggregates) -> None:
    put_array(group, FISHER, _flatten(aggregates.fisher))
    put_array(group, PROVIDER_SUMS, aggregates.provider_sums)
    put_array(group, PROVIDER_ROWS, aggregates.provider_rows)
    group.attrs.put({"fisher_count": aggregates.fisher.count, "providers": aggregates.providers})


def read_aggregates(group: zarr.Group, layout: GradientLayout) -> ShardAggregates:
    attrs = group.attrs.asdict()
    return ShardAggregates(
        _unflatten(group[FISHER][...], layout, int(attrs["fisher_count"])),
        list(attrs["providers"]),
        group[PROVIDER_SUMS][...],
        group[PROVIDER_ROWS][...],
    )


def sum_fisher(groups: Iterable[zarr.Group], layout: GradientLayout) -> FisherPartial:
    total = FisherPartial.zeros(layout)
    for group in groups:
        total = total + _unflatten(group[FISHER][...], layout, int(group.attrs["fisher_count"]))
    return total


def sum_providers(groups: Iterable[zarr.Group], width: int) -> dict[str, np.ndarray]:
    """provider -> float64 sum vector over the given shards' aggregates."""
    totals: dict[str, np.ndarray] = {}
    for group in groups:
        sums = group[PROVIDER_SUMS][...]
        for i, name in enumerate(group.attrs["providers"]):
            totals[name] = totals.get(name, np.zeros(width, dtype=np.float64)) + sums[i]
    return totals


def count_provider_rows(groups: Iterable[zarr.Group]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for group in groups:
        for name, rows in zip(group.attrs["providers"], group[PROVIDER_ROWS][...]):
            totals[name] = totals.get(name, 0) + int(rows)
    return totals
