"""Per-example projected gradients from the add-on layers, one batched einsum per module.

While recording, each add-on's forward hands its projected input h = P_in x (masked by the
attention mask) to the recorder, which hooks the bottleneck output z. In the backward pass the
hook receives dL/dz = P_out delta and forms sum_t (P_out delta_t)(P_in x_t)^T for every example at
once. No full gradient is ever built.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import NamedTuple

import torch

from .errors import NonFiniteGradientError
from .layers import LoGraAdapter
from .layout import GradientLayout


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    # Statistics stay in float32 under bf16/fp16 autocast; float64 models keep float64 for proofs.
    return torch.float64 if dtype == torch.float64 else torch.float32


class RecordedRows(NamedTuple):
    """Projected gradients (batch x K) and the ids of the examples they belong to (None if unnamed)."""

    rows: torch.Tensor
    ids: list[str] | None


class GradientRecorder:
    def __init__(self, adapters: Mapping[str, LoGraAdapter], layout: GradientLayout):
        self.adapters = dict(adapters)
        self.layout = layout
        self._mask: torch.Tensor | None = None
        self._ids: list[str] | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._batch_size: int | None = None

    @contextmanager
    def recording(
        self, attention_mask: torch.Tensor | None = None, example_ids: Sequence[str] | None = None
    ) -> Iterator[None]:
        """Record the forward passes run inside; their backward passes fill the gradients.

        `example_ids` (one per example of the batch) come back with the rows from `pop_rows`.
        """
        self._mask, self._sums, self._batch_size = attention_mask, {}, None
        self._ids = [str(i) for i in example_ids] if example_ids is not None else None
        for name, adapter in self.adapters.items():
            adapter.tap = partial(self._on_forward, name)
        try:
            yield
        finally:
            for adapter in self.adapters.values():
                adapter.tap = None
            self._mask = None

    def _on_forward(self, name: str, h: torch.Tensor, z: torch.Tensor) -> None:
        if not z.requires_grad:
            return
        batch = h.shape[0]
        expected = self._expected_batch()
        if expected is not None and expected[0] != batch:
            if not self._tokens_flattened(h, expected[0]):
                raise ValueError(
                    f"module {name!r} saw a batch of {batch} where {expected[1]}: if its input is "
                    "shared by the whole batch (e.g. position embeddings) it has no per-example gradient, so "
                    "exclude it; otherwise record one batch at a time"
                )
            # Batch and tokens flattened into one dimension before the module (OPT's MLP does
            # this): row-major, so each example's tokens are contiguous and unflatten back.
            batch = expected[0]
            h = h.reshape(batch, -1, h.shape[-1])
        self._batch_size = batch
        mask = self._mask
        if h.dim() == 3 and mask is not None and mask.shape == h.shape[:2]:
            # Padding must not contribute even where a model lets it reach the loss.
            h = h * mask.unsqueeze(-1).to(h.dtype)
        h = h.detach()
        z.register_hook(partial(self._accumulate, name, h))

    def _tokens_flattened(self, h: torch.Tensor, batch: int) -> bool:
        if h.dim() != 2:
            return False
        if self._mask is not None:
            return h.shape[0] == self._mask.numel()
        return h.shape[0] % batch == 0

    def _expected_batch(self) -> tuple[int, str] | None:
        if self._batch_size is not None:
            return self._batch_size, f"other modules saw {self._batch_size}"
        if self._mask is not None:
            return self._mask.shape[0], f"the attention mask has {self._mask.shape[0]} rows"
        if self._ids is not None:
            return len(self._ids), f"{len(self._ids)} example ids were given"
        return None

    def _accumulate(self, name: str, h: torch.Tensor, dz: torch.Tensor) -> None:
        dtype = _accumulation_dtype(dz.dtype)
        batch = h.shape[0]  # h is batch-major already; dz may still be flattened
        h = h.reshape(batch, -1, h.shape[-1]).to(dtype)
        dz = dz.reshape(batch, -1, dz.shape[-1]).to(dtype)
        grad = torch.einsum("bto,bti->boi", dz, h)
        self._sums[name] = self._sums[name] + grad if name in self._sums else grad

    def pop_rows(self, example_ids: Sequence[str] | None = None) -> RecordedRows:
        """Flat rows (batch x K) of the gradients of the backward passes since the last pop, with
        the example ids given to `recording` (or here, which wins).

        Rows follow the layout's module order. A recording can be popped after each of several
        backward passes through the same forward (data labels, then sampled labels).

        Modules that got no gradient (unused in this forward) give zeros. Raises
        NonFiniteGradientError naming the module and the examples if any value is NaN or inf.
        """
        if self._batch_size is None:
            raise RuntimeError("no recorded forward pass with gradients: run forward inside recording()")
        batch, sums = self._batch_size, self._sums
        ids = [str(i) for i in example_ids] if example_ids is not None else self._ids
        if ids is not None and len(ids) != batch:
            raise ValueError(f"{len(ids)} example ids for a batch of {batch}")
        self._sums = {}
        device = next(iter(self.adapters.values())).p_in.device
        dtype = next((g.dtype for g in sums.values()), torch.float32)
        parts = []
        for spec in self.layout.modules:
            grad = sums.get(spec.name)
            if grad is None:
                grad = torch.zeros(batch, spec.k_out, spec.k_in, dtype=dtype, device=device)
            bad = ~torch.isfinite(grad).reshape(batch, -1).all(dim=1)
            if bad.any():
                rows = bad.nonzero().flatten().tolist()
                names = [ids[i] for i in rows] if ids else [f"#{i}" for i in rows]
                raise NonFiniteGradientError(spec.name, names)
            parts.append(grad.reshape(batch, -1))
        return RecordedRows(torch.cat(parts, dim=1), ids)
