"""Seed stability: the same seed twice agrees perfectly; different seeds are measured honestly."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from sample.model import load_sample_corpus, sample_queries_path
from scoring.results import Stability
from scoring.stability import credit_stability
from storage import GradientStore
from tasks.models import load_model
from tasks.params import NightlyParams, StabilityPolicy, Workspace
from tasks.stability import describe, saved_stability, stability_due, store_key
from valuation import FisherConfig, ProjectionConfig
from valuation.data import read_jsonl

from .test_store_support import MODEL, SPEC

RANDOM = ProjectionConfig(init="random", rank_in=4, rank_out=4)


@pytest.fixture(scope="module")
def sample(sample_model_dir):
    model, tokenizer = load_model(sample_model_dir)
    return model, tokenizer, load_sample_corpus()[:60], read_jsonl(sample_queries_path())[:4]


def test_same_seed_agrees_perfectly(sample):
    model, tokenizer, examples, queries = sample
    result = credit_stability(model, tokenizer, examples, queries, projection=RANDOM, variants=[3, 3])
    assert result.spearman_min == pytest.approx(1.0)
    assert set(result.share_spread.values()) == {0.0} and result.varies == "projection seed"
    # The default (sampled-label) Fisher draws its labels with the variant's seed too, and says so.
    assert result.labels_redrawn
    assert "across projection seeds and the sampled labels [3, 3]" in describe(result)


def test_the_empirical_fisher_has_no_labels_to_redraw(sample):
    model, tokenizer, examples, queries = sample
    result = credit_stability(model, tokenizer, examples, queries, projection=RANDOM, variants=[3, 3],
                              fisher=FisherConfig(estimator="empirical"))
    assert not result.labels_redrawn and result.redrawn(plural=True) == "projection seeds"


def test_different_seeds_are_measured(sample):
    model, tokenizer, examples, queries = sample
    keys_before = list(dict(model.named_parameters()))
    result = credit_stability(model, tokenizer, examples, queries, projection=RANDOM, variants=[0, 1, 2])
    assert -1.0 <= result.spearman_min <= result.spearman_mean < 1.0
    assert list(dict(model.named_parameters())) == keys_before  # add-ons removed after each seed


def test_pca_varies_the_calibration_half(sample):
    model, tokenizer, examples, queries = sample
    result = credit_stability(model, tokenizer, examples, queries,
                              projection=ProjectionConfig(rank_in=4, rank_out=4, init="pca"), variants=[1, 1, 2])
    assert result.varies == "calibration half"
    # The same half twice agrees perfectly; another half moves the credit a little.
    assert result.spearman_min < result.spearman_mean < 1.0
    assert result.calibration_examples == 30


def test_pca_halves_are_cut_to_the_stores_calibration_size(sample):
    model, tokenizer, examples, queries = sample
    result = credit_stability(model, tokenizer, examples, queries, projection=ProjectionConfig(rank_in=4, rank_out=4),
                              variants=[1, 2], calibration_examples=8)
    assert result.calibration_examples == 8 and result.examples == 60


def save(params: NightlyParams, store: GradientStore, **changes) -> None:
    stability = Stability(varies="projection seed", variants=[0, 1], spearman_mean=0.8, spearman_min=0.8,
                          share_spread={}, share_spread_median=0.0, examples=2, queries=1,
                          measured_at=datetime.now(UTC), snapshot=None).model_copy(update=changes)
    params.workspace.stability.write_text(json.dumps(
        {"key": store_key(store, params), "stability": stability.model_dump(mode="json")}))


def test_the_nightly_measures_stability_when_its_measurement_is_missing_stale_or_for_another_store(tmp_path):
    params = NightlyParams(workspace=Workspace(root=str(tmp_path)))
    store = GradientStore.create(params.workspace.store_url, SPEC, MODEL, chunk_rows=16)
    assert stability_due(params, store) == "no measurement for this projection, model and mode"
    save(params, store)
    assert stability_due(params, store) is None
    assert saved_stability(params.workspace.stability, store_key(store, params)).spearman_mean == 0.8
    later = datetime.now(UTC) + timedelta(hours=params.stability.max_age_hours + 1)
    assert stability_due(params, store, now=later).startswith("measured 169 hours ago")
    save(params, store, snapshot=4)
    assert stability_due(params, store) == "measured at Fisher snapshot 4, the store is at None"
    assert stability_due(params.model_copy(update={"stability": StabilityPolicy(enabled=False)}), store) is None
    other_mode = params.model_copy(update={"mode": "cosine"})
    assert stability_due(other_mode, store).startswith("no measurement")
    params.workspace.stability.write_text('{"key": 1, "stability": {"seeds": [0]}}')  # an older version's
    assert stability_due(params, store).startswith("no measurement")


def test_a_measurement_applies_to_stores_of_its_special_tokens_only(tmp_path):
    params = NightlyParams(workspace=Workspace(root=str(tmp_path)))
    plain = GradientStore.create(str(tmp_path / "plain.zarr"), SPEC, MODEL, chunk_rows=16)
    bos = GradientStore.create(str(tmp_path / "bos.zarr"), SPEC, MODEL, chunk_rows=16,
                               encoding={"bos": "add", "eos": "auto", "special_tokens": {}})
    save(params, plain)
    assert "special_tokens" not in store_key(plain, params)  # the default: measurements saved before still apply
    assert stability_due(params, plain) is None
    assert stability_due(params, bos) == "no measurement for this projection, model and mode"
