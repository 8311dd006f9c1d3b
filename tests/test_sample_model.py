"""The bundled sample model (tokenizer, training, save/load) and model fingerprints."""

import json

import pytest
import torch

from sample import model as sample
from sample.model import (
    MARKER,
    SampleModelConfig,
    load_sample_corpus,
    prepare_sample_model,
    sample_corpus_paths,
    sample_queries_path,
    train_sample_model,
    train_tokenizer,
)
from tasks.models import load_model
from tests.models import lm_batch, tiny_gpt2
from valuation import LoGra, ProjectionConfig
from valuation.data import read_jsonl
from valuation.fingerprint import model_fingerprint

SMALL = SampleModelConfig(train_steps=20, max_length=96)


def corpus_texts():
    return [e.text if e.text is not None else e.prompt + e.response for e in load_sample_corpus()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_sample_model(tmp_path_factory.mktemp("sample") / "model", SMALL)


def test_sample_files_are_found():
    assert [p.name for p in sample_corpus_paths()] == [f"night-0{i}.jsonl" for i in range(1, 5)]
    assert len(read_jsonl(sample_queries_path())) == 12


def test_tokenizer_training_is_deterministic_and_lossless():
    texts = corpus_texts()
    first, second = train_tokenizer(texts, 512), train_tokenizer(texts, 512)
    assert first.get_vocab() == second.get_vocab()
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert len(first) == 512
    assert first.eos_token == first.bos_token == first.pad_token == "<|endoftext|>"
    unseen = "Zürich, 5 °C — déjà vu"  # bytes the corpus never contains still round-trip
    assert first.decode(first(unseen)["input_ids"]) == unseen


def test_prepare_saves_a_model_that_from_pretrained_loads_unchanged(prepared):
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= {p.name for p in prepared.iterdir()}
    loaded, tokenizer = load_model(prepared)
    assert type(loaded).__name__ == "GPT2LMHeadModel" and not loaded.training
    assert tokenizer.eos_token == "<|endoftext|>"

    # Training is seeded: training again gives the weights that were saved, bit for bit.
    trained = train_sample_model(load_sample_corpus(), SMALL)
    assert model_fingerprint(loaded) == model_fingerprint(trained.model)
    batch = tokenizer(["Rain in Oslo today.", "How many grams in 3 kg?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, trained.model(**batch).logits)


def test_training_lowers_the_loss(prepared):
    training = json.loads((prepared / MARKER).read_text())["training"]
    assert training["initial_loss"] == pytest.approx(6.25, abs=0.1)  # ln(512): uniform at init
    assert training["final_loss"] < training["initial_loss"] - 1.0


def test_prepare_reuses_a_matching_model_and_retrains_a_stale_one(prepared, monkeypatch):
    calls = []
    real_train = sample.train_sample_model

    def counting_train(examples, config):
        calls.append(config)
        return real_train(examples, config)

    monkeypatch.setattr(sample, "train_sample_model", counting_train)
    assert prepare_sample_model(prepared, SMALL) == prepared
    assert calls == []

    other = SMALL.model_copy(update={"seed": 1})
    before = model_fingerprint(load_model(prepared)[0])
    assert prepare_sample_model(prepared, other) == prepared
    assert calls == [other]
    assert json.loads((prepared / MARKER).read_text())["config"]["seed"] == 1
    assert model_fingerprint(load_model(prepared)[0]) != before
    assert [p.name for p in prepared.parent.iterdir()] == ["model"]  # no staging left behind
    prepare_sample_model(prepared, SMALL)  # back as it was for the other tests


def test_prepare_never_replaces_a_directory_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not replacing"):
        prepare_sample_model(tmp_path, SMALL)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_ignores_logra_add_ons():
    model = tiny_gpt2()
    before = model_fingerprint(model)
    with LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4)) as logra:
        assert len(logra.adapters) > 0
        logra.log_batch(lm_batch([5, 12]))
        assert model_fingerprint(model) == before
    assert model_fingerprint(model) == before


def test_fingerprint_changes_with_any_weight_or_config_change():
    model = tiny_gpt2()
    before = model_fingerprint(model)
    assert before["architecture"] == "GPT2LMHeadModel"
    assert before["config"]["n_embd"] == 16 and "transformers_version" not in before["config"]
    assert len(before["fingerprint"]) == 16

    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight[3, 2] += 1e-6
    changed = model_fingerprint(model)
    assert changed["weights_sha256"] != before["weights_sha256"]
    assert changed["fingerprint"] != before["fingerprint"]

    other_config = tiny_gpt2()
    other_config.config.layer_norm_epsilon = 1e-6
    assert model_fingerprint(other_config)["fingerprint"] != before["fingerprint"]


def test_fingerprint_of_a_plain_module_hashes_any_dtype():
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 2))
    plain = model_fingerprint(mlp)
    assert plain["config"] is None and plain["architecture"] == "Sequential"
    assert model_fingerprint(mlp.to(torch.bfloat16))["weights_sha256"] != plain["weights_sha256"]
