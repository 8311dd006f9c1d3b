"""The benchmark command runs end to end at toy sizes and writes its JSON and Markdown."""

import argparse
import json

import pytest

from flows.eval_cli import add_bench_arguments, run_bench


@pytest.mark.slow
def test_bench_command_writes_ratios(tmp_path):
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    argv = ["--only", "logging", "scoring", "incrementality", "--sizes", "gpt2-64x2", "--batch", "2",
            "--seq", "16", "--rows", "1024", "--repeats", "1", "--out", str(tmp_path)]
    assert run_bench(parser.parse_args(argv)) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    (logging,) = results["logging"]
    assert logging["overhead_vs_plain"] > 0 and logging["speedup_vs_dense"] > 0
    assert results["scoring"]["vs_matmul"]["matmul_in_memory"] == 1.0
    assert len(results["incrementality"]["commit_seconds"]) == 9
    assert "LoGra time / plain" in (tmp_path / "bench.md").read_text()
