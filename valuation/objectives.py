"""Per-example losses that LoGra differentiates.

An objective turns a batch into model outputs, then into one loss per example, summed over the
example's tokens (never averaged over the batch: a mean would tie each example's gradient to the
batch it happens to sit in). `sampled_losses` draws labels from the model's own predictive
distribution, which gives the true Fisher instead of the empirical one; `fisher_losses` turns an
estimator into the losses whose gradients the Fisher sums.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .config import FisherConfig

IGNORE_INDEX = -100
# Tensors by name, and `example_ids` (a list of str) where the examples have ids.
Batch = Mapping[str, Any]


def example_generator(seed: int, example_id: str, device: torch.device) -> torch.Generator:
    """A generator tied to one example, so sampled labels do not depend on batch composition."""
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def content_keys(batch: Batch, size: int) -> list[str]:
    """A name for each example of a batch that carries no `example_ids`: a hash of its own
    tensors, padding cut off by the attention mask, so the name (and the labels drawn with it)
    stays the same whatever batch the example sits in and however wide that batch is padded.
    Two examples with the same content get the same name."""
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and v.dim() > 0 and len(v) == size}
    if not tensors:
        raise ValueError("a batch without example_ids needs per-example tensors to name its examples by")
    mask = batch.get("attention_mask")
    keep = mask.bool().cpu() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
    keys = []
    for row in range(size):
        digest = hashlib.sha256()
        for name in sorted(tensors):
            part = tensors[name][row].detach().cpu()
            if keep is not None and part.dim() >= 1 and part.shape[0] == keep.shape[1]:
                part = part[keep[row]]
            digest.update(f"{name}:{part.dtype}:{tuple(part.shape)}:".encode())
            digest.update(part.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        keys.append("content:" + digest.hexdigest())
    return keys


def _sample_classes(
    logits: torch.Tensor, generators: Sequence[torch.Generator], keep: torch.Tensor | None = None
) -> torch.Tensor:
    """One class per row of logits[b, ..., C], example b drawn with generators[b], only where
    `keep[b]` (elsewhere 0): an example's draws then depend on its own positions alone, not on
    how far a batch pads it (the generator's stream would shift with the padded count)."""
    if len(generators) != len(logits):
        raise ValueError(f"{len(generators)} generators for a batch of {len(logits)} examples")
    probs = logits.detach().float().softmax(-1)
    drawn = torch.zeros(probs.shape[:-1], dtype=torch.long, device=probs.device)
    for b, g in enumerate(generators):
        p = probs[b].reshape(-1, probs.shape[-1])
        at = keep[b].reshape(-1) if keep is not None else torch.ones(len(p), dtype=torch.bool, device=p.device)
        if at.any():
            drawn[b].view(-1)[at] = torch.multinomial(p[at], 1, generator=g).squeeze(-1)
    return drawn


class Objective(Protocol):
    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor: ...

    def losses(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor: ...

    def sampled_losses(
        self, outputs: torch.Tensor, batch: Batch, generators: Sequence[torch.Generator]
    ) -> torch.Tensor: ...

    def attention_mask(self, batch: Batch) -> torch.Tensor | None: ...

    def loss_tokens(self, batch: Batch) -> torch.Tensor:
        """How many tokens each example's loss is summed over."""
        ...


class CausalLMObjective:
    """Next-token cross-entropy; batch holds input_ids, attention_mask and labels (-100 ignored)."""

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def losses(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self._summed_ce(outputs, batch["labels"])

    def sampled_losses(self, outputs, batch, generators):
        targets = batch["labels"][:, 1:]
        sampled = _sample_classes(outputs[:, :-1], generators, keep=targets != IGNORE_INDEX)
        labels = batch["labels"].clone()
        labels[:, 1:] = torch.where(targets == IGNORE_INDEX, targets, sampled)
        return self._summed_ce(outputs, labels)

    def attention_mask(self, batch: Batch) -> torch.Tensor | None:
        return batch.get("attention_mask")

    def loss_tokens(self, batch: Batch) -> torch.Tensor:
        return (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)

    @staticmethod
    def _summed_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # At least float32 under autocast; float64 models stay float64.
        logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
        labels = labels[:, 1:]
        per_token = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
            ignore_index=IGNORE_INDEX, reduction="none",
        )
        return per_token.reshape(labels.shape).sum(dim=1)


class ClassificationObjective:
    """Cross-entropy of model(inputs) against integer labels; one example per row."""

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(batch["inputs"])

    def losses(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(outputs, batch["labels"], reduction="none")

    def sampled_losses(self, outputs, batch, generators):
        return F.cross_entropy(outputs, _sample_classes(outputs, generators), reduction="none")

    def attention_mask(self, batch: Batch) -> torch.Tensor | None:
        return None

    def loss_tokens(self, batch: Batch) -> torch.Tensor:
        return torch.ones(len(batch["labels"]), dtype=torch.long)

    def class_losses(self, outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss of every class as the label, its probability under the model), both batch x C."""
        log_probs = outputs.to(torch.promote_types(outputs.dtype, torch.float32)).log_softmax(-1)
        return -log_probs, log_probs.detach().exp()


def resolve_fisher(fisher: FisherConfig | None, objective: Objective) -> FisherConfig:
    """`fisher` (default FisherConfig()) with "auto" resolved for `objective`: the exact
    expectation for a classifier (it has class_losses), sampled labels otherwise."""
    return (fisher or FisherConfig()).resolved(classifier=hasattr(objective, "class_losses"))


def fisher_losses(
    objective: Objective,
    outputs: torch.Tensor,
    batch: Batch,
    fisher: FisherConfig,
    example_ids: Sequence[str] | None = None,
) -> list[torch.Tensor]:
    """Per-example losses, one vector per draw, whose gradients g_d give the example's Fisher term
    as sum_d g_d g_d^T (the weights are folded into the losses).

    true: `fisher.samples` label draws from the model, each weighted 1/sqrt(S), from generators
    tied to each example id (so batching does not change the draws; without ids, to each
    example's content, `content_keys`). exact: every class c
    weighted sqrt(p_c), i.e. E_{y~p}[g_y g_y^T] without sampling noise; on a well-fit classifier
    one sampled label is almost always the data label, and the rare other draw dominates the sum.
    auto: whichever of the two `resolve_fisher` picks for the objective.
    """
    fisher = resolve_fisher(fisher, objective)
    if fisher.estimator == "true":
        names = example_ids if example_ids is not None else content_keys(batch, outputs.shape[0])
        gens = [example_generator(fisher.sample_seed, n, outputs.device) for n in names]
        scale = 1.0 / math.sqrt(fisher.samples)
        return [objective.sampled_losses(outputs, batch, gens) * scale for _ in range(fisher.samples)]
    if fisher.estimator == "exact":
        class_losses = getattr(objective, "class_losses", None)
        if class_losses is None:
            raise ValueError(
                f"the exact Fisher needs an objective with a class_losses method (classifiers); "
                f"{type(objective).__name__} has none: use estimator='true' with samples"
            )
        losses, probs = class_losses(outputs, batch)
        return [losses[:, c] * probs[:, c].sqrt() for c in range(losses.shape[1])]
    raise ValueError(f"estimator {fisher.estimator!r} draws no labels: the Fisher uses the data's own gradients")
