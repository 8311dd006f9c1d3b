"""The bundled sample model: a tiny GPT-2 trained here, on the sample corpus, in seconds.

Nothing is downloaded. The tokenizer and the model are trained from the bundled shards with
fixed seeds, saved with `save_pretrained`, and loaded back through the same `from_pretrained`
path that users take with their own models, so the demo exercises the real code path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from sample import QUERIES_PATH, SHARDS_DIR
from valuation.data import EncodedExample, Encoder, Example, batches, collate, read_jsonl
from valuation.objectives import IGNORE_INDEX, CausalLMObjective

log = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"
# Written last into a prepared directory: it marks the directory as a complete sample model
# and records what it was trained from, so a changed config or corpus triggers retraining.
MARKER = "dataworth_sample.json"


class SampleModelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vocab_size: int = Field(default=512, ge=257, description="byte-level BPE: 256 bytes + special token + merges")
    n_positions: int = 256
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    train_steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=16, ge=1)
    # Of 1e-3, 3e-3, 6e-3 and 1e-2, 6e-3 gave about the lowest loss on the held-out queries
    # (1.42 per token; 1e-2 matched it while memorising the corpus harder).
    lr: float = Field(default=6e-3, gt=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1, description="share of train_steps spent warming up")
    weight_decay: float = 0.01
    seed: int = 0
    # All of n_positions: at 128, 41% of the corpus would be cut, and the positions past 128
    # would stay untrained while logging and queries use up to 256.
    max_length: int = Field(default=256, ge=2)

    @model_validator(mode="after")
    def _fits_positions(self) -> SampleModelConfig:
        if self.max_length > self.n_positions:
            raise ValueError(f"max_length {self.max_length} exceeds n_positions {self.n_positions}")
        return self

    def shape(self, vocab_size: int) -> GPT2Shape:
        """The model's shape once the tokenizer fixed the vocabulary."""
        return GPT2Shape(vocab_size, self.n_positions, self.n_embd, self.n_layer, self.n_head)


@dataclass(frozen=True)
class GPT2Shape:
    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int


@dataclass
class TrainedSample:
    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerFast
    initial_loss: float  # per-token loss over the corpus before training
    final_loss: float  # ... and after
    seconds: float


def sample_corpus_paths() -> list[Path]:
    return sorted(SHARDS_DIR.glob("*.jsonl"))


def sample_queries_path() -> Path:
    return QUERIES_PATH


def load_sample_corpus() -> list[Example]:
    return [example for path in sample_corpus_paths() for example in read_jsonl(path)]


def _corpus_sha256() -> str:
    digest = hashlib.sha256()
    for path in sample_corpus_paths():
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _full_text(example: Example) -> str:
    return example.text if example.text is not None else (example.prompt or "") + (example.response or "")


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style: any byte string encodes) with one special token, END_OF_TEXT."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        # All 256 bytes up front, so text unseen in training still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT
    )


def _lr_factor(step: int, config: SampleModelConfig) -> float:
    """Linear warmup, then cosine decay to zero: ending at a small step leaves the model near a
    stationary point, which influence functions assume."""
    warmup = round(config.warmup_fraction * config.train_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.train_steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def _per_token_loss(model: GPT2LMHeadModel, encoded: list[EncodedExample], batch_size: int, pad_id: int) -> float:
    objective, total, tokens = CausalLMObjective(), 0.0, 0
    for batch in batches(encoded, batch_size, pad_id):
        total += objective.losses(objective.forward(model, batch), batch).sum().item()
        tokens += (batch["labels"][:, 1:] != IGNORE_INDEX).sum().item()
    return total / tokens


def build_gpt2(
    shape: GPT2Shape, *, seed: int = 0, pad_id: int | None = None, attn_implementation: str | None = None
) -> GPT2LMHeadModel:
    """A GPT-2 of `shape` with weights drawn from `seed`: the one tiny-GPT-2 builder of the project
    (sample model, evaluation retrains, benchmarks, tests).

    `pad_id` doubles as BOS and EOS (token 0 when None); without one the model has no pad token,
    which torch.func needs (GPT-2's pad check is data-dependent control flow). Pass
    `attn_implementation="eager"` for torch.func too: it has no batching rule for CPU SDPA.
    """
    torch.manual_seed(seed)
    special = 0 if pad_id is None else pad_id
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=shape.vocab_size, n_positions=shape.n_positions, n_embd=shape.n_embd,
        n_layer=shape.n_layer, n_head=shape.n_head, bos_token_id=special, eos_token_id=special, pad_token_id=pad_id,
        # No dropout: the model is meant to fit its small corpus, and every step stays reproducible.
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        attn_implementation=attn_implementation,  # type: ignore[call-arg]  # a PretrainedConfig kwarg the stubs miss
    ))


