"""All performance benchmarks in one command, written as JSON and a Markdown table.

    python -m benchmarks.run [--out bench-results] [--device auto] [--only logging scoring ...]

Every figure comes with a ratio against a baseline measured in the same process, so a busy
machine shifts both sides alike: logging against a plain forward+backward and against dense
projection of per-example gradients; scoring from the store against an in-memory matrix
product; each shard's commit against the commit into a one-shard store; each codec's bytes
against float32; ingest by two staging workers on the S3 API against one; ingestion's peak
memory on a large shard against a small one, and its Fisher bytes on many shards against few.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

SECTIONS = ("logging", "scoring", "incrementality", "storage", "workers", "ingest")
MB = 1e6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options; cheap to call (nothing heavy is imported until `run`). Unset sizes come from
    the benchmarks' own config defaults."""
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="output directory (default: %(default)s)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--device", default="auto", help="logging and scoring device: auto (CUDA when present), "
                        "cpu, cuda")
    parser.add_argument("--sizes", nargs="+", help="logging: GPT-2 sizes (gpt2-64x2 gpt2-128x4 gpt2-256x6; "
                        "default: the first two)")
    parser.add_argument("--batch", type=int, help="logging: examples per batch (default: 8)")
    parser.add_argument("--seq", type=int, help="logging: tokens per example (default: 128)")
    parser.add_argument("--autocast", choices=("none", "bfloat16"), help="logging: autocast of the plain and "
                        "LoGra passes (default: none)")
    parser.add_argument("--no-dense", action="store_true", help="logging: skip the dense-projection baseline")
    parser.add_argument("--rows", type=int, nargs="+", help="scoring: store sizes (default: 200000 1000000)")
    parser.add_argument("--queries", type=int, nargs="+", help="scoring: query counts (default: 64 256)")
    parser.add_argument("--cname", help="scoring: the stored rows' byte codec, CodecConfig.cname "
                        "(default: CodecConfig's)")
    parser.add_argument("--threads", type=int, help="scoring: cores for the baseline and the scan alike "
                        "(default: 1, the process pinned to one CPU)")
    parser.add_argument("--shard-examples", type=int, nargs="+", help="ingest: shard sizes whose peak memory "
                        "is compared (default: 2000 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; medians are reported")
    parser.add_argument("--workdir", help="where temporary stores go (default: the system's temporary directory)")


def _given(**options) -> dict:
    return {k: v for k, v in options.items() if v is not None}


def _environment(device) -> dict:
    import torch

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MB:,.1f}"


