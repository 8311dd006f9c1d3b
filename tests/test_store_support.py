"""Shared pieces of the store tests: a small projection, deterministic shards, and child processes.

Child processes run `python -m tests.test_store_support <action> <json>` from the repository
root, so crash and concurrency tests exercise real, separate processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from storage import DuplicateIdsError, GradientStore, RowMetadata
from storage.location import StoreLocation
from storage.lock import committer_lock
from valuation.config import ProjectionConfig
from valuation.layout import GradientLayout, ModuleSpec
from valuation.spec import ProjectionSpec

REPO = Path(__file__).resolve().parent.parent
PROVIDERS = ("alice", "bob", "carol")
MODEL = {"architecture": "TinyNet", "config": {"n_layer": 2}, "weights_sha256": "ab" * 32, "fingerprint": "model-a"}


def make_spec(seed: int = 0) -> ProjectionSpec:
    layout = GradientLayout((
        ModuleSpec("block.0.attn", "conv1d", 16, 24, 4, 3),
        ModuleSpec("block.0.mlp", "linear", 16, 16, 2, 5),
    ))
    config = ProjectionConfig(init="random", rank_in=4, rank_out=5, seed=seed)
    return ProjectionSpec(config, layout, hashlib.sha256(str(seed).encode()).hexdigest())


SPEC = make_spec()
WIDTH = SPEC.layout.total


def make_shard(seed: int, n: int = 50, ids_of: int | None = None) -> tuple[str, np.ndarray, RowMetadata]:
    """A shard of n rows whose scale varies over orders of magnitude, like real gradients; its
    example ids are those of shard `ids_of` when given (two shards naming the same examples)."""
    rng = np.random.default_rng(seed)
    rows = (rng.standard_normal((n, WIDTH)) * 10.0 ** rng.uniform(-3, 3, size=(n, 1))).astype(np.float32)
    ids = [f"s{seed if ids_of is None else ids_of}-ex{i}" for i in range(n)]
    meta = RowMetadata(ids, [PROVIDERS[(seed + i) % len(PROVIDERS)] for i in range(n)], rng.integers(1, 200, n))
    digest = hashlib.sha256(rows.tobytes() + "".join(ids).encode()).hexdigest()
    return digest, rows, meta


def run_child(action: str, args: dict, *, env: dict | None = None, wait: bool = True, timeout: float = 120):
    """Run one action of this module in a fresh Python process."""
    command = [sys.executable, "-m", "tests.test_store_support", action, json.dumps(args)]
    child_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=child_env, stdout=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=child_env, capture_output=True, text=True, timeout=timeout)


def _commit(args: dict) -> None:
    store = GradientStore.open(args["url"], lock_timeout=args.get("lock_timeout", 60))
    if "start_at" in args:  # racing children start their commits together
        time.sleep(max(0.0, args["start_at"] - time.time()))
    for seed in args["seeds"]:
        shard_hash, rows, meta = make_shard(seed, args.get("rows", 50), args.get("ids_of"))
        try:
            print(store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL), flush=True)
        except DuplicateIdsError as err:
            print(f"refused: {err}", flush=True)


def _stage(args: dict) -> None:
    store = GradientStore.open(args["url"])
    area = store.stage(args["worker"], spec=SPEC, model_fingerprint=MODEL)
    for seed in args["seeds"]:
        shard_hash, rows, meta = make_shard(seed, args.get("rows", 50))
        print(area.write_shard(shard_hash, rows, meta), flush=True)
    if args.get("commit"):
        print(store.commit_staged(), flush=True)


def logged_batches(seed: int, n: int, batch: int):
    """make_shard's rows as a logger hands them to a sink, `batch` rows at a time."""
    import torch

    from valuation.logra import LoggedBatch

    _, rows, meta = make_shard(seed, n)
    for a in range(0, n, batch):
        part = torch.from_numpy(rows[a:a + batch])
        yield LoggedBatch(part, part, torch.zeros(len(part)), meta.example_ids[a:a + batch],
                          torch.from_numpy(meta.n_tokens[a:a + batch]))


def stream_shard(url: str, seed: int, n: int, batch: int, worker_id: str | None = None):
    """Log make_shard(seed, n) through a ShardSink, as the ingest task does, and commit it."""
    from storage.sink import ShardSink
    from valuation.config import FisherConfig
    from valuation.sink import LogSession

    store = GradientStore.open(url)
    shard_hash, _, meta = make_shard(seed, n)
    sink = ShardSink(store, shard_hash, providers=dict(zip(meta.example_ids, meta.providers)),
                     name=f"seed-{seed}", worker_id=worker_id)
    sink.open(LogSession(SPEC, MODEL, {}, FisherConfig(estimator="true")))
    for logged in logged_batches(seed, n, batch):
        sink.write(logged)
    sink.close()
    return store.commit_staged([shard_hash])


def _stream(args: dict) -> None:
    print(stream_shard(args["url"], args["seed"], args["rows"], args["batch"]), flush=True)


def _create(args: dict) -> None:
    GradientStore.create(args["url"], SPEC, MODEL, chunk_rows=args.get("chunk_rows", 16))
    print("created", flush=True)


def _derive(args: dict) -> None:
    """What refresh-fisher does for rows added under the latest snapshot: normalise them, save."""
    from scoring.normalization import normalize_rows, stored_normalization

    store = GradientStore.open(args["url"])
    latest = store.load_snapshot()
    covered = latest.self_influence_rows or 0
    fresh = normalize_rows(store, latest.fisher, covered)
    normalization = stored_normalization(store, latest.version) + fresh if covered else fresh
    store.save_self_influence(latest.version, normalization.self_influence, normalization.provider_sums)
    print(f"derived {store.n_rows}", flush=True)


def _hold_lock(args: dict) -> None:
    """Hold the committer lock, checking the fence as a committer does before each write."""
    from storage.lease import LeaseLostError

    location = StoreLocation(args["url"], lease_seconds=args.get("lease_seconds", 30.0))
    with committer_lock(location, timeout=10) as fence:
        print("locked", flush=True)
        deadline = time.monotonic() + args["seconds"]
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                fence()
            except LeaseLostError as err:
                print(f"lost: {err}", flush=True)
                return


ACTIONS = {"commit": _commit, "stage": _stage, "stream": _stream, "create": _create, "derive": _derive,
           "hold_lock": _hold_lock}

if __name__ == "__main__":
    ACTIONS[sys.argv[1]](json.loads(sys.argv[2]))
