"""Typed access to what the store wrote: zarr's lookups are typed as unions (`Array | Group` for
a child, any JSON value for an attribute, any array-like for a selection), while the store knows
which one it wrote at each name. These helpers say so to the type checker and change nothing at
run time."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import zarr


def group(parent: zarr.Group, path: str) -> zarr.Group:
    return cast(zarr.Group, parent[path])


def array(parent: zarr.Group, path: str) -> zarr.Array:
    return cast(zarr.Array, parent[path])


def read(array: zarr.Array, selection: Any = Ellipsis) -> np.ndarray:
    return cast(np.ndarray, array[selection])


def attr(node: zarr.Group | zarr.Array, key: str, default: Any = None) -> Any:
    """An attribute as the JSON value the store wrote there (`default` if absent)."""
    return node.attrs.get(key, default)
