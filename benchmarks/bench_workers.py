"""Ingest with 1 vs 2 workers on the S3 API: parallel loggers staging, one committer publishing.

Each worker is a process of its own that stages its share of the shards (encode, Fisher partial,
upload chunk by chunk into its own staging group), as the ingest flow's logging tasks do on
several machines; then one committer publishes every shard in manifest order under the lease.
The S3 API is moto's server on loopback, in a process of its own. Rows are synthetic (a store
benchmark: logging costs what benchmarks/bench_logging.py measures, on each worker's own
device). Staging time is from the first worker's start to the last one's end, each timed after
its imports; the ratio is 1-worker time / 2-worker time, measured in this one run.

    .venv/bin/python -m benchmarks.bench_workers [--shards 8] [--rows 512]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

REPO = Path(__file__).resolve().parent.parent


class WorkersConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    shards: int = Field(default=8, ge=2)
    shard_rows: int = Field(default=512, ge=1)
    modules: int = Field(default=8, ge=1, description="8 modules of rank 16 x 16: rows of width 2,048")
    workers: tuple[int, ...] = (1, 2)


def _spec(config: WorkersConfig):
    from valuation.config import ProjectionConfig
    from valuation.layout import GradientLayout, ModuleSpec
    from valuation.spec import ProjectionSpec

    layout = GradientLayout(tuple(ModuleSpec(f"block.{i}", "linear", 64, 64, 16, 16) for i in range(config.modules)))
    return ProjectionSpec(ProjectionConfig(rank_in=16, rank_out=16), layout, "0" * 64)


MODEL = {"architecture": "bench", "config": {}, "weights_sha256": "0" * 64, "fingerprint": "bench-model"}


def _shard(config: WorkersConfig, seed: int):
    import numpy as np

    from storage import RowMetadata

    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((config.shard_rows, _spec(config).layout.total), dtype=np.float32)
    ids = [f"b{seed}-{i}" for i in range(config.shard_rows)]
    meta = RowMetadata(ids, [f"p{i % 4}" for i in range(config.shard_rows)], np.full(config.shard_rows, 64))
    return hashlib.sha256(f"bench-shard-{seed}".encode()).hexdigest(), rows, meta


def _stage(args: dict) -> None:
    """One worker process: stage the given shards into its own staging groups."""
    from storage import GradientStore

    config = WorkersConfig(**args["config"])
    started = time.time()
    store = GradientStore.open(args["url"])
    area = store.stage(args["worker"], spec=_spec(config), model_fingerprint=MODEL)
    for seed in args["seeds"]:
        area.write_shard(*_shard(config, seed))
    print(json.dumps({"start": started, "end": time.time()}), flush=True)


def _run(config: WorkersConfig, endpoint: str, workers: int) -> dict:
    from storage import GradientStore

    from .s3_server import make_bucket

    bucket = f"bench-workers-{workers}-{os.getpid()}"
    fs = make_bucket(endpoint, bucket)
    try:
        url = f"s3://{bucket}/store.zarr"
        store = GradientStore.create(url, _spec(config), MODEL)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        children = []
        for w in range(workers):
            args = {"url": url, "worker": f"w{w}", "seeds": list(range(w, config.shards, workers)),
                    "config": config.model_dump()}
            children.append(subprocess.Popen([sys.executable, "-m", "benchmarks.bench_workers", "_stage",
                                              json.dumps(args)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True))
        spans = []
        for child in children:
            out, _ = child.communicate(timeout=1800)
            if child.returncode:
                raise RuntimeError(f"a staging worker failed with {child.returncode}")
            spans.append(json.loads(out.strip().splitlines()[-1]))
        order = [_shard(config, seed)[0] for seed in range(config.shards)]
        t0 = time.perf_counter()
        results = store.commit_staged(order)
        commit_s = time.perf_counter() - t0
        if [r.shard_hash for r in results] != order or store.n_rows != config.shards * config.shard_rows:
            raise RuntimeError("the committer did not publish every shard once, in order")
        stage_s = max(s["end"] for s in spans) - min(s["start"] for s in spans)
        return {"workers": workers, "stage_seconds": stage_s, "commit_seconds": commit_s,
                "total_seconds": stage_s + commit_s}
    finally:
        fs.rm(bucket, recursive=True)


def bench_workers(config: WorkersConfig) -> dict:
    import s3fs

    from .s3_server import moto_server, s3_environment

    saved = dict(os.environ)
    with moto_server() as endpoint:
        # This process commits too. Cached S3 filesystems keep the endpoint they were made with.
        os.environ.update(s3_environment(endpoint))
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            runs = [_run(config, endpoint, n) for n in config.workers]
        finally:
            os.environ.clear()
            os.environ.update(saved)
            s3fs.S3FileSystem.clear_instance_cache()
    base = runs[0]
    for r in runs:
        r["speedup_vs_one"] = base["total_seconds"] / r["total_seconds"]
        r["stage_speedup_vs_one"] = base["stage_seconds"] / r["stage_seconds"]
    mb = config.shards * config.shard_rows * _spec(config).layout.total * 4 / 1e6
    return {"shards": config.shards, "shard_rows": config.shard_rows, "width": _spec(config).layout.total,
            "float32_mb": mb, "cpu_count": os.cpu_count(), "runs": runs}


def main(argv: list[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] == ["_stage"]:
        _stage(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=WorkersConfig().shards)
    parser.add_argument("--rows", type=int, default=WorkersConfig().shard_rows)
    args = parser.parse_args(argv)
    print(json.dumps(bench_workers(WorkersConfig(shards=args.shards, shard_rows=args.rows)), indent=1))


if __name__ == "__main__":
    main()
