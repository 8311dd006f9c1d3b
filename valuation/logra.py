"""LoGra: per-example projected gradients of any PyTorch model, in a few lines.

    logra = LoGra.with_pca(model, ProjectionConfig(rank_in=16, rank_out=16), calibration_batches)
    logged = logra.log_batch(batch)          # rows: batch x K projected gradients
    ...
    logra.remove()                           # the model is as it was

(PCA, the default init, fits the projections on calibration batches in one pass;
`LoGra(model, ProjectionConfig(init="random"))` needs no data), or, inside your own training loop:

    with logra.recording(attention_mask=batch["attention_mask"], example_ids=ids):
        losses = CausalLMObjective().losses(model(**batch).logits, batch)  # summed over tokens
    torch.autograd.grad(losses.sum(), logra.bottlenecks)
    rows, ids = logra.pop_rows()
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .config import FisherConfig, ProjectionConfig
from .errors import BatchMeanLossWarning
from .kfac import FactorSketch, kfac_covariances
from .layers import inject_adapters, remove_adapters, tracked_class
from .layout import GradientLayout, ModuleSpec
from .objectives import Batch, CausalLMObjective, Objective, fisher_losses, resolve_fisher
from .projection import pca_projection, random_projection, sketched_pca_projection
from .recorder import GradientRecorder, RecordedRows
from .spec import ProjectionSpec, matrices_digest
from .targets import module_dims, select_modules

Projections = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LoggedBatch:
    """Projected gradients of one batch (float32 unless the model is float64)."""

    rows: torch.Tensor  # batch x K, gradients of the training loss: what the store keeps
    # What the Fisher sums: `rows` (empirical), batch x K for one sampled label, or batch x draws x K
    # (several samples, or every class weighted by sqrt(p) for the exact estimator).
    fisher_rows: torch.Tensor
    losses: torch.Tensor  # batch, per-example summed loss
    ids: list[str] | None  # example ids, in row order (None when the batch named none)
    n_tokens: torch.Tensor  # batch, tokens each loss is summed over


FLOAT16_LOSS_SCALE = 1024.0  # float16 keeps gradients down to ~6e-8; scaled, small ones survive
MEAN_LOSS_MESSAGE = (
    "the backward pass went through the model's `.loss`, a mean over the batch's tokens: every "
    "recorded row is 1/N of its example's gradient (N: the batch's loss tokens) and depends on the "
    "batch it sits in. Differentiate per-example losses summed over tokens instead, e.g. "
    "`CausalLMObjective().losses(outputs.logits, batch)`"
)


def _warn_mean_loss(grad: torch.Tensor) -> None:
    warnings.warn(MEAN_LOSS_MESSAGE, BatchMeanLossWarning, stacklevel=2)


def _tap_model_loss(module: nn.Module, args: tuple, output: object) -> None:
    # transformers' outputs carry `.loss` when labels were given: a batch mean by construction.
    loss = getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.requires_grad and loss.dim() == 0:
        loss.register_hook(_warn_mean_loss)


def _layout(targets: Mapping[str, nn.Module], config: ProjectionConfig) -> GradientLayout:
    specs = []
    for name, module in targets.items():
        d_in, d_out = module_dims(module)
        k_in, k_out = min(config.rank_in, d_in), min(config.rank_out, d_out)
        specs.append(ModuleSpec(name, tracked_class(module).kind, d_in, d_out, k_in, k_out))
    return GradientLayout(tuple(specs))


def random_projections(layout: GradientLayout, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        m.name: (
            random_projection(seed, m.name, "in", m.k_in, m.d_in),
            random_projection(seed, m.name, "out", m.k_out, m.d_out),
        )
        for m in layout.modules
    }


def pca_projections(
    model: nn.Module,
    config: ProjectionConfig,
    batches: Iterable[Batch],
    objective: Objective | None = None,
    fisher: FisherConfig | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(P_in, P_out) per tracked module: top eigenvectors of its KFAC factors, from one data pass.

    The output-gradient factor uses the labels of the Fisher estimator (sampled, or every class).
    """
    targets = select_modules(model, config)
    layout = _layout(targets, config)
    ranks_out = {m.name: m.k_out for m in layout.modules}
    covs = kfac_covariances(model, targets, batches, objective or CausalLMObjective(), fisher, ranks_out)

    def top(factor: torch.Tensor | FactorSketch, k: int) -> torch.Tensor:
        if isinstance(factor, FactorSketch):  # an LM head's vocabulary side
            return sketched_pca_projection(factor.omega, factor.y, k)
        return pca_projection(factor, k)

    return {m.name: (top(covs[m.name][0], m.k_in), top(covs[m.name][1], m.k_out)) for m in layout.modules}


