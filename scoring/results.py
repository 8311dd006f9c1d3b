"""Result types of scoring that reports carry: plain data, no heavy imports."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

# What a stability measurement redraws: what the credit depends on by chance under each init.
Varies = Literal["projection seed", "calibration half"]
VARIES_PLURAL: dict[str, str] = {"projection seed": "projection seeds", "calibration half": "calibration halves"}


def redrawn_words(varies: str, labels_redrawn: bool, plural: bool = False) -> str:
    """What stability variants redraw, in words: "calibration halves and the sampled labels"."""
    what = VARIES_PLURAL[varies] if plural else varies
    return f"{what} and the sampled labels" if labels_redrawn else what


class Stability(BaseModel):
    """Agreement of provider credits when the projection is redrawn: the noise the bootstrap over
    queries cannot see. Random init redraws the seed; PCA init, which has no seed, redraws the half
    of the examples its KFAC factors are fitted on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    varies: Varies
    variants: list[int]  # the seeds (or the seeds of the halves)
    spearman_mean: float  # of the query x provider credit matrix, over every pair of variants
    spearman_min: float
    share_spread: dict[str, float]  # per provider: max - min of its share across the variants
    share_spread_median: float  # over all providers: the one figure of the spread a provider's export keeps
    examples: int  # what it was measured on
    queries: int
    measured_at: datetime
    snapshot: int | None = None  # the store's latest Fisher snapshot when it was measured (what "fresh" means)
    calibration_examples: int | None = None  # PCA init: examples each variant's PCA was fitted on
    # Sampled-label Fisher: each variant also draws its own labels, which move credit by chance too.
    labels_redrawn: bool = False

    def redrawn(self, plural: bool = False) -> str:
        return redrawn_words(self.varies, self.labels_redrawn, plural)
