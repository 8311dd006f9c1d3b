"""A small classification task where everything is cheap: exact influence, hundreds of retrains.

Four Gaussian classes in 10 dimensions, six providers of different value (clean data of all
classes, clean data of two classes only, half-random labels, shifted inputs, a small clean set),
24 clean held-out queries, and a tanh MLP (10-16-4, float64). Training is full-batch L-BFGS on
mean cross-entropy plus weight decay, run to a stationary point (gradient norm ~1e-6), which is
where influence functions are meant to hold; seed s fixes the initial weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from valuation.objectives import ClassificationObjective

from .base import Task

CLASSES = 4


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    count: int
    classes: tuple[int, ...] = tuple(range(CLASSES))
    label_noise: float = 0.0  # share of labels redrawn uniformly at random
    shift: float = 0.0  # added to every input coordinate


PROVIDERS = (
    ProviderSpec("core", 60),
    ProviderSpec("left", 40, classes=(0, 1)),
    ProviderSpec("right", 40, classes=(2, 3)),
    ProviderSpec("noisy", 40, label_noise=0.5),
    ProviderSpec("shifted", 40, shift=1.0),
    ProviderSpec("small", 20),
)


class ClassificationTaskConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int = Field(default=10, ge=2)
    hidden: int = Field(default=16, ge=2)
    queries: int = Field(default=24, ge=1)
    # 1e-2 gives a near-unique optimum that still generalises (query accuracy ~0.9); at 1e-3 the
    # MLP memorised the noisy labels and the query losses doubled from one init seed to another.
    weight_decay: float = Field(default=1e-2, ge=0)
    max_iter: int = Field(default=300, ge=1, description="L-BFGS iterations")
    data_seed: int = 0


def make_data(config: ClassificationTaskConfig):
    """(train inputs, labels, providers, query inputs, labels), the same for the same config."""
    gen = torch.Generator().manual_seed(config.data_seed)
    means = torch.randn(CLASSES, config.dim, generator=gen, dtype=torch.float64)

    def draw(n: int, classes: tuple[int, ...], noise: float = 0.0, shift: float = 0.0):
        y = torch.tensor(classes)[torch.randint(0, len(classes), (n,), generator=gen)]
        x = means[y] + torch.randn(n, config.dim, generator=gen, dtype=torch.float64) + shift
        redraw = torch.rand(n, generator=gen) < noise
        return x, torch.where(redraw, torch.randint(0, CLASSES, (n,), generator=gen), y)

    parts = [draw(p.count, p.classes, p.label_noise, p.shift) for p in PROVIDERS]
    providers = [p.name for p in PROVIDERS for _ in range(p.count)]
    queries = draw(config.queries, tuple(range(CLASSES)))
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]), providers, *queries


def build_mlp(dim: int, hidden: int, classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, classes)).double()


def train_mlp(x: torch.Tensor, y: torch.Tensor, classes: int, hidden: int, weight_decay: float, max_iter: int,
              seed: int) -> nn.Module:
    """A tanh MLP fitted by full-batch L-BFGS on mean cross-entropy plus weight decay, to a
    stationary point (where influence functions are meant to hold); `seed` fixes the initial weights."""
    model = build_mlp(x.shape[1], hidden, classes, seed)
    optimizer = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
        line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12,
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        decay = sum(p.square().sum() for p in model.parameters())
        loss = F.cross_entropy(model(x), y) + weight_decay / 2 * decay
        loss.backward()
        return loss

    optimizer.step(closure)
    return model.eval()


def mlp_task(name: str, x: torch.Tensor, y: torch.Tensor, providers: list[str], xq: torch.Tensor, yq: torch.Tensor,
             *, classes: int, hidden: int, weight_decay: float, max_iter: int, identity: dict) -> Task:
    """The Task of an MLP classifier: retraining drops the rows left out (full batch, so there
    are no batches to keep), query loss is each held-out point's cross-entropy."""
    def fit(rows: torch.Tensor, seed: int) -> nn.Module:
        return train_mlp(x[rows], y[rows], classes, hidden, weight_decay, max_iter, seed)

    def retrain(train_indices: np.ndarray, seed: int) -> np.ndarray:
        with torch.no_grad():
            return F.cross_entropy(fit(torch.as_tensor(train_indices), seed)(xq), yq, reduction="none").numpy()

    ids = [f"{p}-{i}" for i, p in enumerate(providers)]
    return Task(
        name=name,
        model=fit(torch.arange(len(y)), 0),
        objective=ClassificationObjective(),
        train_batches=[{"inputs": x, "labels": y, "example_ids": ids}],
        query_batches=[{"inputs": xq, "labels": yq, "example_ids": [f"q{i}" for i in range(len(yq))]}],
        providers=providers,
        query_ids=[f"q{i}-class{int(c)}" for i, c in enumerate(yq)],
        retrain=retrain,
        identity=identity,
    )


def classification_task(config: ClassificationTaskConfig = ClassificationTaskConfig()) -> Task:
    x, y, providers, xq, yq = make_data(config)
    return mlp_task("classification", x, y, providers, xq, yq, classes=CLASSES, hidden=config.hidden,
                    weight_decay=config.weight_decay, max_iter=config.max_iter,
                    identity={"task": "classification", "config": config.model_dump()})
