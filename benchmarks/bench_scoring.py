"""Scoring from the Zarr store against an in-memory matrix product of the same shapes, and the cost
of ingesting one more shard as the store grows.

Rows are random: throughput does not depend on the values, and random rows let the store be as
large as the benchmark asks without logging them first. The row width is that of a real LoGra
layout: the tiny GPT-2 of bench_storage at rank 16 in, 8 out (8 modules x 128 = 1,024).

The baseline is `rows @ queries.T` in float32 with every row resident in memory, run with as
many threads as the scan: one core each (`threads=1`: the process is pinned to one CPU, the
scan runs on Dask's synchronous scheduler) or the machine's cores (`threads=2`: the baseline
with two torch threads, the scan on two Dask threads). Also timed: the same scan over bfloat16
rows held in memory (the scan's arithmetic alone) and one plain read of every stored chunk
(its I/O and decompression alone). Every figure is a ratio per round to the baseline of that
round, wall and process-CPU time, median and range over the rounds.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from scoring.engine import RowsInMemory, ScanOptions, scan_scores
from storage import CodecConfig, GradientStore, RowMetadata
from valuation import LoGra, ProjectionConfig
from valuation.fingerprint import model_fingerprint

from .bench_storage import tiny_gpt2
from .measure import peak_memory_bytes, timed_rounds

PROVIDERS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")


class ScoringConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: tuple[int, ...] = Field(default=(200_000, 1_000_000), description="store sizes, one store each")
    queries: tuple[int, ...] = (64, 256)
    threads: int = Field(default=1, ge=1, description="cores for the baseline and the scan alike")
    device: str = Field(default="cpu", description="where the baseline and the scan's tiles multiply")
    shard_rows: int = Field(default=16384, ge=1, description="rows per committed shard")
    shards: int = Field(default=8, ge=1, description="incrementality: shards already stored, 1..shards")
    incremental_shard_rows: int = Field(default=4096, ge=1)
    precision: str = "bfloat16"
    cname: str | None = Field(default=None, description="the store's byte codec (CodecConfig.cname); None: the default")
    top_k: int = 10
    repeats: int = Field(default=3, ge=1)


def _identity():
    model = tiny_gpt2()
    with LoGra(model, ProjectionConfig(init="random", rank_in=16, rank_out=8)) as logra:
        return logra.spec, model_fingerprint(model)


def _metadata(start: int, n: int) -> RowMetadata:
    ids = [f"ex{start + i}" for i in range(n)]
    return RowMetadata(ids, [PROVIDERS[(start + i) % len(PROVIDERS)] for i in range(n)], np.full(n, 128))


def _fill(url: Path, rows: np.ndarray, shard_rows: int, precision: str,
          cname: str | None = None) -> tuple[GradientStore, list[float]]:
    """A store holding `rows`, committed shard by shard; returns it and each commit's seconds."""
    spec, fingerprint = _identity()
    codec = CodecConfig(precision=precision, **({} if cname is None else {"cname": cname}))
    store = GradientStore.create(str(url), spec, fingerprint, codec)
    seconds = []
    for start in range(0, len(rows), shard_rows):
        shard = rows[start : start + shard_rows]
        began = time.perf_counter()
        store.commit_shard(
            f"shard-{start}", shard, _metadata(start, len(shard)), spec=spec, model_fingerprint=fingerprint
        )
        seconds.append(time.perf_counter() - began)
    return store, seconds


