"""A small language-model task: the bundled six-provider sample corpus and a tiny GPT-2.

The tokenizer is trained once on the whole corpus and shared by every retrain, so query losses
are comparable across subsets. Each retrain trains GPT-2 (n_embd 32, 2 layers) from scratch on
its subset for a fixed number of steps (the same budget whatever the subset's size), with seed s
fixing the initial weights and the batch order. Queries are the twelve bundled standing queries,
two per provider; the measurement is each query's loss summed over its tokens.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sample.model import (
    SampleModelConfig,
    build_gpt2,
    fit_gpt2,
    load_sample_corpus,
    sample_queries_path,
    train_tokenizer,
)
from valuation.data import EncodedExample, Encoder, batches, providers_of, read_jsonl
from valuation.objectives import CausalLMObjective

from .base import Task

# Small enough that a retrain takes a few seconds on one CPU core. 120 steps of 16 examples is
# about 7 passes over the corpus and takes the per-token loss from 6.2 to about 3.4.
EVAL_MODEL = SampleModelConfig(n_embd=32, n_layer=2, n_head=2, train_steps=120, batch_size=16)


class LMTaskConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: SampleModelConfig = EVAL_MODEL
    batch_size: int = Field(default=16, ge=1, description="examples per logging batch")


def train_lm(encoded: list[EncodedExample], pad_id: int, vocab_size: int, config: SampleModelConfig, seed: int):
    """GPT-2 trained from seeded initial weights on `encoded`, as the sample model is trained."""
    return fit_gpt2(build_gpt2(config.shape(vocab_size), seed=seed, pad_id=pad_id), encoded, pad_id, config, seed)


def _corpus_digest(texts: list[str]) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]


def language_model_task(config: LMTaskConfig = LMTaskConfig()) -> Task:
    corpus = load_sample_corpus()
    queries = read_jsonl(sample_queries_path())
    tokenizer = train_tokenizer([e.display_text for e in corpus], config.model.vocab_size)
    pad_id, vocab = tokenizer.eos_token_id, len(tokenizer)
    encoder = Encoder(tokenizer, config.model.max_length)
    encoded = [encoder.encode(e) for e in corpus]
    encoded_queries = [encoder.encode(q) for q in queries]
    query_batches = list(batches(encoded_queries, config.batch_size, pad_id))
    objective = CausalLMObjective()

    def query_losses(model) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([objective.losses(objective.forward(model, b), b) for b in query_batches]).numpy()

    def retrain(train_indices: np.ndarray, seed: int) -> np.ndarray:
        subset = [encoded[i] for i in train_indices]
        return query_losses(train_lm(subset, pad_id, vocab, config.model, seed))

    texts = [e.model_dump_json() for e in [*corpus, *queries]]
    return Task(
        name="lm",
        model=train_lm(encoded, pad_id, vocab, config.model, seed=0),
        objective=objective,
        train_batches=list(batches(encoded, config.batch_size, pad_id)),
        query_batches=query_batches,
        providers=providers_of(corpus),
        query_ids=[q.id for q in queries],
        retrain=retrain,
        identity={"task": "lm", "config": config.model_dump(), "data": _corpus_digest(texts)},
    )
