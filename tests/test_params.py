"""Flow parameters: one top-level parameter per field, each described, equal to its model's; and
settings an existing store fixes are refused, not silently ignored."""

from __future__ import annotations

import inspect

import pytest
from pydantic.fields import FieldInfo

from flows.fisher import refresh_fisher
from flows.ingest import ingest
from flows.nightly import nightly_valuation
from flows.score import score
from storage import GradientStore
from tasks.params import IngestParams, ModelParams, NightlyParams, RefreshParams, ScoreParams, Workspace
from tasks.store_settings import query_encoding_conflict, settings_conflict
from valuation.config import FisherConfig
from valuation.data import Encoder, SpecialTokens

from .models import gpt2_style_tokenizer, llama_style_tokenizer, tokenizer_without_bos
from .test_store_support import MODEL, SPEC

FLOWS = [(nightly_valuation, NightlyParams), (ingest, IngestParams), (refresh_fisher, RefreshParams),
         (score, ScoreParams)]


@pytest.mark.parametrize(("flow", "model"), FLOWS, ids=lambda x: getattr(x, "name", ""))
def test_a_flow_takes_its_models_fields_as_top_level_parameters(flow, model):
    signature = inspect.signature(flow.fn, eval_str=True).parameters
    assert list(signature) == list(model.model_fields)
    for name, field in model.model_fields.items():
        default = signature[name].default
        assert (default.default, default.description) == (field.default, field.description), name
        typed = FieldInfo.from_annotation(signature[name].annotation)  # Annotated limits move to metadata
        assert (typed.annotation, typed.metadata) == (field.annotation, field.metadata), name


@pytest.mark.parametrize(("flow", "model"), FLOWS, ids=lambda x: getattr(x, "name", ""))
def test_every_field_of_the_run_form_is_described(flow, model):
    schema = flow.parameters.model_dump_for_openapi()
    undescribed = [name for name, prop in schema["properties"].items() if not prop.get("description")]
    for group, definition in schema.get("definitions", {}).items():
        undescribed += [f"{group}.{name}" for name, prop in definition.get("properties", {}).items()
                        if not prop.get("description")]
    assert undescribed == []


@pytest.mark.parametrize(("flow", "model"), FLOWS, ids=lambda x: getattr(x, "name", ""))
def test_the_run_form_keeps_every_limit_of_the_model(flow, model):
    # The API refuses a run outside these before it is created (top_k 0, a negative settle time).
    limits = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum")
    form = flow.parameters.model_dump_for_openapi()["properties"]
    for name, prop in model.model_json_schema()["properties"].items():
        assert {k: prop[k] for k in limits if k in prop} == {k: form[name][k] for k in limits if k in form[name]}, name
    if "top_k" in form:
        assert (form["top_k"]["minimum"], form["top_k"]["maximum"]) == (1, 100)


def test_artifact_keys_name_the_workspace(tmp_path):
    a, b = Workspace(root=str(tmp_path / "Night Run_1")), Workspace(root=str(tmp_path / "b" / "Night Run_1"))
    assert a.key != b.key and a.key.startswith("night-run-1-")
    assert all(c.islower() or c.isdigit() or c == "-" for c in a.key + Workspace().key)


def test_projection_or_fisher_other_than_the_stores_is_refused_in_one_line(tmp_path):
    store = GradientStore.create(str(tmp_path / "store.zarr"), SPEC, MODEL, chunk_rows=16,
                                 fisher=FisherConfig(estimator="true"))

    def asked(projection=SPEC.config, fisher=FisherConfig()):
        return IngestParams(workspace=Workspace(root=str(tmp_path)), projection=projection, fisher=fisher)

    assert settings_conflict(store, asked(fisher=FisherConfig(damping=0.5))) is None  # auto: "true" for an LM
    assert settings_conflict(store, asked(fisher=FisherConfig(estimator="true", damping=0.5))) is None  # damping:
    # a setting of the next refresh
    message = settings_conflict(store, asked(SPEC.config.model_copy(update={"rank_in": 8}),
                                             FisherConfig(estimator="empirical")))
    assert message is not None and "\n" not in message
    assert "projection.rank_in 4 (asked 8)" in message and "fisher.estimator 'true' (asked 'empirical')" in message
    assert "new workspace" in message


