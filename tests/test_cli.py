"""The `dataworth` command in-process: help that teaches, store inspection, report diffs."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from flows.cli import build_parser, main
from reporting.export import write_report
from storage import GradientStore
from tests.test_reporting import make_report
from tests.test_store_support import MODEL, SPEC, make_shard
from tests.test_store_verify import flip_bytes


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_examples_in_its_help(capsys):
    # Every subcommand, including ones added later (argparse keeps them on a private action).
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"run", "server", "serve", "stability", "store", "report"} <= set(commands)
    top = help_text(capsys)
    for name in commands:
        assert re.search(rf"^  dataworth {name}\b", top, re.MULTILINE), name
        examples = help_text(capsys, name).split("examples:\n", 1)[1]
        lines = examples.strip().splitlines()
        assert lines and all(line.split()[:2] == ["dataworth", name] for line in lines), name


def test_server_binds_to_loopback_unless_told_otherwise():
    assert build_parser().parse_args(["server"]).host == "127.0.0.1"


@pytest.fixture
def store_url(tmp_path) -> str:
    url = str(tmp_path / "store.zarr")
    store = GradientStore.create(url, SPEC, MODEL, chunk_rows=16)
    for seed in range(2):
        shard_hash, rows, meta = make_shard(seed, 20)
        store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL)
    return url


def test_store_info_and_verify(store_url, capsys):
    assert main(["store", "info", "--store", store_url]) == 0
    text = capsys.readouterr().out
    assert "40 committed" in text and "shards     2" in text

    assert main(["store", "info", "--store", store_url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 40 and set(info["providers"]) == {"alice", "bob", "carol"}

    assert main(["store", "verify", "--store", store_url]) == 0
    assert capsys.readouterr().out.strip() == f"{store_url}: OK"


def test_store_info_says_what_fixes_the_rows_meaning(tmp_path, capsys):
    url = str(tmp_path / "store.zarr")
    encoding = {"bos": "add", "eos": "auto", "special_tokens": {"text_start": ["<s>"], "text_end": [],
                                                                  "prompt_end": [], "response_end": ["</s>"]}}
    calibration = {"shards": ["a.jsonl", "b.jsonl"], "examples": 512, "sha256": "ab" * 32}
    GradientStore.create(url, SPEC, MODEL, chunk_rows=16, encoding=encoding, calibration=calibration)
    assert main(["store", "info", "--store", url]) == 0
    text = capsys.readouterr().out
    assert "PCA fitted on 512 examples of 2 shard(s), sha256 abababababababab" in text
    assert "bos add, eos auto: text_start <s>, text_end -, prompt_end -, response_end </s>" in text
    assert main(["store", "info", "--store", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["encoding"] == encoding and info["calibration"] == calibration and "estimator" in info["fisher"]


def test_store_verify_fails_on_a_corrupted_store(store_url, tmp_path, capsys):
    flip_bytes(tmp_path / "store.zarr" / "rows" / "c" / "1" / "0")
    assert main(["store", "verify", "--store", store_url]) == 1
    assert "problem: " in capsys.readouterr().out
    assert main(["store", "verify", "--store", store_url, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["problems"]


def test_store_defaults_to_the_workspace_store(tmp_path, capsys):
    workspace = tmp_path / "ws"
    GradientStore.create(str(workspace / "store.zarr"), SPEC, MODEL, chunk_rows=16)
    assert main(["store", "verify", "--workspace", str(workspace)]) == 0
    assert capsys.readouterr().out.strip().endswith("store.zarr: OK")


def test_report_diff(tmp_path, capsys):
    before = make_report(store_version="41")[0]
    after = make_report(providers=("acme", "borealis", "delta"), bias=(0.2, 0.6, 0.1), store_version="42")[0]
    write_report(before, tmp_path / "a")
    write_report(after, tmp_path / "b")
    assert main(["report", "diff", str(tmp_path / "a"), str(tmp_path / "b" / "report.json")]) == 0
    table = capsys.readouterr().out
    assert "changed store_version: 41 → 42" in table
    assert any(line.startswith("delta ") and line.rstrip().endswith("new") for line in table.splitlines())
    assert "warning: the reports cover different providers (1 new, 1 gone)" in table

    assert main(["report", "diff", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    delta = next(c for c in diff["providers"] if c["provider"] == "acme")
    assert delta["share_delta"] == pytest.approx(after.provider("acme").share - before.provider("acme").share)
    assert [c["field"] for c in diff["provenance"]] == ["store_version"] and len(diff["warnings"]) == 1


def test_bad_input_before_a_flow_runs_is_one_line(tmp_path, capsys):
    assert main(["run", "nightly", "--params", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.json" in err and err.count("\n") == 1
    (tmp_path / "p.json").write_text('{"model": {"batch_size": 0}}')
    assert main(["run", "nightly", "--params", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "batch_size" in err and err.count("\n") == 1 and "Traceback" not in err


def test_flags_override_the_params_file_field_by_field(tmp_path, capsys):
    from flows.cli import _flow_params

    night = tmp_path / "night.json"
    night.write_text(json.dumps({
        "workspace": {"root": "/from/file"}, "mode": "cosine", "top_k": 7,
        "model": {"name_or_path": "/file/model", "batch_size": 4}, "projection": {"rank_in": 8, "init": "pca"},
    }))
    params = _flow_params(build_parser().parse_args([
        "run", "nightly", "--params", str(night), "--workspace", str(tmp_path / "ws"), "--mode", "relatif",
        "--rank", "32", "--batch-size", "2", "--max-length", "64", "--precision", "fp32",
        "--estimator", "empirical", "--damping", "0.3", "--init", "random", "--bos", "add", "--eos", "omit",
    ]))
    assert params.workspace.root == str(tmp_path / "ws")  # the file's workspace won before
    assert (params.mode, params.top_k) == ("relatif", 7)  # a flag wins; the file's other fields stay
    assert params.model.model_dump(include={"name_or_path", "batch_size", "max_length", "precision"}) == {
        "name_or_path": "/file/model", "batch_size": 2, "max_length": 64, "precision": "fp32"}
    assert (params.model.bos, params.model.eos) == ("add", "omit")
    assert (params.projection.rank_in, params.projection.rank_out, params.projection.init) == (32, 32, "random")
    assert (params.fisher.estimator, params.fisher.damping) == ("empirical", 0.3)
    assert not params.refresh.force
    assert "a flag always wins over the file" in " ".join(help_text(capsys, "run").split())


def test_a_bad_cron_or_time_zone_for_serve_is_one_line(capsys):
    for flags, what in ((["--cron", "61 2 * * *"], "cron '61 2 * * *'"),
                        (["--timezone", "Mars/Olympus"], "time zone 'Mars/Olympus'")):
        assert main(["serve", *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {what}") and err.count("\n") == 1, err
