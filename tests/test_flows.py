"""The flows against a real Prefect API: nightly end to end, incremental runs, bad shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from flows.ingest import ingest
from flows.nightly import nightly_valuation
from storage import GradientStore
from tasks.params import StabilityPolicy, flow_kwargs

from .flow_fixtures import SAMPLE_SHARDS, finished_upload, land, nightly_params

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def outcomes(summary, status):
    return [o.name for o in summary.ingest.outcomes if o.status == status]


async def artifact_keys(flow_run_id) -> set[str]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key for a in artifacts}


def logged_lines(flow_run_id) -> list[str]:
    """The log of a run and of its subflow runs, as the UI's Logs tabs show them."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        runs = [flow_run_id, *(child.id for child in children)]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)))
    return [log.message for log in logs]


def run_nightly(params):
    state = nightly_valuation(**flow_kwargs(params), return_state=True)
    return state, state.result(raise_on_failure=False)


def test_nightly_end_to_end_then_incremental(tmp_path, sample_model_dir):
    # Stability on a small sample of the landing: the measurement, not its precision, is under test.
    params = nightly_params(tmp_path, sample_model_dir, stability=StabilityPolicy(max_examples=24))
    # Shards fan out over two "devices" (both the CPU here), as they would over two GPUs.
    params = params.model_copy(update={"model": params.model.model_copy(update={"devices": ["cpu", "cpu"]})})
    land(params, *SAMPLE_SHARDS[:3])

    state, first = run_nightly(params)
    assert state.is_completed(), state.message
    assert sorted(outcomes(first, "committed")) == [s.name for s in SAMPLE_SHARDS[:3]]
    report = json.loads(Path(first.score.files["json"]).read_text())
    assert {p["provider"] for p in report["providers"]} >= {"weather-desk", "kitchen-notes", "qa-tutor"}
    assert report["provenance"]["fisher_snapshot"] == 1
    # The night measured the stability it lacked, before scoring: the report shows it.
    assert (report["stability"]["snapshot"], report["stability"]["examples"]) == (1, 24)
    for kind in ("html", "markdown", "providers_csv"):
        assert Path(first.score.files[kind]).is_file()
    provenance = report["provenance"]
    assert provenance["code_version"]
    assert provenance["tokenization"]["special_tokens"]["response_end"] == ["<|endoftext|>"]
    assert (provenance["max_length"], provenance["store"]) == (params.model.max_length, "store.zarr")
    # Nothing of the operator's machine, and no shard name, in the report or any export.
    shards = [s.stem for s in SAMPLE_SHARDS[:3]]
    for kind, path in first.score.files.items():
        text = Path(path).read_text()
        assert str(tmp_path) not in text and str(Path.home()) not in text, kind
        if kind.startswith(("provider:", "provider-html:")):
            assert not any(shard in text for shard in shards), kind
            # Nor another provider's name (sample example ids start with it); the sample's query ids
            # name providers too, but they are the operator's, sent to everyone.
            own = kind.split(":", 1)[1]
            for query in report["credit_matrix"]["queries"]:
                text = text.replace(query, "")
            assert not [p["provider"] for p in report["providers"] if p["provider"] != own and p["provider"] in text]
    # Progress of every long stage is in the run's own log, not only on a terminal.
    lines = logged_lines(state.state_details.flow_run_id)
    for stage in [f"log {s.name}: 100%" for s in SAMPLE_SHARDS[:3]] + ["self-influence: 100%", "rows: 100%"]:
        assert any(stage in line for line in lines), stage

    land(params, SAMPLE_SHARDS[3])
    state, second = run_nightly(params)
    assert state.is_completed(), state.message
    assert outcomes(second, "committed") == [SAMPLE_SHARDS[3].name]
    assert len(outcomes(second, "skipped")) == 3
    report2 = json.loads(Path(second.score.files["json"]).read_text())
    assert report2["provenance"]["store_version"] != report["provenance"]["store_version"]
    # A new Fisher snapshot makes the measurement stale: measured again for it.
    assert report2["stability"]["snapshot"] == report2["provenance"]["fisher_snapshot"] == 2
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    assert store.n_rows == sum(len(s.read_text().splitlines()) for s in SAMPLE_SHARDS)

    state, third = run_nightly(params)
    assert state.is_completed()
    assert outcomes(third, "committed") == [] and len(outcomes(third, "skipped")) == 4
    assert GradientStore.open(params.workspace.store_url, read_only=True).n_rows == store.n_rows


