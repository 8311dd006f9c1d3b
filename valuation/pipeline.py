"""Log LoGra gradients for a list of examples: tokenise, batch, forward/backward, collect.

Used for training shards (rows + Fisher partial sums, streamed batch by batch into a sink) and
for queries (rows only, in memory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import FisherConfig, ProjectionConfig
from .data import Encoder, Example, SpecialTokens, batches, collate, to_device
from .fisher import FisherPartial
from .logra import LoggedBatch, LoGra, Projections, pca_projections


@dataclass(frozen=True)
class LoggingOptions:
    """How examples become gradient rows: the same for training shards, queries and stability."""

    batch_size: int = 16
    max_length: int = 256  # tokens per example; longer ones are truncated
    autocast_dtype: torch.dtype | None = None  # None: the model's own precision
    special_tokens: SpecialTokens = SpecialTokens()  # BOS/EOS: the tokenizer's own by default

    def encoder(self, tokenizer) -> Encoder:
        return Encoder(tokenizer, self.max_length, self.special_tokens)


@dataclass
class LoggedExamples:
    ids: list[str]
    rows: np.ndarray  # examples x K, float32
    fisher: FisherPartial  # partial sums of this set's Fisher rows
    n_tokens: np.ndarray  # loss tokens per example
    losses: np.ndarray


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_dtype_for(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """bf16 autocast on GPUs that have it (fp16 elsewhere on GPU); full precision on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def iter_logged(
    logra: LoGra,
    tokenizer,
    examples: Sequence[Example],
    options: LoggingOptions = LoggingOptions(),
    *,
    fisher: FisherConfig | None = None,
    progress: str | None = None,
) -> Iterator[LoggedBatch]:
    """Each batch's projected gradients, in input order, as it is logged: a consumer that hands
    them on (a RowSink) holds one batch, whatever the number of examples. Examples are
    tokenised a batch at a time for the same reason."""
    if options.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {options.batch_size}")
    device = logra.bottlenecks[0].device
    encoder = options.encoder(tokenizer)
    bar = tqdm(total=len(examples), desc=progress, unit="ex", disable=progress is None, leave=False)
    try:
        for start in range(0, len(examples), options.batch_size):
            encoded = [encoder.encode(ex) for ex in examples[start:start + options.batch_size]]
            batch = collate(encoded, tokenizer.pad_token_id)
            yield logra.log_batch(to_device(batch, device), fisher=fisher, autocast_dtype=options.autocast_dtype)
            bar.update(len(encoded))
    finally:
        bar.close()


def log_examples(
    logra: LoGra,
    tokenizer,
    examples: Sequence[Example],
    options: LoggingOptions = LoggingOptions(),
    *,
    fisher: FisherConfig | None = None,
    progress: str | None = None,
) -> LoggedExamples:
    """Projected gradients of every example, in input order, with their Fisher partial sums, in
    memory (queries, stability); training shards stream through `iter_logged` into a sink."""
    partial = FisherPartial.zeros(logra.layout)
    ids: list[str] = []
    rows, tokens, losses = [], [], []
    for logged in iter_logged(logra, tokenizer, examples, options, fisher=fisher, progress=progress):
        partial.update(logged.fisher_rows)
        ids += logged.ids or []
        rows.append(logged.rows.float().cpu().numpy())
        tokens.append(logged.n_tokens.cpu().numpy())
        losses.append(logged.losses.float().cpu().numpy())
    k = logra.layout.total
    return LoggedExamples(
        ids=ids,
        rows=np.concatenate(rows) if rows else np.zeros((0, k), np.float32),
        fisher=partial,
        n_tokens=np.concatenate(tokens) if tokens else np.zeros(0, np.int64),
        losses=np.concatenate(losses) if losses else np.zeros(0, np.float32),
    )


def examples_sha256(examples: Sequence[Example]) -> str:
    """sha256 of examples' content in order: names a calibration sample in stores and reports."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.model_dump_json().encode())
        digest.update(b"\n")
    return digest.hexdigest()


def fit_pca(
    model: torch.nn.Module,
    tokenizer,
    examples: Sequence[Example],
    projection: ProjectionConfig,
    options: LoggingOptions = LoggingOptions(),
    *,
    fisher: FisherConfig | None = None,
) -> Projections:
    """PCA projections (P_in, P_out per module) from the KFAC factors of `examples`, tokenised and
    batched as `log_examples` does. `model` must carry no LoGra add-ons."""
    if not examples:
        raise ValueError("PCA initialisation needs calibration examples; none were given")
    device = next(model.parameters()).device
    encoder = options.encoder(tokenizer)
    encoded = [encoder.encode(e) for e in examples]
    calibration = (to_device(b, device) for b in batches(encoded, options.batch_size, tokenizer.pad_token_id))
    return pca_projections(model, projection, calibration, fisher=fisher)
