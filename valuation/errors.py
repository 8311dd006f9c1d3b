"""Errors the valuation core raises. Each message says what is wrong and where."""

from __future__ import annotations

from collections.abc import Sequence


class ValuationError(Exception):
    """Base class of every error the valuation core raises on purpose."""


def _shown_name(name: str) -> str:
    return repr(name) if name else "'' (the model itself)"


class NoModulesMatchedError(ValuationError):
    def __init__(self, patterns: Sequence[str], available: Sequence[str], supported: Sequence[str] = ()):
        shown = ", ".join(_shown_name(n) for n in available[:12]) + (" ..." if len(available) > 12 else "")
        types = f" ({', '.join(supported)})" if supported else ""
        super().__init__(
            f"no trackable module matched {list(patterns)}; "
            f"trackable modules{types} are: {shown or 'none'}"
        )


class UnsupportedModuleError(ValuationError):
    def __init__(self, name: str, module_type: str, supported: Sequence[str] = (), reason: str | None = None):
        why = f" ({reason})" if reason else ""
        types = f"; supported types are {', '.join(supported)}" if supported and not reason else ""
        super().__init__(f"module {_shown_name(name)} is a {module_type}, which LoGra cannot track{why}{types}")


class ProjectionMismatchError(ValuationError):
    """Gradients logged under one projection cannot be compared with gradients of another."""

    def __init__(self, expected: str, got: str, differences: Sequence[str]):
        self.differences = list(differences)
        detail = "; ".join(differences) if differences else "fingerprints differ"
        super().__init__(
            f"projection mismatch: expected {expected}, got {got} ({detail})"
        )


class NonFiniteGradientError(ValuationError):
    def __init__(self, module: str, examples: Sequence[str]):
        self.module = module
        self.examples = list(examples)
        shown = ", ".join(self.examples[:10]) + (" ..." if len(self.examples) > 10 else "")
        super().__init__(
            f"NaN/inf projected gradient in module {module!r} for example(s) {shown}; "
            "check those inputs, lower the learning rate of the model, or (float16) the loss scale"
        )


class BatchMeanLossWarning(UserWarning):
    """The recorded loss was a batch mean: rows are 1/N of the per-example gradients."""
