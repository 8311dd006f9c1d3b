"""`python -m benchmarks.run` runs end to end at toy sizes and writes its JSON and Markdown."""

import json

import pytest

from benchmarks.run import main


@pytest.mark.slow
def test_bench_command_writes_ratios(tmp_path):
    argv = ["--only", "logging", "scoring", "incrementality", "--sizes", "gpt2-64x2", "--batch", "2",
            "--seq", "16", "--rows", "1024", "--repeats", "1", "--out", str(tmp_path)]
    main(argv)
    results = json.loads((tmp_path / "bench.json").read_text())
    (logging,) = results["logging"]
    assert logging["overhead_vs_plain"] > 0 and logging["speedup_vs_dense"] > 0
    assert results["scoring"]["vs_matmul"]["matmul_in_memory"] == 1.0
    assert len(results["incrementality"]["commit_seconds"]) == 9
    assert "LoGra time / plain" in (tmp_path / "bench.md").read_text()
