"""The model a flow values, loaded once per process and wrapped with LoGra once per projection."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from sample.model import prepare_sample_model
from valuation import FisherConfig, LoGra, ProjectionConfig
from valuation.data import Encoder, Example
from valuation.fingerprint import model_fingerprint
from valuation.pipeline import LoggingOptions, autocast_dtype_for, resolve_device
from valuation.pipeline import fit_pca as pca_from_examples
from valuation.spec import matrices_digest

from .failures import is_transient
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
        return logging_options(params, self.model, self.tokenizer, self.autocast_dtype)


_cache: dict[tuple, LoadedModel] = {}
_lock = threading.Lock()


class ModelNotFoundError(ValueError):
    """No model where `model.name_or_path` points."""


def _looks_like_a_path(name: str) -> bool:
    # A hub id is "name" or "namespace/name"; anything else can only be meant as a directory.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _from_pretrained(auto, path_or_name: str | Path):
    name = str(path_or_name)
    local = Path(name).expanduser().exists()
    if not local and _looks_like_a_path(name):
        raise ModelNotFoundError(f"model directory {name!r} does not exist (model.name_or_path: a directory "
                                 f"saved with save_pretrained, or {SAMPLE_MODEL!r})")
    try:
        return auto.from_pretrained(path_or_name, local_files_only=local)
    except OSError as err:  # transformers' word for a missing directory, file or hub model
        if is_transient(err):
            raise
        raise ModelNotFoundError(f"cannot load model {name!r}: {' '.join(str(err).split())}") from None


def load_model(path_or_name: str | Path) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """(model in eval mode, tokenizer) by `from_pretrained`, as for any causal LM.

    A local directory is read with `local_files_only`, so a missing file is an error rather
    than a download; a hub name follows the usual transformers settings (HF_HUB_OFFLINE).
    Raises ModelNotFoundError, in one line, when there is no such directory or model.
    """
    # An nn.Module to the type checker: transformers' wrapped `to` confuses its signature.
    module: torch.nn.Module = _from_pretrained(AutoModelForCausalLM, path_or_name)
    return module.eval(), load_tokenizer(path_or_name)


def load_tokenizer(path_or_name: str | Path) -> PreTrainedTokenizerBase:
    """The model's tokenizer alone (as load_model reads it), for what needs no weights."""
    return _from_pretrained(AutoTokenizer, path_or_name)


def context_length(model: torch.nn.Module, tokenizer) -> int | None:
    """The most tokens the model takes at once: its position table, or what its tokenizer declares
    (tokenizers without a limit declare a huge sentinel)."""
    config = getattr(model, "config", None)
    declared = [getattr(config, "n_positions", None), getattr(config, "max_position_embeddings", None),
                getattr(tokenizer, "model_max_length", None)]
    limits = [n for n in declared if isinstance(n, int) and 0 < n < 10**9]
    return min(limits) if limits else None


_noted: set[tuple[int, int]] = set()


def fitted_max_length(max_length: int, model: torch.nn.Module, tokenizer) -> int:
    """`max_length`, cut to the model's context: longer examples would index past its positions.
    Says so once per model and setting."""
    limit = context_length(model, tokenizer)
    if limit is None or max_length <= limit:
        return max_length
    if (id(model), max_length) not in _noted:
        _noted.add((id(model), max_length))
        _logger().warning("model.max_length %d exceeds the model's context of %d tokens: examples are cut to %d "
                          "(set model.max_length to at most %d to silence this)", max_length, limit, limit, limit)
    return limit


def logging_options(params: ModelParams, model: torch.nn.Module, tokenizer,
                    autocast_dtype: torch.dtype | None = None) -> LoggingOptions:
    """How this model's examples become rows: the same for training shards, queries, stability and
    the PCA calibration, so all of them are tokenised alike."""
    return LoggingOptions(params.batch_size, fitted_max_length(params.max_length, model, tokenizer), autocast_dtype,
                          params.special_tokens)


def encoding_identity(params: ModelParams, workspace: Workspace) -> dict:
    """The special tokens `params` give this model's examples (Encoder.identity), from its tokenizer
    alone; a one-line ValueError when the setting asks for a token the tokenizer lacks."""
    return Encoder(load_tokenizer(model_path(params, workspace)), params.max_length, params.special_tokens).identity()


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a flow run (library use, `dataworth stability`)
        return logging.getLogger(__name__)


def model_path(params: ModelParams, workspace: Workspace) -> str:
    """A local directory for the model: the embedded sample is trained there on first use."""
    if params.name_or_path == SAMPLE_MODEL:
        return str(prepare_sample_model(workspace.models / "sample-gpt2"))
    path = Path(params.name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else params.name_or_path


def lm_fisher(fisher: FisherConfig) -> FisherConfig:
    """The flows value causal language models: "auto" is the sampled-label Fisher for them."""
    return fisher.resolved(classifier=False)


def fit_pca(params: IngestParams, examples: list[Example]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """PCA projections of `params.projection` from the KFAC factors of `examples`, on a fresh copy
    of the model (the cached one may carry add-ons already)."""
    model, tokenizer = load_model(model_path(params.model, params.workspace))
    model = model.to(resolve_device(params.model.device)).eval()
    options = logging_options(params.model, model, tokenizer)
    return dict(pca_from_examples(model, tokenizer, examples, params.projection, options,
                                  fisher=lm_fisher(params.fisher)))


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
