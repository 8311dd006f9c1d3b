"""Shared set-up of the flow tests: one real Prefect API per session, one trained sample model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sample import SHARDS_DIR
from tasks.params import ModelParams, NightlyParams, Workspace

SAMPLE_SHARDS = sorted(SHARDS_DIR.glob("*.jsonl"))


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect server (the test harness runs one in a subprocess) with its own database."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def sample_model_dir(tmp_path_factory) -> Path:
    from sample.model import prepare_sample_model  # transformers: only for the tests that need the model

    return prepare_sample_model(tmp_path_factory.mktemp("models") / "sample-gpt2")


def nightly_params(tmp_path: Path, model_dir: Path, **overrides) -> NightlyParams:
    landing = tmp_path / "landing"
    landing.mkdir(exist_ok=True)
    return NightlyParams(
        workspace=Workspace(root=str(tmp_path / "ws")),
        landing=str(landing),
        model=ModelParams(name_or_path=str(model_dir)),
        **overrides,
    )


def land(params: NightlyParams, *shards: Path) -> None:
    for shard in shards:
        shutil.copy(shard, Path(params.landing) / shard.name)
