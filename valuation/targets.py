"""Choosing which modules of a model LoGra tracks.

A module is trackable when its type is registered in `layers.LoGraAdapter.registry`. Wildcard
patterns select the registered kinds listed in `ProjectionConfig.kinds`; an exact name may point
at a module of any registered kind. The model itself (name "") is a module like any other, so a
model that is one nn.Linear can be tracked.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from .config import ProjectionConfig
from .errors import NoModulesMatchedError, UnsupportedModuleError
from .layers import LoGraAdapter, adapter_class, supported_labels, tracked_class


def module_kind(module: nn.Module) -> str | None:
    """The registered kind of `module` ("linear", "conv1d", ...), or None if it is not trackable."""
    cls = adapter_class(module)
    return None if cls is None or cls.unsupported(module) else cls.kind


def module_dims(module: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of a trackable module."""
    return tracked_class(module).dims(module)


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _addon_internals(model: nn.Module) -> set[str]:
    """Names of the modules inside LoGra add-ons: never tracked themselves."""
    inside = set()
    for name, module in model.named_modules():
        if isinstance(module, LoGraAdapter):
            inside |= {f"{name}.{sub}" if sub else name for sub, _ in module.named_modules()}
    return inside


def _why_not(module: nn.Module) -> str | None:
    cls = adapter_class(module)
    return cls.unsupported(module) if cls is not None else None


def select_modules(model: nn.Module, config: ProjectionConfig) -> dict[str, nn.Module]:
    """Trackable modules whose qualified names match `config.modules` and not `config.exclude`.

    Wildcard patterns silently skip modules LoGra cannot track (containers, norms, dropout) and
    kinds not in `config.kinds`; an exact name that points at an untrackable module is an error,
    because the user asked for it.
    """
    unknown = sorted(set(config.kinds) - LoGraAdapter.registry.keys())
    if unknown:
        raise ValueError(f"unknown module kind(s) {unknown} in kinds; registered: {sorted(LoGraAdapter.registry)}")
    skip = _addon_internals(model)
    named = {n: m for n, m in model.named_modules() if n not in skip}
    kinds = {n: module_kind(m) for n, m in named.items()}
    trackable = [n for n, kind in kinds.items() if kind is not None]
    by_wildcard = [n for n in trackable if kinds[n] in config.kinds]
    supported = supported_labels()
    for pattern in config.modules:
        if _is_pattern(pattern):
            if not any(fnmatchcase(n, pattern) for n in by_wildcard):
                # A pattern that matches nothing is almost always a typo or the wrong model: say so.
                raise NoModulesMatchedError([pattern], by_wildcard, supported)
        elif pattern not in named:
            raise NoModulesMatchedError([pattern], trackable, supported)
        elif kinds[pattern] is None:
            raise UnsupportedModuleError(pattern, type(named[pattern]).__name__, supported, _why_not(named[pattern]))

    exact = {p for p in config.modules if not _is_pattern(p)}
    patterns = [p for p in config.modules if _is_pattern(p)]

    def wanted(name: str) -> bool:
        if any(fnmatchcase(name, p) for p in config.exclude):
            return False
        return name in exact or (kinds[name] in config.kinds and any(fnmatchcase(name, p) for p in patterns))

    chosen = {n: named[n] for n in trackable if wanted(n)}
    if not chosen:
        raise NoModulesMatchedError(config.modules, by_wildcard, supported)
    return chosen
