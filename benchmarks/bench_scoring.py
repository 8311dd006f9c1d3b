"""Scoring from the Zarr store against an in-memory matrix product, and the cost of ingesting one
more shard as the store grows.

Rows are random: throughput does not depend on the values, and random rows let the store be as
large as the benchmark asks without logging them first. The row width is that of a real LoGra
layout (the tiny GPT-2 of bench_storage at rank 16: 8 modules x 256 = 2,048).
"""

from __future__ import annotations

import time
from pathlib import Path

import dask.array as da
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from scoring.engine import scan_scores
from storage import CodecConfig, GradientStore, RowMetadata
from valuation import LoGra, ProjectionConfig
from valuation.fingerprint import model_fingerprint

from .bench_storage import tiny_gpt2
from .measure import median_seconds, peak_memory_bytes

PROVIDERS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
CPU = torch.device("cpu")


class ScoringConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(default=32768, ge=1, description="rows in the store")
    queries: int = Field(default=64, ge=1)
    shard_rows: int = Field(default=4096, ge=1, description="rows per committed shard")
    shards: int = Field(default=8, ge=1, description="incrementality: shards already stored, 1..shards")
    precision: str = "bfloat16"
    top_k: int = 10
    repeats: int = Field(default=3, ge=1)


def _identity():
    model = tiny_gpt2()
    with LoGra(model, ProjectionConfig(rank_in=16, rank_out=16)) as logra:
        return logra.spec, model_fingerprint(model)


def _metadata(start: int, n: int) -> RowMetadata:
    ids = [f"ex{start + i}" for i in range(n)]
    return RowMetadata(ids, [PROVIDERS[(start + i) % len(PROVIDERS)] for i in range(n)], np.full(n, 128))


def _fill(url: Path, rows: np.ndarray, config: ScoringConfig) -> tuple[GradientStore, list[float]]:
    """A store holding `rows`, committed shard by shard; returns it and each commit's seconds."""
    spec, fingerprint = _identity()
    store = GradientStore.create(str(url), spec, fingerprint, CodecConfig(precision=config.precision))
    seconds = []
    for start in range(0, len(rows), config.shard_rows):
        shard = rows[start : start + config.shard_rows]
        began = time.perf_counter()
        store.commit_shard(
            f"shard-{start}", shard, _metadata(start, len(shard)), spec=spec, model_fingerprint=fingerprint
        )
        seconds.append(time.perf_counter() - began)
    return store, seconds


def bench_scoring(config: ScoringConfig, workdir: Path) -> dict:
    spec, _ = _identity()
    width = spec.layout.total
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((config.rows, width), dtype=np.float32)
    queries = rng.standard_normal((config.queries, width), dtype=np.float32)
    store, _ = _fill(workdir / "scoring.zarr", rows, config)
    codes, names = store.provider_codes()
    in_memory = da.from_array(rows, chunks=(store.chunk_rows, width))

    def scan(array) -> None:
        scan_scores(array, codes, len(names), queries, k=config.top_k)

    actions = {
        "matmul_in_memory": lambda: queries @ rows.T,
        "scan_in_memory": lambda: scan(in_memory),
        "scan_from_store": lambda: scan(store.dask_rows()),
    }
    seconds = median_seconds(actions, config.repeats, CPU)
    pairs = config.rows * config.queries
    return {
        "rows": config.rows, "queries": config.queries, "width": width, "precision": config.precision,
        "chunk_rows": store.chunk_rows,
        "seconds": seconds,
        "pairs_per_s": {name: pairs / s for name, s in seconds.items()},
        "vs_matmul": {name: seconds["matmul_in_memory"] / s for name, s in seconds.items()},
        "peak_bytes": {name: peak_memory_bytes(action, CPU) for name, action in actions.items()},
    }


def bench_incrementality(config: ScoringConfig, workdir: Path) -> dict:
    """Seconds to commit shard n+1 into a store already holding n shards, n = 0..shards; the
    median over `repeats` fresh stores."""
    spec, _ = _identity()
    rows = np.random.default_rng(1).standard_normal(
        ((config.shards + 1) * config.shard_rows, spec.layout.total), dtype=np.float32
    )
    runs = [_fill(workdir / f"incremental-{r}.zarr", rows, config)[1] for r in range(config.repeats)]
    seconds = np.median(np.array(runs), axis=0)
    return {
        "shard_rows": config.shard_rows,
        "commit_seconds": seconds.tolist(),  # index n: the store already held n shards
        "vs_one_shard": (seconds / seconds[min(1, len(seconds) - 1)]).tolist(),
    }
