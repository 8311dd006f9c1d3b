"""`dataworth run nightly --model DIR` on a tiny saved model of every family: ingest and score."""

import json
import re

import pytest
from transformers import AutoTokenizer

from flows.cli import main
from storage import GradientStore

from .families import CONFIGS, save_tiny
from .flow_fixtures import SAMPLE_SHARDS, finished_upload
from .test_architectures import FAMILIES, per_layer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]
EXAMPLES = 12


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_nightly_values_a_model_of_every_family(family, tmp_path, sample_model_dir):
    model_dir = save_tiny(family, tmp_path / re.sub(r"\W+", "-", family),
                          tokenizer=AutoTokenizer.from_pretrained(sample_model_dir))
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "night-01.jsonl").write_text("".join(SAMPLE_SHARDS[0].read_text().splitlines(True)[:EXAMPLES]))
    finished_upload(landing / "night-01.jsonl")
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join((SAMPLE_SHARDS[0].parent.parent / "queries.jsonl").read_text().splitlines(True)[:2]))
    workspace = tmp_path / "ws"

    # No capsys: Prefect's console handler keeps the stream it first saw, and capsys closes its own.
    assert main(["run", "nightly", "--workspace", str(workspace), "--landing", str(landing),
                 "--queries", str(queries), "--model", str(model_dir)]) == 0

    store = GradientStore.open(str(workspace / "store.zarr"), read_only=True)
    assert store.n_rows == EXAMPLES
    tracked = [per_layer(m.name)[1] for m in store.layout.modules if per_layer(m.name)[0] == 0]
    assert tracked == FAMILIES[family]["tracked"]
    reports = sorted((workspace / "reports").glob("*/report.json"))
    assert reports and json.loads(reports[-1].read_text())["providers"]