class LoGra:
    """LoGra add-on layers injected into `model`, and the per-example gradients they record."""

    def __init__(
        self, model: nn.Module, config: ProjectionConfig | None = None, *, projections: Projections | None = None
    ):
        config = config or ProjectionConfig()
        targets = select_modules(model, config)
        layout = _layout(targets, config)
        if projections is None:
            if config.init == "pca":
                raise ValueError("init='pca' (the default) needs calibration data: build with "
                                 "LoGra.with_pca(model, config, batches), or pass ProjectionConfig(init='random')")
            projections = random_projections(layout, config.seed)
        self.model = model
        self.layout = layout
        self.spec = ProjectionSpec(config, layout, matrices_digest(projections))
        self.adapters = inject_adapters(model, targets, projections)
        self._recorder = GradientRecorder(self.adapters, layout)

    @classmethod
    def with_pca(
        cls,
        model: nn.Module,
        config: ProjectionConfig,
        batches: Iterable[Batch],
        objective: Objective | None = None,
        fisher: FisherConfig | None = None,
    ) -> LoGra:
        """Initialise projections with the top eigenvectors of KFAC factors from one data pass."""
        projections = pca_projections(model, config, batches, objective, fisher)
        return cls(model, config.model_copy(update={"init": "pca"}), projections=projections)

    @property
    def bottlenecks(self) -> list[torch.Tensor]:
        """The zero-initialised parameters whose per-example gradients LoGra logs."""
        return [a.bottleneck.weight for a in self.adapters.values()]

    def projections(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(P_in, P_out) per module, to save next to the logged rows (needed for PCA init)."""
        def copy(matrix: torch.Tensor) -> torch.Tensor:
            return matrix.detach().cpu().contiguous().clone()

        return {n: (copy(a.p_in), copy(a.p_out)) for n, a in self.adapters.items()}

    @contextlib.contextmanager
    def recording(
        self, attention_mask: torch.Tensor | None = None, example_ids: Sequence[str] | None = None
    ) -> Iterator[None]:
        """Record the forward passes run inside; differentiate per-example summed losses after.

        Warns (BatchMeanLossWarning) if the backward pass goes through a transformers model's
        `.loss`, whose batch mean makes every row 1/N smaller.
        """
        handle = self.model.register_forward_hook(_tap_model_loss)
        try:
            with self._recorder.recording(attention_mask, example_ids):
                yield
        finally:
            handle.remove()

    def pop_rows(self, example_ids: Sequence[str] | None = None) -> RecordedRows:
        """(rows, ids) of the backward passes since the last pop; ids as given to `recording`."""
        return self._recorder.pop_rows(example_ids)

    def log_batch(
        self,
        batch: Batch,
        objective: Objective | None = None,
        *,
        ids: Sequence[str] | None = None,
        fisher: FisherConfig | None = None,
        autocast_dtype: torch.dtype | None = None,
        loss_scale: float | None = None,
    ) -> LoggedBatch:
        """Forward once, backward once (plus one per label draw or class for the true or exact
        Fisher), return projected gradients.

        `ids` (or else `batch["example_ids"]`), one string per example, come back with the rows,
        name examples in errors and seed the sampled labels per example (without ids, each
        example's content seeds them, so the Fisher does not depend on batching). Under float16 autocast
        the losses are scaled by `loss_scale` (default 1024) so small gradients do not underflow;
        rows are unscaled before returning.
        """
        objective = objective or CausalLMObjective()
        fisher = resolve_fisher(fisher, objective)
        if loss_scale is None:
            loss_scale = FLOAT16_LOSS_SCALE if autocast_dtype == torch.float16 else 1.0
        named = ids if ids is not None else batch.get("example_ids")
        ids = [str(i) for i in named] if named is not None else None
        device = self.bottlenecks[0].device
        autocast = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast, self.recording(objective.attention_mask(batch), ids):
            outputs = objective.forward(self.model, batch)
            losses = objective.losses(outputs, batch)
        drawn = fisher.estimator != "empirical"
        torch.autograd.grad(losses.sum() * loss_scale, self.bottlenecks, retain_graph=drawn, allow_unused=True)
        rows = self.pop_rows().rows / loss_scale
        fisher_rows = rows
        if drawn:
            with autocast:
                draws = fisher_losses(objective, outputs, batch, fisher, ids)
            parts = []
            for i, draw in enumerate(draws):
                last = i == len(draws) - 1
                torch.autograd.grad(draw.sum() * loss_scale, self.bottlenecks, retain_graph=not last, allow_unused=True)
                parts.append(self.pop_rows().rows / loss_scale)
            fisher_rows = parts[0] if len(parts) == 1 else torch.stack(parts, dim=1)
        return LoggedBatch(rows, fisher_rows, losses.detach(), ids, objective.loss_tokens(batch))

    def remove(self) -> None:
        """Take the add-on layers out; the model is left exactly as it was."""
        remove_adapters(self.model)
        self.adapters = {}

    def __enter__(self) -> LoGra:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
