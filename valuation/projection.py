"""Projection matrices P_in (k_in x d_in) and P_out (k_out x d_out) for one module.

Pure functions: each returns a float64 CPU tensor; the add-on layer casts it to the model's
device and dtype.
"""

from __future__ import annotations

import hashlib

import torch


def _generator(seed: int, module_name: str, side: str) -> torch.Generator:
    # Derived from the seed and the module's name alone, so the same projection comes back on any
    # machine, in any process, whatever other modules are tracked.
    digest = hashlib.sha256(f"{seed}:{module_name}:{side}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def random_projection(seed: int, module_name: str, side: str, k: int, d: int) -> torch.Tensor:
    """Gaussian k x d matrix with entries N(0, 1/k), so squared norms are kept in expectation."""
    gen = _generator(seed, module_name, side)
    return torch.randn(k, d, generator=gen, dtype=torch.float64).div_(k**0.5)


def pca_projection(covariance: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k eigenvectors (rows) of a symmetric covariance, largest eigenvalue first.

    Signs are fixed (largest-magnitude entry positive) so the result is reproducible. A vector is
    a diagonal covariance: its eigenvectors are unit vectors, largest entry first (ties by index).
    """
    cov = covariance.detach().to(torch.float64).cpu()
    if cov.dim() == 1:
        order = torch.sort(-cov, stable=True).indices[:k]
        top = torch.zeros(k, len(cov), dtype=torch.float64)
        top[torch.arange(k), order] = 1.0
        return top
    _, vecs = torch.linalg.eigh((cov + cov.T) / 2)
    top = vecs[:, -k:].flip(-1).T.contiguous()
    pivot = top.abs().argmax(dim=1)
    signs = torch.sign(top[torch.arange(k), pivot])
    return top * signs[:, None]
