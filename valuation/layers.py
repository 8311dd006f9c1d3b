"""LoGra add-on layers, one class per trackable module type, and their injection (PEFT-style).

An add-on runs in parallel with a frozen base module: y = base(x) + P_out^T B E(x), where the
encoder E projects the module's input onto P_in, the decoder is P_out^T, and the bottleneck B is
initialised to zero. Zero init leaves the model's outputs and gradients exactly as they were, and
the per-example gradient of B is the projected gradient (P_out (x) P_in) vec(dL/dW) that LoGra logs.

Module types form a registry, as kronfluence's TrackedModule subclasses do: each subclass of
`LoGraAdapter` names the module type it tracks and says how big that module's weight gradient is
(d_in, d_out), how its input is projected (`encode`: any input to token-major `(..., k_in)`) and
how a decoded `(..., d_out)` tensor takes the module's output layout. Adding a type is one
subclass here plus an exactness test against torch.func (tests/test_logra_exact.py).

The add-on is attached as a child `logra` of the tracked module and added to its output by a
forward hook, so the module keeps its identity and its parameter names, and a model that is itself
one trackable module (the root) can be tracked too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

Tap = Callable[[torch.Tensor, torch.Tensor], None]
ADDON = "logra"  # the child name of an add-on inside its tracked module
Tracked = Any  # a module of the adapter class's `module_type` (its attributes are that type's)


class LoGraAdapter(nn.Module):
    """The add-on of one tracked module. Subclasses register a module type:

        class LinearAdapter(LoGraAdapter, kind="linear", module_type=nn.Linear, label="torch.nn.Linear")

    `module_type` is a class, or "package.module:Class" for a class of an optional package: it is
    looked up only in modules already imported (a model made of that class has imported it), so
    registering it costs no import.
    """

    registry: ClassVar[dict[str, type[LoGraAdapter]]] = {}
    kind: ClassVar[str]
    module_type: ClassVar[type | str]
    label: ClassVar[str]

    def __init_subclass__(cls, *, kind: str, module_type: type | str, label: str, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.kind, cls.module_type, cls.label = kind, module_type, label
        LoGraAdapter.registry[kind] = cls

    def __init__(self, module: Tracked, p_in: torch.Tensor, p_out: torch.Tensor):
        super().__init__()
        (k_in, _), (k_out, d_out) = p_in.shape, p_out.shape
        dtype, device = module.weight.dtype, module.weight.device
        self.encoder = self.make_encoder(module, p_in.to(device=device, dtype=dtype))
        self.bottleneck = nn.Linear(k_in, k_out, bias=False, dtype=dtype, device=device)
        self.decoder = nn.Linear(k_out, d_out, bias=False, dtype=dtype, device=device)
        with torch.no_grad():
            self.bottleneck.weight.zero_()
            self.decoder.weight.copy_(p_out.T)
        for fixed in (*self.encoder.parameters(), self.decoder.weight):
            fixed.requires_grad_(False)
        # Set by the gradient recorder while it records; sees (projected input, bottleneck output).
        self.tap: Tap | None = None
        self.hook_handle: Any = None  # the forward hook on the tracked module that adds this output

    # ---- what a module type defines ------------------------------------------------------

    @classmethod
    def resolve_type(cls) -> type[nn.Module] | None:
        """The tracked class, or None when its optional package has not been imported."""
        if isinstance(cls.module_type, type):
            return cls.module_type
        module_name, _, attr = cls.module_type.partition(":")
        loaded = sys.modules.get(module_name)
        return getattr(loaded, attr, None) if loaded is not None else None

    @staticmethod
    def dims(module: Tracked) -> tuple[int, int]:
        """(d_in, d_out) of the weight gradient, seen as d_out x d_in."""
        raise NotImplementedError

    @staticmethod
    def unsupported(module: Tracked) -> str | None:
        """Why this instance cannot be tracked exactly (None when it can)."""
        return None

    @staticmethod
    def make_encoder(module: Tracked, p_in: torch.Tensor) -> nn.Module:
        """A module mapping the tracked module's input to token-major (..., k_in) = P_in x."""
        encoder = nn.Linear(p_in.shape[1], p_in.shape[0], bias=False, dtype=p_in.dtype, device=p_in.device)
        with torch.no_grad():
            encoder.weight.copy_(p_in)
        return encoder

    @property
    def p_in(self) -> torch.Tensor:
        return self.encoder.get_parameter("weight")

    @staticmethod
    def to_output(decoded: torch.Tensor) -> torch.Tensor:
        """The decoded (..., d_out) tensor in the tracked module's output layout."""
        return decoded

    @staticmethod
    def from_output(output: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_output`: an output-shaped tensor as token-major (..., d_out)."""
        return output

    @staticmethod
    def weight_gradient(grad: torch.Tensor) -> torch.Tensor:
        """dL/d(module.weight) (with a leading batch dimension) as batch x d_out x d_in."""
        return grad

    @staticmethod
    def kfac_inputs(module: Tracked, x: torch.Tensor) -> torch.Tensor:
        """The module's input as token-major (..., d_in) rows (batch and tokens first)."""
        return x

    @staticmethod
    def input_moment(module: Tracked, rows: torch.Tensor) -> torch.Tensor:
        """sum over rows of x x^T (float64) for the KFAC factor A = E[x x^T]."""
        rows = rows.reshape(-1, rows.shape[-1]).to(torch.float64)
        return rows.T @ rows

    # ---- shared ---------------------------------------------------------------------------

    @property
    def p_out(self) -> torch.Tensor:
        return self.decoder.weight.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        z = self.bottleneck(h)
        if self.tap is not None:
            self.tap(h, z)
        return self.to_output(self.decoder(z))


def _overrides_forward(module: nn.Module, base: type[nn.Module]) -> bool:
    return type(module).forward is not base.forward


def adapter_class(module: nn.Module) -> type[LoGraAdapter] | None:
    """The registered add-on type of `module`, or None if LoGra cannot track it.

    A subclass of a registered type counts only if it keeps that type's forward (a subclass that
    computes something else, such as OPT's learned positional embedding, is not the same maths);
    the most specific registered type wins.
    """
    best, depth = None, len(type(module).__mro__)
    for cls in LoGraAdapter.registry.values():
        tracked = cls.resolve_type()
        if tracked is None or not isinstance(module, tracked) or _overrides_forward(module, tracked):
            continue
        position = type(module).__mro__.index(tracked)
        if position < depth:
            best, depth = cls, position
    return best


def tracked_class(module: nn.Module) -> type[LoGraAdapter]:
    """`adapter_class`, for a module already known to be trackable."""
    cls = adapter_class(module)
    if cls is None:
        raise ValueError(f"{type(module).__name__} is of no registered LoGra type")
    return cls


def supported_labels() -> list[str]:
    return [cls.label for cls in LoGraAdapter.registry.values()]


# ---- the registered types ---------------------------------------------------------------------


class LinearAdapter(LoGraAdapter, kind="linear", module_type=nn.Linear, label="torch.nn.Linear"):
    @staticmethod
    def dims(module: Tracked) -> tuple[int, int]:
        return module.in_features, module.out_features


class Conv1DAdapter(
    LoGraAdapter, kind="conv1d", module_type="transformers.pytorch_utils:Conv1D", label="transformers Conv1D"
):
    """GPT-2's linear layer: its weight is stored transposed, (d_in, d_out)."""

    @staticmethod
    def dims(module: Tracked) -> tuple[int, int]:
        d_in, d_out = module.weight.shape
        return d_in, d_out

    @staticmethod
    def weight_gradient(grad: torch.Tensor) -> torch.Tensor:
        return grad.transpose(-1, -2)


class EmbeddingAdapter(LoGraAdapter, kind="embedding", module_type=nn.Embedding, label="torch.nn.Embedding"):
    """A lookup y = W[id] is y = W^T onehot(id): d_in is the vocabulary, d_out the embedding size.

    The gradient is a sum of delta_t onehot(id_t)^T, so P_in onehot(id_t) is column id_t of P_in:
    the encoder is a lookup into P_in^T and never builds a one-hot vector. The padding id gets no
    gradient in PyTorch, so it projects to zero here.
    """

    @staticmethod
    def dims(module: Tracked) -> tuple[int, int]:
        return module.num_embeddings, module.embedding_dim

    @staticmethod
    def unsupported(module: Tracked) -> str | None:
        if module.max_norm is not None:
            return "max_norm rewrites the weights during the forward pass"
        if module.scale_grad_by_freq:
            return "scale_grad_by_freq makes each example's gradient depend on its batch"
        return None

    @staticmethod
    def make_encoder(module: Tracked, p_in: torch.Tensor) -> nn.Module:
        return _ProjectedLookup(p_in, module.padding_idx)

    @property
    def p_in(self) -> torch.Tensor:
        return self.encoder.get_parameter("weight").T

    @staticmethod
    def weight_gradient(grad: torch.Tensor) -> torch.Tensor:
        return grad.transpose(-1, -2)

    @staticmethod
    def input_moment(module: Tracked, rows: torch.Tensor) -> torch.Tensor:
        # E[onehot onehot^T] is diagonal (token frequencies): kept as its diagonal, never vocab^2.
        counts = torch.bincount(rows.reshape(-1), minlength=module.num_embeddings).to(torch.float64)
        if module.padding_idx is not None:
            counts[module.padding_idx] = 0.0  # it never gets a gradient: no direction to keep
        return counts


class _ProjectedLookup(nn.Module):
    def __init__(self, p_in: torch.Tensor, padding_idx: int | None):
        super().__init__()
        self.weight = nn.Parameter(p_in.T.contiguous(), requires_grad=False)  # vocabulary x k_in
        self.padding_idx = padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = F.embedding(ids, self.weight)
        if self.padding_idx is not None:
            h = h * (ids != self.padding_idx).unsqueeze(-1).to(h.dtype)
        return h


class Conv2dAdapter(LoGraAdapter, kind="conv2d", module_type=nn.Conv2d, label="torch.nn.Conv2d"):
    """A convolution is a linear map of each input patch: d_in = C_in * kh * kw, one token per
    output position. The encoder is the same convolution with P_in as its k_in filters."""

    @staticmethod
    def dims(module: Tracked) -> tuple[int, int]:
        kh, kw = module.kernel_size
        return module.in_channels * kh * kw, module.out_channels

    @staticmethod
    def unsupported(module: Tracked) -> str | None:
        return f"it has groups={module.groups} (only groups=1 is supported)" if module.groups != 1 else None

    @staticmethod
    def make_encoder(module: Tracked, p_in: torch.Tensor) -> nn.Module:
        encoder = nn.Conv2d(
            module.in_channels, p_in.shape[0], module.kernel_size, stride=module.stride, padding=module.padding,
            dilation=module.dilation, padding_mode=module.padding_mode, bias=False, dtype=p_in.dtype,
            device=p_in.device,
        )
        with torch.no_grad():
            encoder.weight.copy_(p_in.reshape(encoder.weight.shape))
        return _ChannelsLast(encoder)

    @property
    def p_in(self) -> torch.Tensor:
        return self.encoder.get_parameter("conv.weight").flatten(1)

    @staticmethod
    def to_output(decoded: torch.Tensor) -> torch.Tensor:
        return decoded.movedim(-1, 1)

    @staticmethod
    def from_output(output: torch.Tensor) -> torch.Tensor:
        return output.movedim(1, -1)

    @staticmethod
    def weight_gradient(grad: torch.Tensor) -> torch.Tensor:
        return grad.flatten(2)

    @staticmethod
    def kfac_inputs(module: Tracked, x: torch.Tensor) -> torch.Tensor:
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        padded = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
        patches = F.unfold(padded, module.kernel_size, dilation=module.dilation, stride=module.stride)
        return patches.transpose(1, 2)  # batch x positions x d_in: one row per output position


class _ChannelsLast(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).movedim(1, -1)  # batch x H x W x k_in: one token per output position


# ---- injection ----------------------------------------------------------------------------------


def _add_addon_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + getattr(module, ADDON)(inputs[0])


def attached_adapters(model: nn.Module) -> dict[str, LoGraAdapter]:
    """Tracked module name -> its add-on, for every add-on attached to `model`."""
    found = {}
    for name, module in model.named_modules():
        addon = module._modules.get(ADDON)
        if isinstance(addon, LoGraAdapter):
            found[name] = addon
    return found


def inject_adapters(
    model: nn.Module,
    targets: Mapping[str, nn.Module],
    projections: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, LoGraAdapter]:
    """Attach to each target module an add-on of its registered type built from its (P_in, P_out)."""
    if attached_adapters(model):
        raise ValueError("the model already carries LoGra add-ons: call remove() on the LoGra that added them first")
    adapters = {}
    for name, module in targets.items():
        if hasattr(module, ADDON):
            raise ValueError(f"module {name!r} already has an attribute {ADDON!r}; LoGra cannot attach to it")
        p_in, p_out = projections[name]
        adapter = tracked_class(module)(module, p_in, p_out)
        module.add_module(ADDON, adapter)
        adapter.hook_handle = module.register_forward_hook(_add_addon_output)
        adapters[name] = adapter
    return adapters


def remove_adapters(model: nn.Module) -> int:
    """Detach every add-on; returns how many were removed."""
    attached = attached_adapters(model)
    for name, adapter in attached.items():
        adapter.hook_handle.remove()
        delattr(model.get_submodule(name), ADDON)
    return len(attached)
