"""Where each tracked module's projected gradient lives inside a flat gradient row.

A row is the concatenation, in a fixed module order, of each module's k_out x k_in projected
gradient flattened row-major. Storage and scoring use these offsets to read one module or all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ModuleKind = str  # a kind registered in layers.LoGraAdapter.registry: "linear", "conv1d", ...


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    kind: ModuleKind
    d_in: int
    d_out: int
    k_in: int
    k_out: int

    @property
    def size(self) -> int:
        return self.k_in * self.k_out


@dataclass(frozen=True)
class GradientLayout:
    modules: tuple[ModuleSpec, ...]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modules]

    @property
    def offsets(self) -> dict[str, tuple[int, int]]:
        """Half-open column range [start, stop) of each module."""
        out, start = {}, 0
        for m in self.modules:
            out[m.name] = (start, start + m.size)
            start += m.size
        return out

    @property
    def total(self) -> int:
        return sum(m.size for m in self.modules)

    def slices(self) -> list[tuple[ModuleSpec, slice]]:
        offsets = self.offsets
        return [(m, slice(*offsets[m.name])) for m in self.modules]

    def to_dict(self) -> dict:
        return {"modules": [asdict(m) for m in self.modules]}

    @classmethod
    def from_dict(cls, data: dict) -> GradientLayout:
        return cls(tuple(ModuleSpec(**m) for m in data["modules"]))
