"""LoGra add-on layers and their injection into any nn.Module (PEFT-style).

An add-on runs in parallel with a frozen base module: y = base(x) + P_out^T B P_in x, with the
encoder P_in and decoder P_out^T fixed and the bottleneck B initialised to zero. Zero init leaves
the model's outputs and gradients exactly as they were, and the per-example gradient of B is the
projected gradient (P_out (x) P_in) vec(dL/dW) that LoGra logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

Tap = Callable[[torch.Tensor, torch.Tensor], None]


class LoGraAdapter(nn.Module):
    def __init__(self, p_in: torch.Tensor, p_out: torch.Tensor, like: torch.Tensor):
        super().__init__()
        (k_in, d_in), (k_out, d_out) = p_in.shape, p_out.shape
        factory = {"dtype": like.dtype, "device": like.device}
        self.encoder = nn.Linear(d_in, k_in, bias=False, **factory)
        self.bottleneck = nn.Linear(k_in, k_out, bias=False, **factory)
        self.decoder = nn.Linear(k_out, d_out, bias=False, **factory)
        with torch.no_grad():
            self.encoder.weight.copy_(p_in)
            self.bottleneck.weight.zero_()
            self.decoder.weight.copy_(p_out.T)
        self.encoder.weight.requires_grad_(False)
        self.decoder.weight.requires_grad_(False)
        # Set by the gradient recorder while it records; sees (projected input, bottleneck output).
        self.tap: Tap | None = None

    @property
    def p_in(self) -> torch.Tensor:
        return self.encoder.weight

    @property
    def p_out(self) -> torch.Tensor:
        return self.decoder.weight.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        z = self.bottleneck(h)
        if self.tap is not None:
            self.tap(h, z)
        return self.decoder(z)


class LoGraWrapped(nn.Module):
    """Stands in for a tracked module: the untouched base plus its add-on."""

    def __init__(self, base: nn.Module, adapter: LoGraAdapter):
        super().__init__()
        self.base = base
        self.logra = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.logra(x)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def inject_adapters(
    model: nn.Module,
    targets: Mapping[str, nn.Module],
    projections: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, LoGraAdapter]:
    """Wrap each target module with an add-on built from its (P_in, P_out)."""
    adapters = {}
    for name, module in targets.items():
        if isinstance(module, LoGraWrapped):
            raise ValueError(f"module {name!r} already carries a LoGra add-on; remove it first")
        p_in, p_out = projections[name]
        adapter = LoGraAdapter(p_in, p_out, like=module.weight)
        _replace(model, name, LoGraWrapped(module, adapter))
        adapters[name] = adapter
    return adapters


def remove_adapters(model: nn.Module) -> int:
    """Put every wrapped base module back; returns how many were removed."""
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoGraWrapped)]
    for name in wrapped:
        _replace(model, name, model.get_submodule(name).base)
    return len(wrapped)
