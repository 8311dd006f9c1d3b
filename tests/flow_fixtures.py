"""Shared set-up of the flow tests: one real Prefect API per session, one trained sample model.

conftest imports this for every test, so it imports nothing heavy at module level: a unit test
must not pay for torch, transformers or Prefect it does not use.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sample import SHARDS_DIR

if TYPE_CHECKING:
    from tasks.params import NightlyParams

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
    from tasks.params import ModelParams, NightlyParams, Workspace

    landing = tmp_path / "landing"
    landing.mkdir(exist_ok=True)
    return NightlyParams(
        workspace=Workspace(root=str(tmp_path / "ws")),
        landing=str(landing),
        model=ModelParams(name_or_path=str(model_dir)),
        **overrides,
    )


def finished_upload(path: Path) -> Path:
    """Mark a file as an upload that finished an hour ago, beyond the settle time that keeps files
    still being written out of a run."""
    then = time.time() - 3600
    os.utime(path, (then, then))
    return path


def land(params: NightlyParams, *shards: Path) -> None:
    for shard in shards:
        finished_upload(Path(shutil.copy(shard, Path(params.landing) / shard.name)))
