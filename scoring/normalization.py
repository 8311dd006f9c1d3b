"""Per-row self-influence under a Fisher snapshot, and each provider's sum of normalised rows.

relatif scores divide each row's influence by sqrt(self-influence). Credit stays linear in the
rows, so a provider's relatif credit is q~ . sum_{n in p} g_n / sqrt(s_n): keeping those sums
per snapshot turns provider credit into one small matrix product, with no scan of the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from storage import GradientStore
from valuation.fisher import FisherSnapshot
from valuation.influence import safe_rsqrt


@dataclass
class Normalization:
    self_influence: np.ndarray  # one value per row of the range
    provider_sums: dict[str, np.ndarray]  # provider -> float64 K

    def __add__(self, later: Normalization) -> Normalization:
        sums = dict(self.provider_sums)
        for provider, vector in later.provider_sums.items():
            sums[provider] = sums[provider] + vector if provider in sums else vector
        return Normalization(np.concatenate([self.self_influence, later.self_influence]), sums)


def normalize_rows(store: GradientStore, fisher: FisherSnapshot, start: int = 0,
                   on_block: Callable[[int], None] | None = None) -> Normalization:
    """Self-influence of rows [start, n_rows) and their providers' normalised sums, chunk by chunk
    (`on_block` is told the rows done after each block)."""
    providers = np.asarray(store.read_metadata().providers, dtype=object)
    values: list[np.ndarray] = []
    sums: dict[str, np.ndarray] = {}
    for block_start, block in store.iter_row_blocks():
        if block_start + len(block) <= start:
            continue
        offset = max(start - block_start, 0)
        rows = block[offset:]
        influence = fisher.self_influence(torch.from_numpy(rows)).numpy()
        normalised = rows.astype(np.float64) * safe_rsqrt(torch.from_numpy(influence)).numpy()[:, None]
        owners = providers[block_start + offset: block_start + len(block)]
        for provider in np.unique(owners):
            part = normalised[owners == provider].sum(axis=0)
            sums[str(provider)] = sums[str(provider)] + part if provider in sums else part
        values.append(influence)
        if on_block is not None:
            on_block(block_start + len(block) - start)
    return Normalization(np.concatenate(values) if values else np.zeros(0), sums)


def stored_normalization(store: GradientStore, version: int) -> Normalization:
    return Normalization(store.self_influence(version), store.provider_normalized_sums(version))