def fit_gpt2(
    model: GPT2LMHeadModel, encoded: list[EncodedExample], pad_id: int, config: SampleModelConfig, seed: int,
    progress: str | None = None, keep: Sequence[bool] | None = None,
) -> GPT2LMHeadModel:
    """`config.train_steps` AdamW steps over `encoded` in seeded epochs; returns the model in eval mode.

    `keep` (one flag per example) masks examples out of every batch while the batches, steps and
    schedule stay those of the whole list: a counterfactual retrain that differs from the full
    one only by the masked examples' terms in each step's loss.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    objective = CausalLMObjective()
    order = torch.Generator().manual_seed(seed)
    weights = torch.ones(len(encoded)) if keep is None else torch.as_tensor(list(keep), dtype=torch.float32)
    queue: list[int] = []
    bar = tqdm(range(config.train_steps), desc=progress, unit="step", leave=False, disable=progress is None)
    for _ in bar:
        if len(queue) < config.batch_size:  # epochs in a fresh seeded order; none is skipped
            queue += torch.randperm(len(encoded), generator=order).tolist()
        picked, queue = queue[: config.batch_size], queue[config.batch_size :]
        batch = collate([encoded[i] for i in picked], pad_id)
        # Summed over each example's tokens (the loss LoGra differentiates), averaged over the batch
        # (over its nominal size, so a masked example's absence changes no other example's weight).
        losses = objective.losses(objective.forward(model, batch), batch)
        loss = (losses * weights[picked].to(losses.dtype)).sum() / config.batch_size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.1f}", refresh=False)
    bar.close()
    return model.eval()


def train_sample_model(examples: list[Example], config: SampleModelConfig = SampleModelConfig()) -> TrainedSample:
    """Tokenizer and GPT-2 trained on `examples`; the same inputs give the same weights."""
    started = time.perf_counter()
    tokenizer = train_tokenizer([_full_text(e) for e in examples], config.vocab_size)
    eot = tokenizer.eos_token_id
    encoder = Encoder(tokenizer, config.max_length)
    encoded = [encoder.encode(e) for e in examples]
    model = build_gpt2(config.shape(len(tokenizer)), seed=config.seed, pad_id=eot)
    initial_loss = _per_token_loss(model, encoded, config.batch_size, eot)
    model = fit_gpt2(model, encoded, eot, config, config.seed, progress="training sample model")
    final_loss = _per_token_loss(model, encoded, config.batch_size, eot)
    return TrainedSample(model, tokenizer, initial_loss, final_loss, time.perf_counter() - started)


def _marker(config: SampleModelConfig) -> dict:
    return {"config": config.model_dump(), "corpus_sha256": _corpus_sha256()}


def _read_marker(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None


def prepare_sample_model(output_dir: str | Path, config: SampleModelConfig = SampleModelConfig()) -> Path:
    """A saved sample model in `output_dir`, trained now unless one from the same config and
    corpus is already there; returns the directory, ready for `from_pretrained`."""
    output_dir = Path(output_dir)
    wanted = _marker(config)
    found = _read_marker(output_dir)
    if found is not None and all(found.get(k) == v for k, v in wanted.items()):
        return output_dir
    if output_dir.exists() and found is None and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} exists and does not hold a dataworth sample model; not replacing it")

    trained = train_sample_model(load_sample_corpus(), config)
    print(
        f"sample model: per-token loss {trained.initial_loss:.3f} -> {trained.final_loss:.3f} "
        f"after {config.train_steps} steps ({trained.seconds:.1f} s)"
    )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    # Saved beside the target and renamed into place, so a crash never leaves half a model there.
    # mkdir, not mkdtemp: the model directory gets the usual permissions, not mkdtemp's 0700.
    staging = output_dir.with_name(f".{output_dir.name}.{uuid.uuid4().hex}")
    staging.mkdir()
    try:
        trained.model.save_pretrained(staging)
        trained.tokenizer.save_pretrained(staging)
        stats = {"initial_loss": trained.initial_loss, "final_loss": trained.final_loss, "seconds": trained.seconds}
        (staging / MARKER).write_text(json.dumps({**wanted, "training": stats}, indent=2))
        if output_dir.exists():
            retired = output_dir.rename(staging.with_name(staging.name + ".old"))
            staging.rename(output_dir)
            shutil.rmtree(retired)
        else:
            staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("sample model saved to %s", output_dir)
    return output_dir
