"""Logging throughput: LoGra against a plain forward+backward and against per-example full
gradients with a dense Gaussian projection (TRAK-style), on GPT-2-family models built from configs.

All three see the same model weights and the same unpadded batch (torch.func's vmap cannot trace
HF attention masking, and padding would only favour LoGra). The dense baseline projects each
tracked module's full per-example gradient to LoGra's size for that module, so both produce rows
of the same width; its projection matrices are built before timing.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.func import functional_call, grad, vmap

from evaluation.gradients import DenseProjection
from sample.model import GPT2Shape, build_gpt2
from valuation import FisherConfig, LoGra, ProjectionConfig
from valuation.objectives import CausalLMObjective
from valuation.targets import select_modules

from .measure import median_seconds, peak_memory_bytes

SIZES = {  # (n_embd, n_layer, n_head)
    "gpt2-64x2": (64, 2, 2),  # the default two: seconds on a 2-core CPU
    "gpt2-128x4": (128, 4, 4),
    "gpt2-256x6": (256, 6, 4),  # for a GPU: the dense baseline's projections alone take 4.8 GB
}


class LoggingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sizes: tuple[str, ...] = ("gpt2-64x2", "gpt2-128x4")
    batch: int = Field(default=8, ge=1)
    seq: int = Field(default=128, ge=2)
    vocab: int = Field(default=2048, ge=16)
    rank: int = Field(default=16, ge=1)
    repeats: int = Field(default=5, ge=1)
    autocast: Literal["none", "bfloat16"] = Field(default="none", description="plain and LoGra passes under "
                                                  "bfloat16 autocast (the dense baseline stays float32)")
    dense: bool = Field(default=True, description="also time the dense-projection baseline")

    @field_validator("sizes")
    @classmethod
    def _known(cls, sizes: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(sizes) - set(SIZES)
        if unknown:
            raise ValueError(f"unknown sizes {sorted(unknown)}; choose from {list(SIZES)}")
        return sizes


def build_model(size: str, config: LoggingConfig, device: torch.device):
    n_embd, n_layer, n_head = SIZES[size]
    shape = GPT2Shape(vocab_size=config.vocab, n_positions=config.seq, n_embd=n_embd, n_layer=n_layer, n_head=n_head)
    # Eager attention for all three: vmap has no batching rule for CPU SDPA and would fall back to
    # a per-example loop, slowing the dense baseline for a reason unrelated to the method.
    return build_gpt2(shape, attn_implementation="eager").to(device).eval()


def token_batch(config: LoggingConfig, device: torch.device) -> dict:
    ids = torch.randint(0, config.vocab, (config.batch, config.seq), generator=torch.Generator().manual_seed(1))
    ids = ids.to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _numel_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def bench_size(size: str, config: LoggingConfig, device: torch.device) -> dict:
    objective = CausalLMObjective()
    plain_model = build_model(size, config, device)
    logra_model = copy.deepcopy(plain_model)
    batch = token_batch(config, device)
    projection = ProjectionConfig(init="random", rank_in=config.rank, rank_out=config.rank)
    logra = LoGra(logra_model, projection)

    dtype = torch.bfloat16 if config.autocast == "bfloat16" else None

    def plain() -> None:
        plain_model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = objective.losses(objective.forward(plain_model, batch), batch).sum()
        loss.backward()

    def logged() -> torch.Tensor:
        return logra.log_batch(batch, objective, autocast_dtype=dtype).rows

    sampled = FisherConfig(estimator="true", samples=1)  # the figures below: one label per token

    def logged_true_fisher() -> torch.Tensor:  # a second backward pass, with labels drawn from the model
        return logra.log_batch(batch, objective, fisher=sampled, autocast_dtype=dtype).fisher_rows

    # Dense baseline: full per-example gradients of the same tracked weights, then k x D Gaussians.
    tracked = select_modules(plain_model, projection)
    params = {k: v.detach() for k, v in plain_model.named_parameters()}
    weights = {f"{name}.weight": params[f"{name}.weight"] for name in tracked}
    project = DenseProjection(logra.layout, {name: params[f"{name}.weight"].numel() for name in tracked}, seed=0,
                              device=device, dtype=torch.float32) if config.dense else None

    def example_loss(w: dict, ids: torch.Tensor) -> torch.Tensor:
        logits = functional_call(plain_model, {**params, **w}, (), {"input_ids": ids[None]}).logits
        return objective.losses(logits, {"labels": ids[None]}).sum()

    per_example = vmap(grad(example_loss), in_dims=(None, 0))

    def dense() -> torch.Tensor:
        assert project is not None
        grads = per_example(weights, batch["input_ids"])
        return project({name: grads[f"{name}.weight"] for name in tracked})

    actions = {"plain": plain, "logra": logged, "logra_true_fisher": logged_true_fisher}
    if config.dense:
        actions["dense"] = dense
    seconds = median_seconds(actions, config.repeats, device)
    peaks = {name: peak_memory_bytes(action, device) for name, action in actions.items()}
    tokens = config.batch * config.seq
    state_bytes = {
        "logra": _numel_bytes(p for a in logra.adapters.values() for p in (a.p_in, a.p_out)),
        **({"dense": project.nbytes} if project is not None else {}),
    }
    logra.remove()
    result = {
        "size": size,
        "params": sum(p.numel() for p in plain_model.parameters()),
        "tracked_params": sum(w.numel() for w in weights.values()),
        "row_width": logra.layout.total,
        "tokens_per_batch": tokens,
        "state_bytes": state_bytes,
        "seconds": seconds,
        "tokens_per_s": {name: tokens / s for name, s in seconds.items()},
        "peak_bytes": peaks,
        "overhead_vs_plain": seconds["logra"] / seconds["plain"],
        "true_fisher_overhead_vs_plain": seconds["logra_true_fisher"] / seconds["plain"],
        "autocast": config.autocast,
    }
    if config.dense:
        result["speedup_vs_dense"] = seconds["dense"] / seconds["logra"]
    if all(peaks.values()):
        result["memory_vs_plain"] = peaks["logra"] / peaks["plain"]
        if config.dense:
            result["memory_dense_vs_logra"] = peaks["dense"] / peaks["logra"]
    return result


def bench_logging(config: LoggingConfig, device: torch.device) -> list[dict]:
    return [bench_size(size, config, device) for size in config.sizes]
