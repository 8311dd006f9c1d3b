"""LoGra: per-example projected gradients of any PyTorch model, in a few lines.

    logra = LoGra(model, ProjectionConfig(rank_in=16, rank_out=16))
    logged = logra.log_batch(batch)          # rows: batch x K projected gradients
    ...
    logra.remove()                           # the model is as it was

or, inside your own training loop:

    with logra.recording(attention_mask=batch["attention_mask"]):
        losses = per_example_losses(model(**batch), batch)   # summed over tokens, not averaged
    torch.autograd.grad(losses.sum(), logra.bottlenecks)
    rows = logra.pop_rows()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .config import FisherConfig, ProjectionConfig
from .kfac import kfac_covariances
from .layers import inject_adapters, remove_adapters
from .layout import GradientLayout, ModuleSpec
from .objectives import Batch, CausalLMObjective, Objective, example_generator
from .projection import pca_projection, random_projection
from .recorder import GradientRecorder
from .spec import ProjectionSpec, matrices_digest
from .targets import module_dims, module_kind, select_modules

Projections = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LoggedBatch:
    """Projected gradients of one batch (float32 unless the model is float64)."""

    rows: torch.Tensor  # batch x K, gradients of the training loss: what the store keeps
    fisher_rows: torch.Tensor  # batch x K, what the Fisher sums: rows, or sampled-label gradients
    losses: torch.Tensor  # batch, per-example summed loss


def _layout(targets: Mapping[str, nn.Module], config: ProjectionConfig) -> GradientLayout:
    specs = []
    for name, module in targets.items():
        d_in, d_out = module_dims(module)
        k_in, k_out = min(config.rank_in, d_in), min(config.rank_out, d_out)
        specs.append(ModuleSpec(name, module_kind(module), d_in, d_out, k_in, k_out))
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

    With the true-Fisher estimator the output-gradient factor uses sampled labels too.
    """
    fisher = fisher or FisherConfig()
    targets = select_modules(model, config)
    layout = _layout(targets, config)
    seed = fisher.sample_seed if fisher.estimator == "true" else None
    covs = kfac_covariances(model, targets, batches, objective or CausalLMObjective(), seed)
    return {
        m.name: (pca_projection(covs[m.name][0], m.k_in), pca_projection(covs[m.name][1], m.k_out))
        for m in layout.modules
    }


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
                raise ValueError("init='pca' needs data: build with LoGra.with_pca(model, config, batches)")
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
    def bottlenecks(self) -> list[nn.Parameter]:
        """The zero-initialised parameters whose per-example gradients LoGra logs."""
        return [a.bottleneck.weight for a in self.adapters.values()]

    def projections(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(P_in, P_out) per module, to save next to the logged rows (needed for PCA init)."""
        return {
            n: (a.p_in.detach().cpu().clone(), a.p_out.detach().cpu().contiguous().clone())
            for n, a in self.adapters.items()
        }

    def recording(self, attention_mask: torch.Tensor | None = None) -> contextlib.AbstractContextManager:
        return self._recorder.recording(attention_mask)

    def pop_rows(self, example_ids: Sequence[str] | None = None) -> torch.Tensor:
        return self._recorder.pop_rows(example_ids)

    def log_batch(
        self,
        batch: Batch,
        objective: Objective | None = None,
        *,
        fisher: FisherConfig | None = None,
        autocast_dtype: torch.dtype | None = None,
        loss_scale: float = 1.0,
    ) -> LoggedBatch:
        """Forward once, backward once (twice for the true Fisher), return projected gradients.

        `batch["example_ids"]` (a list of strings), when present, names examples in errors and
        seeds the sampled labels per example. Under float16 autocast pass a `loss_scale`
        (e.g. 1024) so small gradients do not underflow; rows are unscaled before returning.
        """
        objective = objective or CausalLMObjective()
        fisher = fisher or FisherConfig()
        ids = batch.get("example_ids")
        device = self.bottlenecks[0].device
        autocast = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast, self.recording(objective.attention_mask(batch)):
            outputs = objective.forward(self.model, batch)
            losses = objective.losses(outputs, batch)
        sampled = fisher.estimator == "true"
        torch.autograd.grad(losses.sum() * loss_scale, self.bottlenecks, retain_graph=sampled, allow_unused=True)
        rows = self.pop_rows(ids) / loss_scale
        fisher_rows = rows
        if sampled:
            names = ids or [str(i) for i in range(outputs.shape[0])]
            gens = [example_generator(fisher.sample_seed, n, outputs.device) for n in names]
            with autocast:
                sampled_losses = objective.sampled_losses(outputs, batch, gens)
            torch.autograd.grad(sampled_losses.sum() * loss_scale, self.bottlenecks, allow_unused=True)
            fisher_rows = self.pop_rows(ids) / loss_scale
        return LoggedBatch(rows, fisher_rows, losses.detach())

    def remove(self) -> None:
        """Take the add-on layers out; the model is left exactly as it was."""
        remove_adapters(self.model)
        self.adapters = {}

    def __enter__(self) -> LoGra:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
