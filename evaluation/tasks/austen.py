"""A real-text language-model task: paragraphs of Jane Austen's six novels, one provider per novel.

The text comes from an installed package (`evaluation.corpora`), not from this project. The
setting is the product's: a base model, fine-tuned on data that providers sent, whose credit is
in question. The base is a GPT-2 (n_embd 64, 2 layers) pretrained here on the paragraphs that are
neither training data nor queries; the providers' paragraphs fine-tune it; queries are held-out
paragraphs of each novel.

Retraining for the counterfactual checks starts from the same pretrained weights and replays
the same batches, steps and learning-rate schedule as the full fine-tune, with the left-out
examples masked out of every batch (`fit_gpt2(keep=...)`): seed s fixes the batch order. Two
retrains then differ only by the removed data, and the effect of leaving a novel out is
reproducible across seeds (the noise ceiling, one seed against the mean of the others, is in
every LOPO table). Retraining from scratch instead was drowned in noise: with a fresh init the
effect of dropping one novel changed sign from seed to seed (ceiling below 0).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sample.model import SampleModelConfig, build_gpt2, fit_gpt2, train_tokenizer
from valuation.data import Encoder, Example, batches, providers_of
from valuation.objectives import CausalLMObjective

from ..corpora import LICENCE_NOTE, austen_novels, paragraphs
from .base import Task

# Unequal sizes, so that credit which merely follows a provider's size is visible as such.
NOVEL_SIZES = {
    "emma": 64, "mansfieldpark": 56, "prideprejudice": 48, "sensesensibility": 40, "persuasion": 32,
    "northangerabbey": 24,
}
BASE_MODEL = SampleModelConfig(
    vocab_size=1024, n_positions=128, max_length=128, n_embd=64, n_layer=2, n_head=4,
    train_steps=600, batch_size=16, lr=3e-3,
)
FINE_TUNE = BASE_MODEL.model_copy(update={"train_steps": 100, "lr": 1e-3})


class AustenTaskConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    novel_sizes: dict[str, int] = Field(default_factory=lambda: dict(NOVEL_SIZES),
                                        description="training paragraphs per novel")
    queries_per_novel: int = Field(default=8, ge=1)
    min_chars: int = Field(default=250, ge=1, description="paragraphs shorter than this are not used")
    max_chars: int = Field(default=500, ge=1)
    base: SampleModelConfig = BASE_MODEL
    fine_tune: SampleModelConfig = FINE_TUNE
    batch_size: int = Field(default=16, ge=1, description="examples per logging batch")


def split_corpus(
    novels: dict[str, list[str]], config: AustenTaskConfig
) -> tuple[list[Example], list[Example], list[str]]:
    """(training paragraphs, query paragraphs, pretraining texts): training and query paragraphs
    spread evenly over each novel, queries interleaved with them; everything else pretrains."""
    train: list[Example] = []
    queries: list[Example] = []
    used: set[str] = set()
    for novel, size in config.novel_sizes.items():
        if novel not in novels:
            raise ValueError(f"no novel {novel!r} in the corpus; it has {sorted(novels)}")
        fitting = [p for p in paragraphs(novels[novel]) if config.min_chars <= len(p) <= config.max_chars]
        total = size + config.queries_per_novel
        if len(fitting) < total:
            raise ValueError(
                f"{novel}: {len(fitting)} paragraphs of {config.min_chars}-{config.max_chars} chars, need {total}"
            )
        picked = np.linspace(0, len(fitting) - 1, total).round().astype(int)
        is_query = set(np.linspace(0, total - 1, config.queries_per_novel + 2).round().astype(int)[1:-1].tolist())
        for j, i in enumerate(picked):
            example = Example(id=f"{novel}-{i}", provider=novel, text=fitting[i])
            (queries if j in is_query else train).append(example)
            used.add(fitting[i])
    pretraining = [p for novel in sorted(novels) for p in paragraphs(novels[novel])
                   if p not in used and len(p) >= config.min_chars // 2]
    return train, queries, pretraining


def austen_task(config: AustenTaskConfig = AustenTaskConfig(), cache_dir: Path | None = None) -> Task:
    """The task; with `cache_dir` the pretrained base is kept there (keyed by the configuration
    and the text), so a rerun skips the pretraining (minutes on two cores)."""
    train, queries, pretraining = split_corpus(austen_novels(), config)
    tokenizer = train_tokenizer(pretraining, config.base.vocab_size)  # the base model's tokenizer
    pad_id, encoder = tokenizer.eos_token_id, Encoder(tokenizer, config.base.max_length)
    shape = config.base.shape(len(tokenizer))

    def encode(examples: list[Example]):
        return [encoder.encode(e) for e in examples]

    key = hashlib.sha256((config.base.model_dump_json() + "\0".join(pretraining)).encode()).hexdigest()[:16]
    cached = cache_dir / f"austen-base-{key}.pt" if cache_dir is not None else None
    if cached is not None and cached.exists():
        base_state = torch.load(cached, weights_only=True)
    else:
        base_data = encode([Example(id=f"pre-{i}", text=t) for i, t in enumerate(pretraining)])
        base = fit_gpt2(build_gpt2(shape, seed=0, pad_id=pad_id), base_data, pad_id, config.base, seed=0,
                        progress="pretraining the base model")
        base_state = {k: v.clone() for k, v in base.state_dict().items()}
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(base_state, cached.with_suffix(".tmp"))
            cached.with_suffix(".tmp").replace(cached)
    encoded, encoded_queries = encode(train), encode(queries)
    query_batches = list(batches(encoded_queries, config.batch_size, pad_id))
    objective = CausalLMObjective()

    def fine_tuned(keep: np.ndarray, seed: int):
        model = build_gpt2(shape, seed=0, pad_id=pad_id)
        model.load_state_dict(base_state)
        return fit_gpt2(model.train(), encoded, pad_id, config.fine_tune, seed, keep=keep.tolist())

    def retrain(train_indices: np.ndarray, seed: int) -> np.ndarray:
        keep = np.zeros(len(encoded), dtype=bool)
        keep[train_indices] = True
        model = fine_tuned(keep, seed)
        with torch.no_grad():
            return torch.cat([objective.losses(objective.forward(model, b), b) for b in query_batches]).numpy()

    digest = hashlib.sha256("\0".join(e.display_text for e in [*train, *queries]).encode()).hexdigest()[:16]
    return Task(
        name="austen",
        model=fine_tuned(np.ones(len(encoded), dtype=bool), seed=0),
        objective=objective,
        train_batches=list(batches(encoded, config.batch_size, pad_id)),
        query_batches=query_batches,
        providers=providers_of(train),
        query_ids=[q.id for q in queries],
        retrain=retrain,
        identity={"task": "austen", "config": config.model_dump(), "data": digest, "source": LICENCE_NOTE},
        train_texts=[e.display_text for e in train],
        query_texts=[q.display_text for q in queries],
    )
