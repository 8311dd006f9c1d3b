"""Ready-made tasks for the counterfactual checks: real data (Jane Austen's novels, breast cancer
tumours) for the evidence, and a small synthetic classifier and the bundled sample LM for tests."""

from .austen import AustenTaskConfig, austen_task
from .base import Task
from .breast_cancer import BreastCancerTaskConfig, breast_cancer_task
from .classification import ClassificationTaskConfig, classification_task
from .language_model import LMTaskConfig, language_model_task

__all__ = [
    "AustenTaskConfig", "BreastCancerTaskConfig", "ClassificationTaskConfig", "LMTaskConfig", "Task", "austen_task",
    "breast_cancer_task", "classification_task", "language_model_task",
]
