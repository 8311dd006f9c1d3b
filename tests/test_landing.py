"""The ingest flow against a real Prefect API, fed what a landing location really holds: uploads
in progress, hostile links, directories, text no tokenizer can encode, a provider misspelt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.ingest import ingest
from storage import GradientStore
from tasks.params import flow_kwargs

from .flow_fixtures import SAMPLE_SHARDS, finished_upload, land, nightly_params
from .test_flows import await_keys

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def statuses(summary) -> dict[str, str]:
    return {o.name: o.status for o in summary.outcomes}


def write_finished(path: Path, records: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    finished_upload(path)


def test_what_a_landing_really_holds(tmp_path, sample_model_dir):
    params = nightly_params(tmp_path, sample_model_dir).ingest()
    landing = Path(params.landing)
    land(params, SAMPLE_SHARDS[0])  # weather-desk and others, committed first
    first = ingest(**flow_kwargs(params), return_state=True)
    assert first.is_completed(), first.message

    # A valid-JSON lone surrogate: no tokenizer can encode it, so it must not get past validation.
    write_finished(landing / "surrogate.jsonl", [
        {"id": "s-1", "provider": "weather-desk", "text": "fine"},
        '{"id": "s-2", "provider": "weather-desk", "text": "\\ud800"}',
    ])
    write_finished(landing / "case.jsonl", [{"id": "c-1", "provider": "Weather-Desk", "text": "same desk?"}])
    (landing / "uploading.jsonl").write_text(json.dumps({"id": "u-1", "provider": "p", "text": "half"}))
    (landing / "dir.jsonl").mkdir()
    (landing / "passwd.jsonl").symlink_to("/etc/passwd")

    state = ingest(**flow_kwargs(params), return_state=True)
    summary = state.result(raise_on_failure=False)
    assert state.is_failed() and "surrogate.jsonl" in state.message and "case.jsonl" in state.message
    assert statuses(summary) == {SAMPLE_SHARDS[0].name: "skipped", "surrogate.jsonl": "quarantined",
                                 "case.jsonl": "quarantined", "uploading.jsonl": "waiting",
                                 "dir.jsonl": "refused", "passwd.jsonl": "refused"}
    reports = {p.name.split("-", 1)[1]: json.loads(p.read_text())
               for p in params.workspace.quarantine.glob("*.problems.json")}
    assert set(reports) == {"surrogate.jsonl.problems.json", "case.jsonl.problems.json"}
    [surrogate] = reports["surrogate.jsonl.problems.json"]["problems"]
    assert (surrogate["line"], surrogate["field"]) == (2, "line") and "surrogate" in surrogate["reason"]
    [case] = reports["case.jsonl.problems.json"]["problems"]
    assert case["field"] == "provider" and "'weather-desk'" in case["reason"]
    assert not any("passwd" in p.name for p in params.workspace.quarantine.iterdir())
    keys = " ".join(await_keys(state))
    assert keys.count("quarantine-") == 2 and "ingest-summary" in keys

    # The next night: the upload has finished; the quarantined shards are held, not failed again.
    finished_upload(landing / "uploading.jsonl")
    again = ingest(**flow_kwargs(params), return_state=True)
    assert again.is_completed(), again.message
    summary = again.result()
    assert statuses(summary)["uploading.jsonl"] == "committed"
    assert statuses(summary)["surrogate.jsonl"] == statuses(summary)["case.jsonl"] == "held"
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    assert "u-1" in store.read_metadata().example_ids and "s-1" not in store.read_metadata().example_ids
