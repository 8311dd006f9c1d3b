"""The model a flow values, loaded once per process and wrapped with LoGra once per projection."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sample.model import prepare_sample_model
from valuation import LoGra, ProjectionConfig
from valuation.data import Example, batches, encode_example, to_device
from valuation.fingerprint import model_fingerprint
from valuation.logra import pca_projections
from valuation.pipeline import LoggingOptions, autocast_dtype_for, resolve_device
from valuation.spec import matrices_digest

from .params import SAMPLE_MODEL, IngestParams, ModelParams, Workspace


@dataclass
class LoadedModel:
    path: str
    model: torch.nn.Module
    tokenizer: object
    fingerprint: dict
    logra: LoGra
    autocast_dtype: torch.dtype | None
    # LoGra's recorder holds per-batch state: one batch at a time per loaded model.
    lock: threading.Lock

    def logging_options(self, params: ModelParams) -> LoggingOptions:
        return LoggingOptions(params.batch_size, params.max_length, self.autocast_dtype)


_cache: dict[tuple, LoadedModel] = {}
_lock = threading.Lock()


def load_model(path_or_name: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode, tokenizer) by `from_pretrained`, as for any causal LM.

    A local directory is read with `local_files_only`, so a missing file is an error rather
    than a download; a hub name follows the usual transformers settings (HF_HUB_OFFLINE).
    """
    local = Path(path_or_name).exists()
    model = AutoModelForCausalLM.from_pretrained(path_or_name, local_files_only=local)
    tokenizer = AutoTokenizer.from_pretrained(path_or_name, local_files_only=local)
    return model.eval(), tokenizer


def model_path(params: ModelParams, workspace: Workspace) -> str:
    """A local directory for the model: the embedded sample is trained there on first use."""
    if params.name_or_path == SAMPLE_MODEL:
        return str(prepare_sample_model(workspace.models / "sample-gpt2"))
    path = Path(params.name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else params.name_or_path


def fit_pca(params: IngestParams, examples: list[Example]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """PCA projections of `params.projection` from the KFAC factors of `examples`, on a fresh copy
    of the model (the cached one may carry add-ons already)."""
    model, tokenizer = load_model(model_path(params.model, params.workspace))
    model = model.to(resolve_device(params.model.device)).eval()
    encoded = [encode_example(tokenizer, e, params.model.max_length) for e in examples]
    device = next(model.parameters()).device
    calibration = (
        to_device(batch, device)
        for batch in batches(encoded, params.model.batch_size, tokenizer.pad_token_id)
    )
    return pca_projections(model, params.projection, calibration, fisher=params.fisher)


def load_for_logging(
    params: ModelParams, workspace: Workspace, projection: ProjectionConfig, projections=None
) -> LoadedModel:
    """The model on its device with LoGra attached; reused across tasks of one process."""
    path = model_path(params, workspace)
    device = resolve_device(params.device)
    digest = matrices_digest(projections) if projections is not None else None
    key = (path, str(device), params.precision, projection.model_dump_json(), digest)
    with _lock:  # threads of one worker share the model, but only one may build it
        if key not in _cache:
            model, tokenizer = load_model(path)
            model = model.to(device).eval()
            fingerprint = model_fingerprint(model)
            logra = LoGra(model, projection, projections=projections)
            _cache[key] = LoadedModel(
                path, model, tokenizer, fingerprint, logra,
                autocast_dtype_for(device, params.precision), threading.Lock(),
            )
        return _cache[key]
