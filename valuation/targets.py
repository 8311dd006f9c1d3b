"""Choosing which modules of a model LoGra tracks."""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from .config import ProjectionConfig
from .errors import NoModulesMatchedError, UnsupportedModuleError
from .layout import ModuleKind

try:  # GPT-2 family layers store their weight transposed: (d_in, d_out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # transformers is optional for plain PyTorch users
    Conv1D = None


def module_kind(module: nn.Module) -> ModuleKind | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if Conv1D is not None and isinstance(module, Conv1D):
        return "conv1d"
    return None


def module_dims(module: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of a trackable module."""
    if module_kind(module) == "linear":
        return module.in_features, module.out_features
    d_in, d_out = module.weight.shape
    return d_in, d_out


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def select_modules(model: nn.Module, config: ProjectionConfig) -> dict[str, nn.Module]:
    """Trackable modules whose qualified names match `config.modules` and not `config.exclude`.

    Wildcard patterns silently skip modules LoGra cannot track (containers, norms, dropout);
    an exact name that points at such a module is an error, because the user asked for it.
    """
    named = dict(model.named_modules())
    trackable = [n for n, m in named.items() if n and module_kind(m) is not None]
    for pattern in config.modules:
        if not _is_pattern(pattern) and pattern in named and module_kind(named[pattern]) is None:
            raise UnsupportedModuleError(pattern, type(named[pattern]).__name__)

        # A pattern that matches nothing is almost always a typo or the wrong model: say so.
        if not any(fnmatchcase(n, pattern) for n in trackable):
            raise NoModulesMatchedError([pattern], trackable)

    def wanted(name: str) -> bool:
        included = any(fnmatchcase(name, p) for p in config.modules)
        excluded = any(fnmatchcase(name, p) for p in config.exclude)
        return included and not excluded

    chosen = {n: named[n] for n in trackable if wanted(n)}
    if not chosen:
        raise NoModulesMatchedError(config.modules, trackable)
    return chosen
