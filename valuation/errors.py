"""Errors the valuation core raises. Each message says what is wrong and where."""

from __future__ import annotations

from collections.abc import Sequence


class ValuationError(Exception):
    """Base class of every error the valuation core raises on purpose."""


class NoModulesMatchedError(ValuationError):
    def __init__(self, patterns: Sequence[str], available: Sequence[str]):
        shown = ", ".join(available[:12]) + (" ..." if len(available) > 12 else "")
        super().__init__(
            f"no trackable module matched {list(patterns)}; "
            f"trackable modules (nn.Linear, transformers Conv1D) are: {shown or 'none'}"
        )


class UnsupportedModuleError(ValuationError):
    def __init__(self, name: str, module_type: str):
        super().__init__(
            f"module {name!r} is a {module_type}, which LoGra cannot track; "
            "supported types are torch.nn.Linear and transformers' Conv1D"
        )


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
