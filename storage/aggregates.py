"""Sums over rows kept beside them: the Fisher partial and each provider's sum of rows.

Both are sums, so the store keeps one running total over every committed shard (totals/t<n>)
instead of one per shard: the bytes do not grow with the number of shards. A staged shard keeps
its own sums until the committer adds them in. A group's arrays are checksummed (the digest
lives with whoever points at the group), because a lost chunk of a Zarr array reads as zeros.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zarr

from valuation.fisher import FisherPartial
from valuation.layout import GradientLayout

from . import nodes
from .codecs import put_array
from .errors import StoreError
from .schema import RowMetadata

FISHER = "fisher"
PROVIDER_SUMS = "provider_sums"
PROVIDER_ROWS = "provider_rows"


def digest(*arrays: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of each array."""
    h = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


@dataclass
class Aggregates:
    fisher: FisherPartial
    providers: list[str]  # sorted
    provider_sums: np.ndarray  # providers x K, float64 sums of the decoded (stored) rows
    provider_rows: np.ndarray  # providers, int64

    @classmethod
    def zeros(cls, layout: GradientLayout) -> Aggregates:
        return cls(FisherPartial.zeros(layout), [], np.zeros((0, layout.total)), np.zeros(0, np.int64))

    @classmethod
    def of_rows(cls, decoded: np.ndarray, meta: RowMetadata, fisher: FisherPartial) -> Aggregates:
        """Provider sums of rows as stored, so credit from sums equals the sum of per-row scores."""
        return ProviderSums(decoded.shape[1]).add(decoded, meta.providers).aggregates(fisher)

    def __add__(self, other: Aggregates) -> Aggregates:
        names = sorted(set(self.providers) | set(other.providers))
        sums = np.zeros((len(names), self.provider_sums.shape[1]), dtype=np.float64)
        rows = np.zeros(len(names), dtype=np.int64)
        index = {name: i for i, name in enumerate(names)}
        for part in (self, other):
            at = [index[p] for p in part.providers]
            sums[at] += part.provider_sums
            rows[at] += part.provider_rows
        return Aggregates(self.fisher + other.fisher, names, sums, rows)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return flatten_fisher(self.fisher), self.provider_sums, self.provider_rows


class ProviderSums:
    """Each provider's float64 sum of decoded rows and row count, accumulated block by block."""

    def __init__(self, width: int):
        self.width = width
        self.sums: dict[str, np.ndarray] = {}
        self.rows: dict[str, int] = {}

    def add(self, decoded: np.ndarray, providers: list[str]) -> ProviderSums:
        names, codes = np.unique(np.asarray(providers, dtype=object), return_inverse=True)
        for i, name in enumerate(map(str, names)):
            mine = codes == i
            self.sums[name] = self.sums.get(name, 0.0) + decoded[mine].sum(axis=0, dtype=np.float64)
            self.rows[name] = self.rows.get(name, 0) + int(mine.sum())
        return self

    def aggregates(self, fisher: FisherPartial) -> Aggregates:
        names = sorted(self.sums)
        sums = np.stack([self.sums[n] for n in names]) if names else np.zeros((0, self.width))
        return Aggregates(fisher, names, sums, np.array([self.rows[n] for n in names], dtype=np.int64))


def flatten_fisher(partial: FisherPartial) -> np.ndarray:
    blocks = [partial.sums[m.name].numpy().ravel() for m in partial.layout.modules]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float64)


def unflatten_fisher(flat: np.ndarray, layout: GradientLayout, count: int) -> FisherPartial:
    sums, start = {}, 0
    for m in layout.modules:
        stop = start + m.size * m.size
        sums[m.name] = torch.from_numpy(np.ascontiguousarray(flat[start:stop]).reshape(m.size, m.size))
        start = stop
    return FisherPartial(layout, sums, count)


def write_aggregates(group: zarr.Group, aggregates: Aggregates, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Write the sums into `group` (replacing old ones); returns each array's digest."""
    arrays = dict(zip((FISHER, PROVIDER_SUMS, PROVIDER_ROWS), aggregates.arrays()))
    for name, data in arrays.items():
        put_array(group, name, data)
    group.attrs.put({"fisher_count": aggregates.fisher.count, "providers": aggregates.providers, **(extra or {})})
    return {name: digest(data) for name, data in arrays.items()}


def read_whole(group: zarr.Group, name: str) -> np.ndarray:
    """A whole small array; a missing or damaged one raises StoreError naming it."""
    try:
        return nodes.read(nodes.array(group, name))
    except Exception as exc:  # a damaged chunk fails its CRC32C with whatever error the codec raises
        raise StoreError(f"{group.path}/{name} is missing or unreadable ({type(exc).__name__}: {exc})") from exc


def _checked(group: zarr.Group, name: str, digests: dict[str, str] | None) -> np.ndarray:
    data = read_whole(group, name)
    if digests is not None and digest(data) != digests[name]:
        raise StoreError(
            f"{group.path}/{name} does not match its checksum (a lost or damaged chunk); run `dataworth store verify`"
        )
    return data


def read_fisher(group: zarr.Group, layout: GradientLayout, digests: dict[str, str] | None = None) -> FisherPartial:
    return unflatten_fisher(_checked(group, FISHER, digests), layout, int(nodes.attr(group, "fisher_count")))


def read_providers(group: zarr.Group, width: int, digests: dict[str, str] | None = None) -> ProviderSums:
    """Only the provider sums and counts (not the Fisher, which is far larger)."""
    names: list[str] = list(nodes.attr(group, "providers"))
    sums = _checked(group, PROVIDER_SUMS, digests).reshape(len(names), width)
    rows = _checked(group, PROVIDER_ROWS, digests)
    totals = ProviderSums(width)
    totals.sums = {name: sums[i] for i, name in enumerate(names)}
    totals.rows = {name: int(rows[i]) for i, name in enumerate(names)}
    return totals


def read_aggregates(group: zarr.Group, layout: GradientLayout, digests: dict[str, str] | None = None) -> Aggregates:
    """The sums in `group`; StoreError if an array is not the one `digests` names."""
    return read_providers(group, layout.total, digests).aggregates(read_fisher(group, layout, digests))
