"""Projection matrices kept with the rows when the seed alone cannot rebuild them (PCA init).

Written at creation, before the store's identity attribute, and checked against the spec's
matrices digest, so rows and the projection that made them can never drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import zarr

from valuation.layout import GradientLayout
from valuation.spec import ProjectionSpec, matrices_digest

from . import nodes
from .codecs import put_array
from .errors import RowsInvalidError

PROJECTIONS = "projections"
ROOT_MODULE = "(root)"  # node name for module "": a model that is itself one tracked layer


def _node(module_name: str) -> str:
    return module_name or ROOT_MODULE


def checked_projections(spec: ProjectionSpec, projections: Mapping[str, tuple[Any, Any]]) -> dict:
    """The matrices as tensors, if they are the ones `spec` describes (checked before anything is written)."""
    tensors = {n: (torch.as_tensor(p_in), torch.as_tensor(p_out)) for n, (p_in, p_out) in projections.items()}
    if set(tensors) != set(spec.layout.names) or matrices_digest(tensors) != spec.matrices_sha256:
        raise RowsInvalidError("the projection matrices given are not the ones the projection spec describes")
    return tensors


def save_projections(root: zarr.Group, tensors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    group = root.create_group(PROJECTIONS)
    for name, (p_in, p_out) in tensors.items():
        module = group.create_group(_node(name))
        put_array(module, "p_in", p_in.to(torch.float32).numpy())
        put_array(module, "p_out", p_out.to(torch.float32).numpy())


def load_projections(root: zarr.Group, layout: GradientLayout) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    if PROJECTIONS not in root:
        return None
    group = nodes.group(root, PROJECTIONS)

    def matrix(module: str, name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(nodes.read(nodes.array(group, f"{_node(module)}/{name}"))))

    return {m.name: (matrix(m.name, "p_in"), matrix(m.name, "p_out")) for m in layout.modules}