def saved(tokenizer, path):
    tokenizer.save_pretrained(path)  # all a run needs to resolve its special tokens
    return str(path)


@pytest.mark.parametrize(("made", "old_store"), [(SpecialTokens(), False), (SpecialTokens(), True),
                                                 (SpecialTokens(bos="add"), False)], ids=["auto", "old", "add"])
def test_special_tokens_other_than_the_stores_are_refused_in_one_line(tmp_path, made, old_store):
    gpt2 = gpt2_style_tokenizer()
    # A store from before the setting was recorded holds None: its rows got the tokenizer's own.
    encoding = None if old_store else Encoder(gpt2, 64, made).identity()
    store = GradientStore.create(str(tmp_path / "store.zarr"), SPEC, MODEL, chunk_rows=16,
                                 fisher=FisherConfig(estimator="true"), encoding=encoding)
    workspace = Workspace(root=str(tmp_path))

    def conflict(model):
        return settings_conflict(store, IngestParams(workspace=workspace, projection=SPEC.config, model=model))

    model = ModelParams(name_or_path=saved(gpt2, tmp_path / "gpt2"), bos=made.bos, eos=made.eos)
    assert conflict(model) is None and query_encoding_conflict(store, model, workspace) is None
    other = "omit" if made.bos == "add" else "add"
    message = conflict(model.model_copy(update={"bos": other}))
    text_starts = {"auto": [], "add": ["<|endoftext|>"], "omit": []}
    assert message is not None and "\n" not in message
    assert (f"model.bos {made.bos!r} (asked {other!r}), "
            f"text_start {text_starts[made.bos]!r} (asked {text_starts[other]!r})") in message
    assert "special tokens it was made with" in message and "new workspace" in message
    queries = query_encoding_conflict(store, model.model_copy(update={"bos": other}), workspace)
    assert queries is not None and "queries are tokenised as its rows were" in queries


def test_special_tokens_are_compared_as_the_tokens_they_resolve_to(tmp_path):
    llama = llama_style_tokenizer()
    store = GradientStore.create(str(tmp_path / "store.zarr"), SPEC, MODEL, chunk_rows=16,
                                 fisher=FisherConfig(estimator="true"), encoding=Encoder(llama, 64).identity())
    workspace = Workspace(root=str(tmp_path))
    model = ModelParams(name_or_path=saved(llama, tmp_path / "llama"))
    # Its tokenizer adds <s> itself: "add" gives the rows "auto" gave, so the store takes them.
    assert query_encoding_conflict(store, model.model_copy(update={"bos": "add"}), workspace) is None
    no_bos = ModelParams(name_or_path=saved(tokenizer_without_bos(), tmp_path / "no-bos"), bos="add")
    message = settings_conflict(store, IngestParams(workspace=workspace, projection=SPEC.config, model=no_bos))
    assert message is not None and "\n" not in message and "has no BOS token: bos 'add' needs one" in message


def test_only_the_dask_addresses_this_machine_lists_are_allowed(monkeypatch):
    from tasks.dask_access import check_dask_address

    monkeypatch.setenv("DATAWORTH_DASK_ADDRESSES", "tcp://10.0.0.7:8786, tcp://10.0.0.8:8786")
    check_dask_address(None)  # local threads need no permission
    check_dask_address("tcp://10.0.0.8:8786")
    with pytest.raises(ValueError, match="DATAWORTH_DASK_ADDRESSES") as refused:
        check_dask_address("tcp://10.0.0.9:8786")
    assert "\n" not in str(refused.value)
    monkeypatch.delenv("DATAWORTH_DASK_ADDRESSES")
    with pytest.raises(ValueError):
        check_dask_address("tcp://10.0.0.7:8786")
