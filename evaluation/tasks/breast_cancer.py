"""A real classification task: the Wisconsin breast cancer data (569 tumours, 30 features, two
classes) as bundled in scikit-learn's wheel (no download; the `eval` extra).

A random split holds out `queries` tumours; features are standardised with the training rows'
mean and spread. The model is a tanh MLP (30-16-2, float64) fitted by L-BFGS to a stationary
point. With weight decay 1e-2 the optimum is unique (two init seeds give query losses that agree
to 1e-4), so one retrain per subset measures it, and the classifier is well fit (training
accuracy 0.99): the regime where one sampled label per example is almost always the data's own.
Providers are five equal random parts, so leave-one-provider-out measures near-equal worth.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from .base import Task
from .classification import mlp_task

CLASSES = 2
PARTS = 5


class BreastCancerTaskConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    queries: int = Field(default=100, ge=1, le=300, description="held-out tumours")
    hidden: int = Field(default=16, ge=2)
    weight_decay: float = Field(default=1e-2, ge=0)
    max_iter: int = Field(default=300, ge=1, description="L-BFGS iterations")
    split_seed: int = 0


def load_breast_cancer_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:
        raise RuntimeError("the breast-cancer task needs scikit-learn: pip install 'dataworth[eval]'") from None
    data = load_breast_cancer()
    return torch.tensor(data.data, dtype=torch.float64), torch.tensor(data.target, dtype=torch.long)


def breast_cancer_task(config: BreastCancerTaskConfig = BreastCancerTaskConfig()) -> Task:
    x, y = load_breast_cancer_tensors()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(config.split_seed))
    held_out, kept = order[: config.queries], order[config.queries :]
    mean, spread = x[kept].mean(dim=0), x[kept].std(dim=0)
    x = (x - mean) / spread
    providers = [f"part-{i % PARTS}" for i in range(len(kept))]
    return mlp_task(
        "breast-cancer", x[kept], y[kept], providers, x[held_out], y[held_out], classes=CLASSES,
        hidden=config.hidden, weight_decay=config.weight_decay, max_iter=config.max_iter,
        identity={"task": "breast-cancer", "config": config.model_dump()},
    )
