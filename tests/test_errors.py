"""Bad input reaches the user as one line, once: in the run's state, in the UI's logs, on the CLI.

Deterministic failures are not retried and leave no traceback in the run's logs; a logging task
that cannot go on names the shard, the example and the setting to change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker

from flows.cli import main
from flows.fisher import refresh_fisher
from flows.ingest import ingest
from flows.score import score
from sample.model import GPT2Shape, build_gpt2
from tasks.failures import fails_in_one_line, retry_if_transient
from tasks.params import flow_kwargs

from .flow_fixtures import SAMPLE_SHARDS, finished_upload, land, nightly_params

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, sample_model_dir, prefect_api):
    """A workspace with one committed shard and a Fisher snapshot: ready to score."""
    params = nightly_params(tmp_path_factory.mktemp("errors"), sample_model_dir)
    land(params, SAMPLE_SHARDS[0])
    assert ingest(**flow_kwargs(params.ingest()), return_state=True).is_completed()
    assert refresh_fisher(**flow_kwargs(params.refresh_fisher()), return_state=True).is_completed()
    return params


def other_model(directory: Path, sample_model_dir: Path, n_positions: int) -> Path:
    """A GPT-2 of another shape than the sample's, with the sample's tokenizer."""
    build_gpt2(GPT2Shape(vocab_size=512, n_positions=n_positions, n_embd=32, n_layer=1, n_head=2), seed=1
               ).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (sample_model_dir / name).exists():
            shutil.copy(sample_model_dir / name, directory / name)
    return directory


def run_record(state) -> tuple[list[str], list[int]]:
    """(every log line of the run, the run count of each of its task runs), as the UI shows them."""
    APILogWorker.drain_all(timeout=10)
    run = [state.state_details.flow_run_id]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run)))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run)))
    return [log.message for log in logs], [t.run_count for t in tasks]


def assert_one_line_failure(state, *fragments: str) -> None:
    assert state.is_failed()
    assert all(f in state.message for f in fragments), state.message
    assert "\n" not in state.message and "Traceback" not in state.message
    logs, run_counts = run_record(state)
    assert not any("Traceback" in line for line in logs), "\n".join(logs)
    assert all(count <= 1 for count in run_counts), run_counts  # nothing deterministic is retried


BAD_QUERIES = {
    "malformed.jsonl": (b'{"id": "q1", "text": "fine"}\n{"id": "q2", "text": \n', "line 2: invalid JSON"),
    "not-object.jsonl": (b'["a", "list"]\n', "line 1: expected a JSON object"),
    "latin1.jsonl": ('{"id": "q1", "text": "caf\u00e9"}\n'.encode("latin-1"), "line 1: not UTF-8"),
    "surrogate.jsonl": (b'{"id": "q1", "text": "\\ud800"}\n', "line 1: a string holds a lone UTF-16 surrogate"),
    "twice.jsonl": (b'{"id": "q1", "text": "one"}\n{"id": "q1", "text": "two"}\n',
                    "line 2: query id 'q1' repeats line 1"),
}


@pytest.mark.parametrize("name", sorted(BAD_QUERIES))
def test_a_bad_queries_file_is_one_line(scored, tmp_path, name, capsys):
    data, message = BAD_QUERIES[name]
    (tmp_path / name).write_bytes(data)
    params = scored.score().model_copy(update={"queries": str(tmp_path / name)})
    assert_one_line_failure(score(**flow_kwargs(params), return_state=True), name, message)

    assert main(["run", "score", "--workspace", scored.workspace.root, "--model", scored.model.name_or_path,
                 "--queries", str(tmp_path / name)]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert any(line.startswith("score: Failed") and message in line for line in out.out.splitlines())


def test_a_missing_queries_file_is_one_line(scored, tmp_path):
    params = scored.score().model_copy(update={"queries": str(tmp_path / "nowhere.jsonl")})
    assert_one_line_failure(score(**flow_kwargs(params), return_state=True), "nowhere.jsonl", "does not exist")


def test_a_model_directory_that_does_not_exist_is_one_line(scored, tmp_path):
    model = scored.model.model_copy(update={"name_or_path": str(tmp_path / "no-such-model")})
    assert_one_line_failure(score(**flow_kwargs(scored.score()) | {"model": model}, return_state=True),
                            "no-such-model", "does not exist")
    land(scored, SAMPLE_SHARDS[1])
    params = scored.ingest().model_copy(update={"model": model})
    assert_one_line_failure(ingest(**flow_kwargs(params), return_state=True), "no-such-model", "does not exist")


def test_a_dask_address_the_machine_does_not_allow_is_refused_in_one_line(scored, monkeypatch):
    # Any API user sets run parameters; only the machine running the flows says which schedulers it trusts.
    monkeypatch.setenv("DATAWORTH_DASK_ADDRESSES", "tcp://10.0.0.7:8786")
    run = flow_kwargs(scored.score()) | {"dask_address": "tcp://attacker.example:8786"}
    assert_one_line_failure(score(**run, return_state=True), "tcp://attacker.example:8786", "DATAWORTH_DASK_ADDRESSES")


def test_a_model_of_another_architecture_than_the_store_is_one_line(scored, tmp_path, sample_model_dir):
    other = other_model(tmp_path / "other", sample_model_dir, n_positions=256)
    model = scored.model.model_copy(update={"name_or_path": str(other)})
    assert_one_line_failure(score(**flow_kwargs(scored.score()) | {"model": model}, return_state=True), "mismatch")
    land(scored, SAMPLE_SHARDS[1])
    assert_one_line_failure(ingest(**flow_kwargs(scored.ingest()) | {"model": model}, return_state=True),
                            SAMPLE_SHARDS[1].name, "mismatch")


def test_a_model_with_a_shorter_context_than_max_length_is_logged_within_it(tmp_path, sample_model_dir):
    short = other_model(tmp_path / "short", sample_model_dir, n_positions=128)
    params = nightly_params(tmp_path, short)
    assert params.model.max_length > 128
    land(params, SAMPLE_SHARDS[0])
    state = ingest(**flow_kwargs(params.ingest()), return_state=True)
    assert state.is_completed(), state.message
    logs, _ = run_record(state)
    assert any("max_length" in line and "context of 128 tokens" in line for line in logs), "\n".join(logs)


def test_an_example_that_cannot_be_logged_fails_its_shard_once_naming_it(tmp_path, sample_model_dir):
    params = nightly_params(tmp_path, sample_model_dir)
    params = params.model_copy(update={"model": params.model.model_copy(update={"max_length": 8})})
    shard = Path(params.landing) / "long-prompts.jsonl"
    shard.write_text(json.dumps({"id": "lp-1", "provider": "p", "prompt": "a prompt far longer than eight tokens, "
                                 "so nothing of the response is left to learn from", "response": "yes"}) + "\n")
    finished_upload(shard)
    assert_one_line_failure(ingest(**flow_kwargs(params.ingest()), return_state=True),
                            "long-prompts.jsonl", "lp-1", "max_length")


def test_only_transient_faults_are_retried():
    calls: list[str] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_if_transient)
    @fails_in_one_line
    def attempt(fault: type[Exception]) -> str:
        calls.append(fault.__name__)
        if len(calls) == 1 or fault is ValueError:
            raise fault("the shared filesystem dropped out" if fault is ConnectionError else "a bad setting")
        return "done"

    @flow
    def both():
        return attempt(ConnectionError, return_state=True), attempt(ValueError, return_state=True)

    transient, deterministic = both()
    assert transient.is_completed() and calls[:2] == ["ConnectionError", "ConnectionError"]
    assert deterministic.is_failed() and deterministic.message == "a bad setting"
    assert calls[2:] == ["ValueError"]  # once, not retried
