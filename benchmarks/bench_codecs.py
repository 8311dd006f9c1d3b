"""Bytes per training example under each codec, from bench_storage's measurements on real rows."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from valuation import FisherPartial, LoGra, PreconditionedQueries, ProjectionConfig
from valuation.fingerprint import model_fingerprint

from .bench_storage import PRECISIONS, bench_codec, log_rows, scores, tiny_gpt2


class CodecBenchConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(default=4096, ge=64, description="logged LoGra rows stored under each codec")
    queries: int = Field(default=32, ge=1)
    repeats: int = Field(default=1, ge=1)


def bench_codecs(config: CodecBenchConfig, workdir: Path) -> list[dict]:
    model = tiny_gpt2()
    fingerprint = model_fingerprint(model)
    with LoGra(model, ProjectionConfig(init="random", rank_in=16, rank_out=16)) as logra:
        rows, tokens = log_rows(logra, config.rows, seed=1)
        query_rows, _ = log_rows(logra, config.queries, seed=2)
        spec = logra.spec
    fisher = FisherPartial.zeros(spec.layout).update(torch.from_numpy(rows)).snapshot(0.1)
    queries = PreconditionedQueries.build(torch.from_numpy(query_rows), fisher)
    reference = scores(queries, rows, fisher)
    # Every precision under the default byte codec, and bfloat16 also under Blosc-zstd (the former default).
    codecs = [(p, None) for p in PRECISIONS] + [("bfloat16", "zstd")]
    results = [
        bench_codec(p, rows, tokens, spec, fingerprint, queries, fisher, reference, workdir, config.repeats, cname)
        for p, cname in codecs
    ]
    float32 = next(r["bytes_per_row"] for r in results if r["precision"] == "float32" and r["cname"] == "none")
    return [{**r, "vs_float32_store": r["bytes_per_row"] / float32} for r in results]
