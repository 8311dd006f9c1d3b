"""Result types of scoring that reports carry: plain data, no heavy imports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Stability(BaseModel):
    """Agreement of provider credits across projection seeds: the noise the bootstrap cannot see."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seeds: list[int]
    spearman_mean: float
    spearman_min: float
    note: str = ""