def test_bad_shard_is_quarantined_and_the_run_says_so(tmp_path, sample_model_dir):
    params = nightly_params(tmp_path, sample_model_dir)
    land(params, SAMPLE_SHARDS[0])
    lines = SAMPLE_SHARDS[1].read_text().splitlines()
    lines[2] = '{"id": "x-1", "text": "no provider here"}'
    lines[4] = "{not json"
    lines[6] = json.dumps({"id": "../../etc/passwd", "provider": "p", "text": "escape"})
    (Path(params.landing) / "night-bad.jsonl").write_text("\n".join(lines) + "\n")
    finished_upload(Path(params.landing) / "night-bad.jsonl")

    state = ingest(**flow_kwargs(params.ingest()), return_state=True)
    summary = state.result(raise_on_failure=False)
    assert state.is_failed() and "night-bad.jsonl" in state.message
    assert [o.name for o in summary.outcomes if o.status == "committed"] == [SAMPLE_SHARDS[0].name]
    report = json.loads(next(Path(params.workspace.quarantine).glob("*.problems.json")).read_text())
    problems = {(p["line"], p["field"]) for p in report["problems"]}
    assert problems == {(3, "provider"), (5, "line"), (7, "id")}
    assert "quarantine-" in " ".join(await_keys(state))

    # The next night: still quarantined, not re-reported as a new failure; nothing duplicated.
    again = ingest(**flow_kwargs(params.ingest()), return_state=True)
    assert again.is_completed()
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    assert store.n_rows == len(SAMPLE_SHARDS[0].read_text().splitlines())


def await_keys(state):
    import asyncio

    return asyncio.run(artifact_keys(state.state_details.flow_run_id))


def test_pca_projection_is_fitted_once_and_kept_with_the_store(tmp_path, sample_model_dir):
    from valuation import ProjectionConfig

    params = nightly_params(tmp_path, sample_model_dir, projection=ProjectionConfig(rank_in=8, rank_out=8),
                            calibration_examples=30)
    assert params.projection.init == "pca"  # the default
    land(params, *SAMPLE_SHARDS[:2])
    state, first = run_nightly(params)
    assert state.is_completed(), state.message
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    projections = store.projections()
    assert store.spec.config.init == "pca" and projections is not None
    calibration = store.attributes.calibration
    # 30 examples taken in turn from both of the first night's shards, named in store and report
    assert calibration["examples"] == 30 and [s["name"] for s in calibration["shards"]] == [
        s.name for s in SAMPLE_SHARDS[:2]]
    report = json.loads(Path(first.score.files["json"]).read_text())
    assert report["provenance"]["projection_calibration"] == {  # no shard names in a report
        "examples": 30, "shards": 2, "sha256": calibration["sha256"]}

    # Another projection cannot apply to this store: refused at once, not Completed with the old one.
    other = params.model_copy(update={"projection": ProjectionConfig(init="random", rank_in=8, rank_out=8)})
    refused, _ = run_nightly(other)
    assert refused.is_failed() and "projection.init 'pca' (asked 'random')" in refused.message
    assert "new workspace" in refused.message and "\n" not in refused.message

    land(params, SAMPLE_SHARDS[2])  # logged with the stored matrices, not a new fit
    state, second = run_nightly(params)
    assert state.is_completed(), state.message
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    assert store.n_rows == sum(len(s.read_text().splitlines()) for s in SAMPLE_SHARDS[:3])
    assert store.attributes.calibration == calibration
    assert second.score.files["json"] != first.score.files["json"]


def test_bos_from_the_cli_is_how_the_stored_rows_were_tokenised(tmp_path, sample_model_dir, capsys):
    from flows.cli import main

    params = nightly_params(tmp_path, sample_model_dir)
    land(params, SAMPLE_SHARDS[0])
    night = tmp_path / "night.json"
    night.write_text(json.dumps({"calibration_examples": 16}))
    run = ["run", "ingest", "--params", str(night), "--workspace", params.workspace.root,
           "--landing", params.landing, "--model", str(sample_model_dir)]
    assert main([*run, "--bos", "add"]) == 0, capsys.readouterr().out
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    assert store.n_rows > 0
    # The sample's GPT-2 tokenizer adds no BOS itself: "add" put its bos_token before every example.
    assert store.attributes.encoding == {"bos": "add", "eos": "auto", "special_tokens": {
        "text_start": ["<|endoftext|>"], "text_end": [], "prompt_end": [], "response_end": ["<|endoftext|>"]}}

    capsys.readouterr()
    assert main(run) == 1  # bos "auto" would tokenise new rows otherwise: refused before anything is done
    out = capsys.readouterr().out
    assert "model.bos 'add' (asked 'auto'), text_start ['<|endoftext|>'] (asked [])" in out
