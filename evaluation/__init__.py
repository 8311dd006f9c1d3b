"""Counterfactual checks of attribution quality: LDS, brittleness, leave-one-provider-out.

Plain PyTorch and numpy. The retraining is supplied by the user (a callable or a shell command);
`tasks` holds two ready-made tasks whose retrains take seconds on a CPU.
"""

from valuation.stats import spearman, spearman_columns

from .brittleness import BrittlenessConfig, run_brittleness
from .lds import LDSConfig, lds_per_query, lds_subsets, run_lds
from .lopo import LOPOConfig, run_lopo
from .methods import Method, Scorer
from .retrain import CommandRetrain, OutcomeCache, Retrain, RetrainError
from .runner import EvalConfig, evaluate

__all__ = [
    "BrittlenessConfig", "CommandRetrain", "EvalConfig", "LDSConfig", "LOPOConfig", "Method", "OutcomeCache",
    "Retrain", "RetrainError", "Scorer", "evaluate", "lds_per_query", "lds_subsets", "run_brittleness", "run_lds",
    "run_lopo", "spearman", "spearman_columns",
]
