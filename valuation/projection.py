"""Projection matrices P_in (k_in x d_in) and P_out (k_out x d_out) for one module.

Pure functions: each returns a float64 CPU tensor; the add-on layer casts it to the model's
device and dtype.
"""

from __future__ import annotations

import hashlib

import torch


def seeded_generator(seed: int, module_name: str, side: str) -> torch.Generator:
    # Derived from the seed and the module's name alone, so the same projection comes back on any
    # machine, in any process, whatever other modules are tracked.
    digest = hashlib.sha256(f"{seed}:{module_name}:{side}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def random_projection(seed: int, module_name: str, side: str, k: int, d: int) -> torch.Tensor:
    """Gaussian k x d matrix with entries N(0, 1/k), so squared norms are kept in expectation."""
    gen = seeded_generator(seed, module_name, side)
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
    return _signed(vecs[:, -k:].flip(-1).T.contiguous())


def sketched_pca_projection(omega: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k eigenvectors (rows) of a PSD matrix S known only through Y = S Omega (d x m, m >= k):
    the single-pass Nystrom approximation S ~ Y (Omega^T Y)^+ Y^T, stabilised by a small shift
    (Tropp et al. 2017, Alg. 3). Exact when S has rank at most m."""
    if k > y.shape[1]:
        raise ValueError(f"a sketch of {y.shape[1]} columns cannot give {k} eigenvectors")
    omega, y = omega.to(torch.float64), y.to(torch.float64)
    shift = torch.finfo(torch.float64).eps * max(float(torch.linalg.matrix_norm(y)), 1e-300) * y.shape[0] ** 0.5
    shifted = y + shift * omega
    core = omega.T @ shifted
    factor = torch.linalg.cholesky((core + core.T) / 2)
    b = torch.linalg.solve_triangular(factor, shifted.T, upper=False).T  # shifted @ factor^-T
    u, _, _ = torch.linalg.svd(b, full_matrices=False)
    return _signed(u[:, :k].T.contiguous())


def _signed(top: torch.Tensor) -> torch.Tensor:
    # Largest-magnitude entry of each row positive: the same matrices from the same data.
    pivot = top.abs().argmax(dim=1)
    signs = torch.sign(top[torch.arange(top.shape[0]), pivot])
    return top * signs[:, None]
