"""The valuation core: LoGra gradient projection, projected Fisher and influence.

Plain PyTorch, usable from any training code; no orchestration and no storage inside.
"""

from .config import FisherConfig, InfluenceMode, ProjectionConfig
from .errors import (
    NoModulesMatchedError,
    NonFiniteGradientError,
    ProjectionMismatchError,
    UnsupportedModuleError,
    ValuationError,
)
from .fisher import FisherPartial, FisherSnapshot
from .influence import PreconditionedQueries, influence_scores, top_k
from .layout import GradientLayout, ModuleSpec
from .logra import LoggedBatch, LoGra
from .objectives import CausalLMObjective, ClassificationObjective, Objective
from .spec import ProjectionSpec

__all__ = [
    "CausalLMObjective", "ClassificationObjective", "FisherConfig", "FisherPartial",
    "FisherSnapshot", "GradientLayout", "InfluenceMode", "LoGra", "LoggedBatch", "ModuleSpec",
    "NoModulesMatchedError", "NonFiniteGradientError", "Objective", "PreconditionedQueries",
    "ProjectionConfig", "ProjectionMismatchError", "ProjectionSpec", "UnsupportedModuleError",
    "ValuationError", "influence_scores", "top_k",
]
