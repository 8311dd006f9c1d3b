"""`python -m benchmarks.run` and the prepared GPU check run end to end at toy sizes (smoke tests:
nothing here is timed) and write their JSON and Markdown."""

import json

import pytest

from benchmarks import gpu_check
from benchmarks.run import main


@pytest.mark.slow
def test_bench_command_writes_ratios(tmp_path):
    argv = ["--only", "logging", "scoring", "incrementality", "--sizes", "gpt2-64x2", "--batch", "2",
            "--seq", "16", "--rows", "1024", "--queries", "4", "--repeats", "1", "--out", str(tmp_path)]
    main(argv)
    results = json.loads((tmp_path / "bench.json").read_text())
    (logging,) = results["logging"]
    assert logging["overhead_vs_plain"] > 0 and logging["speedup_vs_dense"] > 0
    (scoring,) = results["scoring"]
    assert scoring["vs_matmul"]["matmul_in_memory"]["median"] == 1.0
    assert scoring["vs_matmul_cpu"]["scan_from_store"]["median"] > 0
    assert len(results["incrementality"]["commit_seconds"]) == 9
    assert "LoGra time / plain" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_at_toy_size(tmp_path):
    gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["device"] == "cpu"
    (logging,) = results["logging"]
    assert logging["autocast"] == "bfloat16" and "dense" not in logging["seconds"]
    assert logging["true_fisher_overhead_vs_plain"] > 0
    (scoring,) = results["scoring"]
    assert scoring["device"] == "cpu" and scoring["vs_matmul"]["scan_from_store"]["median"] > 0
    assert "vs in-memory matmul" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_workers_bench_stages_on_s3_and_commits_every_shard_once():
    from benchmarks.bench_workers import WorkersConfig, bench_workers

    results = bench_workers(WorkersConfig(shards=2, shard_rows=8))
    assert [r["workers"] for r in results["runs"]] == [1, 2]
    assert results["runs"][0]["speedup_vs_one"] == 1.0 and results["runs"][1]["speedup_vs_one"] > 0


@pytest.mark.slow
def test_ingest_bench_measures_memory_by_shard_size_and_fisher_bytes_by_shard_count(tmp_path):
    from benchmarks.bench_ingest import IngestBenchConfig, bench_ingest
    from benchmarks.run import render_ingest

    results = bench_ingest(IngestBenchConfig(examples=(16, 48), shard_counts=(1, 4), fisher_rows=64, batch=8,
                                             commit_rows=(100,)),
                           tmp_path)
    assert set(results["peak_ratio_largest_vs_smallest"]) == {"logging", "commit", "in_memory"}
    # One running total, whatever the shard count (bytes, not time: deterministic up to compression).
    assert [f["shards"] for f in results["fisher"]] == [1, 4]
    assert abs(results["fisher"][1]["totals_vs_fewest"] - 1) < 0.05
    assert "48 / 16" in render_ingest(results) and "100 rows" in render_ingest(results)