def _num(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _ratio(r: dict) -> str:
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def render_scoring(cases: list[dict]) -> str:
    first = cases[0]
    rows = []
    for r in cases:
        for name in r["seconds"]:
            rows.append([f"{r['rows']:,}", str(r["queries"]), name.replace("_", " "), f"{r['seconds'][name]:.3f}",
                         f"{r['pairs_per_s'][name] * 2 * r['width'] / 1e9:.1f}", _ratio(r["vs_matmul"][name]),
                         _ratio(r["vs_matmul_cpu"][name]), _mb(r["peak_bytes"][name])])
    return (f"**Scoring**, width {first['width']:,}, store codec {first['precision']} + {first['cname']} "
            f"({first['stored_bytes_per_row']:,.0f} stored bytes a row), chunks of "
            f"{first['chunk_rows']:,} rows, on {first['device']} with {first['threads']} core(s) for each path; "
            f"median (min-max) of {first['repeats']} paired rounds; a ratio is matmul time / path time:\n\n"
            + _table(["rows", "queries", "path", "median s", "GFLOP/s", "vs in-memory matmul (wall)",
                      "vs matmul (CPU time)", "peak MB"], rows))


def render(results: dict) -> str:
    env = results["environment"]
    parts = [(f"Measured {env['time']} on {env['device']} ({env['cpu_count']} CPUs, {env['torch_threads']} torch "
              f"thread(s), torch {env['torch']}); logging device: {results['device']}.")]
    if "logging" in results:
        rows = []
        for r in results["logging"]:
            t, p, s = r["tokens_per_s"], r["peak_bytes"], r["state_bytes"]
            rows.append([
                r["size"], r.get("autocast", "none"), f"{r['params']:,}", f"{r['tracked_params']:,}",
                f"{r['row_width']:,}", f"{t['plain']:,.0f}", f"{t['logra']:,.0f}", _num(t.get("dense"), "{:,.0f}"),
                f"**{r['overhead_vs_plain']:.2f}x**", f"{r['true_fisher_overhead_vs_plain']:.2f}x",
                _num(r.get("speedup_vs_dense"), "**{:.2f}x**"),
                f"{_mb(p['plain'])} / {_mb(p['logra'])} / {_mb(p.get('dense'))}",
                f"{_mb(s['logra'])} / {_mb(s.get('dense'))}",
            ])
        parts.append("**Logging** (tokens/s; time ratios; peak MB above the starting level):\n\n" + _table(
            ["model", "autocast", "params", "tracked weights", "row width", "plain fwd+bwd tok/s", "LoGra tok/s",
             "dense tok/s", "LoGra time / plain", "LoGra + sampled-label Fisher time / plain", "dense time / LoGra",
             "peak MB plain / LoGra / dense", "projection MB LoGra / dense"], rows))
    if "scoring" in results:
        parts.append(render_scoring(results["scoring"]))
    if "incrementality" in results:
        r = results["incrementality"]
        rows = [[str(n), f"{s:.3f}", f"{ratio:.2f}x"]
                for n, (s, ratio) in enumerate(zip(r["commit_seconds"], r["vs_one_shard"]))]
        parts.append(f"**Incrementality**: committing one more shard of {r['shard_rows']:,} rows "
                     "(median over fresh stores):\n\n"
                     + _table(["shards already stored", "commit seconds", "vs one shard stored"], rows))
    if "storage" in results:
        rows = [[f"{r['precision']} + {r['cname']}", f"{r['bytes_per_row']:,.0f}", f"{r['vs_float32_store']:.3f}",
                 f"{r['dot_spearman_mean']:.5f}", f"{r['relatif_top10_recall']:.3f}"] for r in results["storage"]]
        parts.append("**Storage** per training example (LoGra rows of width 2,048; precision + byte codec):\n\n"
                     + _table(["codec", "bytes/example", "vs float32 store", "score Spearman vs float32 (dot)",
                               "top-10 recall (relatif)"], rows))
    if "workers" in results:
        w = results["workers"]
        rows = [[str(r["workers"]), f"{r['stage_seconds']:.1f}", f"{r['commit_seconds']:.1f}",
                 f"{r['total_seconds']:.1f}", f"**{r['speedup_vs_one']:.2f}x**"] for r in w["runs"]]
        parts.append(f"**Workers**: {w['shards']} shards of {w['shard_rows']:,} rows (width {w['width']:,}, "
                     f"{w['float32_mb']:.0f} MB as float32) staged by worker processes on the S3 API (moto on "
                     f"loopback, {w['cpu_count']} CPUs), then one committer:\n\n"
                     + _table(["workers", "staging s", "commit s", "total s", "speedup vs 1 worker"], rows))
    if "ingest" in results:
        parts.append(render_ingest(results["ingest"]))
    return "\n\n".join(parts) + "\n"


def render_ingest(r: dict) -> str:
    sizes, peaks, ratios = r["examples"], r["peak_bytes"], r["peak_ratio_largest_vs_smallest"]
    label = {"logging": "logging, streamed into a staging group", "commit": "then committing the staged shard",
             "in_memory": "before: logging held in memory, committed whole"}
    rows = [[label[name]] + [_mb(peaks[name][str(n)]) for n in sizes] + [_num(ratios[name], "**{:.2f}x**")]
            for name in peaks]
    fisher = [[str(f["shards"]), f"{f['rows']:,}", f"{f['totals_bytes']:,}", f"{f['totals_vs_fewest']:.3f}x",
               f"{f['store_bytes']:,}"] for f in r["fisher"]]
    commits = ", ".join(f"{int(n):,} rows {_mb(v)} MB" for n, v in r["commit_peak_bytes"].items())
    return ("**Ingestion memory**: peak RSS MB above the start while one shard of short examples is logged "
            f"(tiny GPT-2, rows of {r['row_width']:,}), and while it is committed:\n\n"
            + _table(["path"] + [f"{n:,} examples" for n in sizes] + [f"{sizes[-1]:,} / {sizes[0]:,}"], rows)
            + f"\n\nPeak of the commit alone, of a staged shard of random rows: {commits}."
            + "\n\n**Fisher bytes against shard count** (the same rows, one running total):\n\n"
            + _table(["shards", "rows", "totals/ bytes", "vs fewest shards", "store bytes"], fisher))


def run(args: argparse.Namespace) -> dict:
    import torch
    from pydantic import ValidationError

    from .bench_codecs import CodecBenchConfig, bench_codecs
    from .bench_ingest import IngestBenchConfig, bench_ingest
    from .bench_logging import LoggingConfig, bench_logging
    from .bench_scoring import ScoringConfig, bench_incrementality, bench_scoring

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    try:  # every option checked before the first minute of measuring
        logging = LoggingConfig(**_given(sizes=args.sizes and tuple(args.sizes), batch=args.batch, seq=args.seq,
                                         repeats=args.repeats, autocast=args.autocast,
                                         dense=False if args.no_dense else None))
        scoring = ScoringConfig(**_given(rows=args.rows and tuple(args.rows),
                                         queries=args.queries and tuple(args.queries), threads=args.threads,
                                         cname=args.cname),
                                repeats=args.repeats, device=str(device))
    except ValidationError as err:
        problem = err.errors()[0]
        raise SystemExit(f"benchmarks: invalid option {problem['loc'][0]}: {problem['msg']}") from None
    results: dict = {"environment": _environment(device), "device": str(device), "sections": list(args.only)}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        if "logging" in args.only:
            print("logging ...")
            results["logging"] = bench_logging(logging, device)
        if "scoring" in args.only:
            print("scoring ...")
            results["scoring"] = bench_scoring(scoring, workdir)
        if "incrementality" in args.only:
            print("incrementality ...")
            results["incrementality"] = bench_incrementality(scoring, workdir)
        if "storage" in args.only:
            print("storage ...")
            results["storage"] = bench_codecs(CodecBenchConfig(), workdir)
        if "workers" in args.only:
            from .bench_workers import WorkersConfig, bench_workers

            print("workers ...")
            results["workers"] = bench_workers(WorkersConfig())
        if "ingest" in args.only:
            print("ingest ...")
            results["ingest"] = bench_ingest(IngestBenchConfig(**_given(examples=args.shard_examples and
                                                                         tuple(args.shard_examples))), workdir)
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = render(results)
    (args.out / "bench.json").write_text(json.dumps(results, indent=1))
    (args.out / "bench.md").write_text(markdown)
    print(markdown)
    print(f"written: {args.out / 'bench.json'}, {args.out / 'bench.md'}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