@contextlib.contextmanager
def _cores(threads: int) -> Iterator[None]:
    """Run on `threads` CPUs (pinned when fewer than the machine has), restoring afterwards."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    torch_threads = torch.get_num_threads()
    try:
        if affinity is not None and threads < len(affinity):
            os.sched_setaffinity(0, sorted(affinity)[:threads])
        yield
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        torch.set_num_threads(torch_threads)


def _with_torch_threads(n: int, work):
    def run():
        torch.set_num_threads(n)
        return work()

    return run


def _read_all(store: GradientStore) -> None:
    """Every chunk read as the scan reads it (`CommittedRows.reader`), nothing else."""
    rows = store.committed_rows()
    read = rows.reader()
    for start in range(0, rows.n_rows, rows.chunk_rows):
        read(start, start + rows.chunk_rows)


def _stored_bytes(store: GradientStore) -> int:
    rows = Path(store.location.local_path) / "rows"
    return sum(f.stat().st_size for f in rows.rglob("*") if f.is_file())


def bench_case(store: GradientStore, rows: torch.Tensor, bf16_rows: torch.Tensor, n_queries: int,
               config: ScoringConfig) -> dict:
    codes, names = store.provider_codes()
    width = rows.shape[1]
    device = torch.device(config.device)
    queries = np.random.default_rng(n_queries).standard_normal((n_queries, width), dtype=np.float32)
    queries_t = torch.from_numpy(queries).to(device)
    scheduler = "synchronous" if config.threads == 1 else "threads"
    options = ScanOptions(top_k=config.top_k, scheduler=scheduler, device=config.device)
    in_memory = RowsInMemory(bf16_rows, store.chunk_rows)

    def scan(source) -> None:
        scan_scores(source, codes, len(names), queries, None, options)

    # The scan parallelises over Dask tasks with one torch thread each; the baseline over torch threads.
    actions = {
        "matmul_in_memory": _with_torch_threads(config.threads, lambda: rows @ queries_t.T),
        "scan_from_store": _with_torch_threads(1, lambda: scan(store.committed_rows())),
        "scan_bf16_in_memory": _with_torch_threads(1, lambda: scan(in_memory)),
        "read_store_only": _with_torch_threads(1, lambda: _read_all(store)),
    }
    with _cores(config.threads):
        rounds = timed_rounds(actions, config.repeats, device)
        peaks = {name: peak_memory_bytes(action, device) for name, action in actions.items()}
    pairs = store.n_rows * n_queries
    seconds = rounds.medians()
    return {
        "rows": store.n_rows, "queries": n_queries, "width": width, "precision": store.codec.precision,
        "cname": store.codec.cname, "stored_bytes_per_row": _stored_bytes(store) / store.n_rows,
        "device": config.device,
        "chunk_rows": store.chunk_rows, "threads": config.threads, "repeats": config.repeats,
        "seconds": seconds,
        "cpu_seconds": {name: float(np.median(v)) for name, v in rounds.cpu.items()},
        "pairs_per_s": {name: pairs / s for name, s in seconds.items()},
        "vs_matmul": rounds.ratios("matmul_in_memory"),
        "vs_matmul_cpu": rounds.ratios("matmul_in_memory", clock="cpu"),
        "peak_bytes": peaks,
        "resident_rows_bytes": {"matmul_in_memory": rows.numel() * rows.element_size(),
                                "scan_bf16_in_memory": bf16_rows.numel() * bf16_rows.element_size()},
    }


def bench_scoring(config: ScoringConfig, workdir: Path) -> list[dict]:
    """One store per size in `config.rows`, each scored with every query count."""
    width = _identity()[0].layout.total
    results = []
    for n in config.rows:
        rows = np.random.default_rng(0).standard_normal((n, width), dtype=np.float32)
        store, _ = _fill(workdir / f"scoring-{n}.zarr", rows, config.shard_rows, config.precision, config.cname)
        rows_t = torch.from_numpy(rows).to(config.device)  # the baseline's rows, resident where it multiplies
        bf16_rows = torch.from_numpy(rows).bfloat16()
        results += [bench_case(store, rows_t, bf16_rows, q, config) for q in config.queries]
        del rows, rows_t, bf16_rows
    return results


def bench_incrementality(config: ScoringConfig, workdir: Path) -> dict:
    """Seconds to commit shard n+1 into a store already holding n shards, n = 0..shards; the
    median over `repeats` fresh stores."""
    spec, _ = _identity()
    shard_rows = config.incremental_shard_rows
    rows = np.random.default_rng(1).standard_normal(((config.shards + 1) * shard_rows, spec.layout.total),
                                                    dtype=np.float32)
    runs = [_fill(workdir / f"incremental-{r}.zarr", rows, shard_rows, config.precision)[1]
            for r in range(config.repeats)]
    seconds = np.median(np.array(runs), axis=0)
    return {
        "shard_rows": shard_rows,
        "commit_seconds": seconds.tolist(),  # index n: the store already held n shards
        "vs_one_shard": (seconds / seconds[min(1, len(seconds) - 1)]).tolist(),
    }
