"""Gradient store codecs on real logged gradients: bytes, speed, and score fidelity vs float32.

Logs LoGra rows of a tiny GPT-2 on random token batches (Zipf-distributed tokens, varied
lengths, so gradient norms vary as they do on text), stores them under each codec and measures,
in this one process so the ratios are like for like:
- bytes per row as stored (codes + per-row scales, after Blosc) and the ratio to float32's store
- write MB/s (commit_shard, float32 MB in per second, fsync included) and read MB/s (read_rows
  and dask_rows().compute(), float32 MB out per second); best of --repeats
- fidelity of influence scores computed from the decoded rows against scores from the float32
  rows: Spearman per query (mean and worst) and top-10 recall, for dot and relatif modes

    .venv/bin/python benchmarks/bench_storage.py [--rows 8192] [--queries 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sample.model import GPT2Shape, build_gpt2  # noqa: E402
from storage import CodecConfig, GradientStore, RowMetadata  # noqa: E402
from storage.location import stored_bytes  # noqa: E402
from valuation import FisherPartial, LoGra, PreconditionedQueries, ProjectionConfig, influence_scores  # noqa: E402
from valuation.fingerprint import model_fingerprint  # noqa: E402
from valuation.stats import spearman_columns  # noqa: E402

PRECISIONS = ("float32", "bfloat16", "float16", "int8")
SHARD_ROWS = 4096  # a multiple of every codec's chunk, so no chunk is written twice
TOP_K = 10


def tiny_gpt2():
    return build_gpt2(GPT2Shape(vocab_size=256, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()


def token_batch(n: int, gen: torch.Generator) -> dict:
    """Right-padded batch of Zipf-distributed tokens with lengths 8..64."""
    ranks = torch.arange(1, 256, dtype=torch.float64)
    ids = torch.multinomial((1.0 / ranks).expand(n, -1), 64, replacement=True, generator=gen) + 1
    lengths = torch.randint(8, 65, (n,), generator=gen)
    mask = (torch.arange(64)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def log_rows(logra: LoGra, n: int, seed: int, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    rows, tokens = [], []
    for start in range(0, n, batch):
        data = token_batch(min(batch, n - start), gen)
        rows.append(logra.log_batch(data).rows.numpy())
        tokens.append(data["attention_mask"].sum(dim=1).numpy() - 1)
    return np.concatenate(rows).astype(np.float32), np.concatenate(tokens)


def top_k_recall(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> np.ndarray:
    top_a, top_b = np.argsort(-a, axis=1)[:, :k], np.argsort(-b, axis=1)[:, :k]
    return np.array([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b)])


def scores(queries: PreconditionedQueries, rows: np.ndarray, fisher) -> dict[str, np.ndarray]:
    train = torch.from_numpy(rows)
    self_influence = fisher.self_influence(train)
    return {
        "dot": influence_scores(queries, train, "dot").numpy(),
        "relatif": influence_scores(queries, train, "relatif", self_influence).numpy(),
    }


def best_of(repeats: int, action, warm_up: bool = False) -> float:
    if warm_up:  # the first read pays for thread pools and imports, not for the codec
        action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_codec(
    precision: str, rows, tokens, spec, fingerprint, queries, fisher, reference, workdir: Path, repeats: int,
    cname: str | None = None,
) -> dict:
    """One codec: `precision`, with CodecConfig's byte codec or the Blosc compressor `cname`."""
    codec = CodecConfig(precision=precision, **({} if cname is None else {"cname": cname}))
    meta = RowMetadata([f"ex{i}" for i in range(len(rows))], [f"p{i % 6}" for i in range(len(rows))], tokens)
    partials = [
        FisherPartial.zeros(spec.layout).update(torch.from_numpy(rows[s:s + SHARD_ROWS]))
        for s in range(0, len(rows), SHARD_ROWS)
    ]
    url = workdir / f"{precision}-{codec.cname}.zarr"

    def write() -> None:
        shutil.rmtree(url, ignore_errors=True)
        store = GradientStore.create(str(url), spec, fingerprint, codec)
        for i, start in enumerate(range(0, len(rows), SHARD_ROWS)):
            stop = start + SHARD_ROWS
            store.commit_shard(f"shard{i}", rows[start:stop], meta.slice(start, stop), partials[i],
                               spec=spec, model_fingerprint=fingerprint)

    write_s = best_of(repeats, write)
    store = GradientStore.open(str(url), read_only=True)
    read_s = best_of(repeats, store.read_rows, warm_up=True)
    dask_s = best_of(repeats, lambda: store.dask_rows().compute(scheduler="threads"), warm_up=True)
    root = store.root()
    row_bytes = stored_bytes(root.store, "rows") + (stored_bytes(root.store, "row_scale") if store.codec.scaled else 0)
    decoded = store.read_rows()
    got = scores(queries, decoded, fisher)
    megabytes = rows.nbytes / 1e6
    result = {
        "precision": precision,
        "cname": codec.cname,
        "bytes_per_row": row_bytes / len(rows),
        "ratio_vs_raw_float32": rows.nbytes / row_bytes,
        "write_mb_s": megabytes / write_s,
        "read_mb_s": megabytes / read_s,
        "dask_read_mb_s": megabytes / dask_s,
        "max_rel_err": float((np.abs(decoded - rows) / np.abs(rows).max(axis=1, keepdims=True)).max()),
    }
    for mode in ("dot", "relatif"):
        rho = spearman_columns(got[mode].T, reference[mode].T)  # one rho per query
        result[f"{mode}_spearman_mean"] = float(rho.mean())
        result[f"{mode}_spearman_min"] = float(rho.min())
        result[f"{mode}_top10_recall"] = float(top_k_recall(got[mode], reference[mode]).mean())
    return result


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def tables(results: list[dict]) -> str:
    float32_bytes = next(r["bytes_per_row"] for r in results if r["precision"] == "float32")
    size = markdown(
        ["codec", "bytes/row", "vs float32 store", "vs raw float32", "write MB/s", "read MB/s", "dask read MB/s"],
        [[r["precision"], f"{r['bytes_per_row']:,.0f}", f"{float32_bytes / r['bytes_per_row']:.2f}x",
          f"{r['ratio_vs_raw_float32']:.2f}x", f"{r['write_mb_s']:,.0f}", f"{r['read_mb_s']:,.0f}",
          f"{r['dask_read_mb_s']:,.0f}"] for r in results],
    )
    fidelity = markdown(
        ["codec", "max err / row max-abs", "Spearman dot (mean / min)", "top-10 recall dot",
         "Spearman relatif (mean / min)", "top-10 recall relatif"],
        [[r["precision"], f"{r['max_rel_err']:.1e}",
          f"{r['dot_spearman_mean']:.6f} / {r['dot_spearman_min']:.6f}", f"{r['dot_top10_recall']:.3f}",
          f"{r['relatif_spearman_mean']:.6f} / {r['relatif_spearman_min']:.6f}", f"{r['relatif_top10_recall']:.3f}"]
         for r in results],
    )
    return f"{size}\n\n{fidelity}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8192, help="training rows to log and store")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--workdir", default=None, help="where the stores go (default: a temporary directory)")
    args = parser.parse_args()

    model = tiny_gpt2()
    fingerprint = model_fingerprint(model)
    with LoGra(model, ProjectionConfig(init="random", rank_in=16, rank_out=16)) as logra:
        start = time.perf_counter()
        rows, tokens = log_rows(logra, args.rows, seed=1)
        query_rows, _ = log_rows(logra, args.queries, seed=2)
        spec = logra.spec
        print(f"logged {len(rows)} + {len(query_rows)} rows of width {rows.shape[1]} "
              f"({len(spec.layout.modules)} modules) in {time.perf_counter() - start:.1f} s")
    fisher = FisherPartial.zeros(spec.layout).update(torch.from_numpy(rows)).snapshot(0.1)
    queries = PreconditionedQueries.build(torch.from_numpy(query_rows), fisher)
    reference = scores(queries, rows, fisher)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = [
            bench_codec(p, rows, tokens, spec, fingerprint, queries, fisher, reference, Path(tmp), args.repeats)
            for p in PRECISIONS
        ]
    print(f"\n{len(rows)} rows x {rows.shape[1]} ({rows.nbytes / 1e6:.1f} MB as float32), "
          f"{args.queries} queries, shards of {SHARD_ROWS} rows, best of {args.repeats}\n")
    print(tables(results))


if __name__ == "__main__":
    main()
