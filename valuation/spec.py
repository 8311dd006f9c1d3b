"""The identity of a projection: rows logged under different specs must never be mixed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .config import ProjectionConfig
from .errors import ProjectionMismatchError
from .layout import GradientLayout


def matrices_digest(projections: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
    """sha256 over the projection matrices (as float32, in module name order)."""
    digest = hashlib.sha256()
    for name in sorted(projections):
        for matrix in projections[name]:
            digest.update(name.encode())
            digest.update(matrix.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ProjectionSpec:
    config: ProjectionConfig
    layout: GradientLayout
    matrices_sha256: str

    @property
    def fingerprint(self) -> str:
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "config": self.config.model_dump(),
            "layout": self.layout.to_dict(),
            "matrices_sha256": self.matrices_sha256,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ProjectionSpec:
        return cls(
            ProjectionConfig(**data["config"]),
            GradientLayout.from_dict(data["layout"]),
            data["matrices_sha256"],
        )

    def differences(self, other: ProjectionSpec) -> list[str]:
        diffs = []
        mine, theirs = self.config.model_dump(), other.config.model_dump()
        for key in mine:
            if mine[key] != theirs[key]:
                diffs.append(f"{key}: {mine[key]!r} vs {theirs[key]!r}")
        if self.layout != other.layout:
            a = {m.name: (m.k_out, m.k_in, m.d_out, m.d_in) for m in self.layout.modules}
            b = {m.name: (m.k_out, m.k_in, m.d_out, m.d_in) for m in other.layout.modules}
            if a.keys() != b.keys():
                diffs.append(f"modules: {sorted(a.keys() ^ b.keys())} tracked on one side only")
            diffs += [f"{n}: (k_out, k_in, d_out, d_in) {a[n]} vs {b[n]}" for n in a.keys() & b.keys() if a[n] != b[n]]
        if not diffs and self.matrices_sha256 != other.matrices_sha256:
            diffs.append("projection matrices differ (e.g. PCA fitted on other data)")
        return diffs

    def check_compatible(self, other: ProjectionSpec, *, this: str = "store", that: str = "query") -> None:
        """Raise ProjectionMismatchError naming both sides if `other` was projected differently."""
        diffs = self.differences(other)
        if diffs:
            raise ProjectionMismatchError(
                f"{this} projection {self.fingerprint}", f"{that} projection {other.fingerprint}", diffs
            )
