"""The valuation core: LoGra gradient projection, projected Fisher and influence.

Plain PyTorch, usable from any training code; no orchestration and no storage inside. Importing it
imports neither transformers nor anything of the rest of the project.
"""

from .config import FisherConfig, InfluenceMode, ProjectionConfig
from .errors import (
    BatchMeanLossWarning,
    NoModulesMatchedError,
    NonFiniteGradientError,
    ProjectionMismatchError,
    UnsupportedModuleError,
    ValuationError,
)
from .fisher import FisherPartial, FisherSnapshot
from .influence import Influence, PreconditionedQueries, TopK, influence_scores, top_k
from .layers import LoGraAdapter
from .layout import GradientLayout, ModuleSpec
from .logra import LoggedBatch, LoGra
from .objectives import CausalLMObjective, ClassificationObjective, Objective
from .recorder import RecordedRows
from .sink import ListSink, LogSession, RowSink, log_into_sink
from .spec import ProjectionSpec

__all__ = [
    "BatchMeanLossWarning", "CausalLMObjective", "ClassificationObjective", "FisherConfig", "FisherPartial",
    "FisherSnapshot", "GradientLayout", "Influence", "InfluenceMode", "ListSink", "LoGra", "LoGraAdapter",
    "LogSession", "LoggedBatch", "ModuleSpec", "NoModulesMatchedError", "NonFiniteGradientError", "Objective",
    "PreconditionedQueries", "ProjectionConfig", "ProjectionMismatchError", "ProjectionSpec", "RecordedRows",
    "RowSink", "TopK", "UnsupportedModuleError", "ValuationError", "influence_scores", "log_into_sink", "top_k",
]
