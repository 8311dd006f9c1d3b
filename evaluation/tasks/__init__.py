"""Ready-made tasks for the counterfactual checks: a small classifier and a tiny language model."""

from .base import Task
from .classification import ClassificationTaskConfig, classification_task
from .language_model import LMTaskConfig, language_model_task

__all__ = ["ClassificationTaskConfig", "LMTaskConfig", "Task", "classification_task", "language_model_task"]
