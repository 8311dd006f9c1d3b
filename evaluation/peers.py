"""The peers a user would pick instead of LoGra, scored on the same task in the same run.

- Lexical: TF-IDF cosine and BM25 between each query and each training document (scikit-learn);
  a provider's credit is the sum over its documents, as for every other method.
- kronfluence's EK-FAC influence (Grosse et al. 2023) with its default damping heuristic
  (damping_factor=None: 0.1 x the mean eigenvalue), the true Fisher from sampled labels, on the
  same modules LoGra tracks. kronfluence tracks nn.Linear only, so transformers' Conv1D layers are
  swapped for equal nn.Linear layers in a copy of the model first.

These need the `eval` extra (`pip install 'dataworth[eval]'`); without it a peer is reported as
skipped with the reason, never silently dropped.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
from torch import nn

from valuation.data import collate
from valuation.objectives import Batch, Objective, example_generator
from valuation.targets import module_dims, module_kind

EXTRA = "pip install 'dataworth[eval]'"


class PeerUnavailableError(RuntimeError):
    """A peer cannot run here (a missing optional package, or a task without the data it needs)."""


def _sklearn_text():
    try:
        from sklearn.feature_extraction import text
    except ImportError:
        raise PeerUnavailableError(f"scikit-learn is not installed ({EXTRA})") from None
    return text


def tfidf_scores(train_texts: Sequence[str], query_texts: Sequence[str]) -> np.ndarray:
    """Cosine of sublinear TF-IDF vectors (vocabulary and idf from the training documents)."""
    vectorizer = _sklearn_text().TfidfVectorizer(sublinear_tf=True)
    train = vectorizer.fit_transform(train_texts)
    return (vectorizer.transform(query_texts) @ train.T).toarray().astype(np.float64)


def bm25_scores(train_texts: Sequence[str], query_texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Okapi BM25 of each training document for each query (query terms counted with repeats)."""
    import scipy.sparse as sparse

    vectorizer = _sklearn_text().CountVectorizer()
    counts = vectorizer.fit_transform(train_texts).tocoo().astype(np.float64)
    n_docs = counts.shape[0]
    df = np.bincount(counts.col, minlength=counts.shape[1])
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    length = np.asarray(counts.sum(axis=1)).ravel()
    tf = counts.data
    weight = tf * (k1 + 1) / (tf + k1 * (1 - b + b * length[counts.row] / length.mean())) * idf[counts.col]
    weights = sparse.csr_matrix((weight, (counts.row, counts.col)), shape=counts.shape)
    return (vectorizer.transform(query_texts).astype(np.float64) @ weights.T).toarray()


def with_linear_layers(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """A copy of `model` whose Conv1D modules in `names` are nn.Linear with the same function."""
    model = copy.deepcopy(model)
    for name in names:
        module = model.get_submodule(name)
        if module_kind(module) != "conv1d":
            continue
        d_in, d_out = module_dims(module)
        linear = nn.Linear(d_in, d_out, bias=module.bias is not None, dtype=module.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(cast(torch.Tensor, module.weight).T)
            if module.bias is not None:
                linear.bias.copy_(cast(torch.Tensor, module.bias))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, linear)
    return model


def _single_examples(batches: Sequence[Batch]) -> list[dict]:
    """Each example of the batches as its own dict of unbatched values."""
    out = []
    for batch in batches:
        size = len(batch["example_ids"])
        out += [{k: v[i] for k, v in batch.items()} for i in range(size)]
    return out


def _restack(items: list[dict]) -> dict:
    """Inverse of `_single_examples` for a list of examples (LM examples are re-padded)."""
    if "input_ids" in items[0]:
        from valuation.data import EncodedExample

        encoded = []
        for item in items:
            n = int(item["attention_mask"].sum())
            encoded.append(EncodedExample(item["example_ids"], item["input_ids"][:n].tolist(),
                                          item["labels"][:n].tolist()))
        return collate(encoded, pad_id=0)
    return {k: (torch.stack([i[k] for i in items]) if isinstance(items[0][k], torch.Tensor) else [i[k] for i in items])
            for k in items[0]}


def ekfac_scores(
    model: nn.Module, objective: Objective, module_names: Sequence[str], train_batches: Sequence[Batch],
    query_batches: Sequence[Batch], batch_size: int = 16,
) -> np.ndarray:
    """kronfluence EK-FAC pairwise scores, queries x train; positive = the example lowered the
    query's loss (kronfluence's sign)."""
    try:
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments, ScoreArguments
        from kronfluence.task import Task as KronfluenceTask
        from kronfluence.utils.dataset import DataLoaderKwargs
    except ImportError:
        raise PeerUnavailableError(f"kronfluence is not installed ({EXTRA})") from None

    class _Task(KronfluenceTask):
        def compute_train_loss(self, batch, model, sample=False):
            outputs = objective.forward(model, batch)
            if not sample:
                return objective.losses(outputs, batch).sum()
            gens = [example_generator(0, i, outputs.device) for i in batch["example_ids"]]
            return objective.sampled_losses(outputs, batch, gens).sum()

        def compute_measurement(self, batch, model):
            return objective.losses(objective.forward(model, batch), batch).sum()

        def get_influence_tracked_modules(self):
            return list(module_names)

        def get_attention_mask(self, batch):
            return objective.attention_mask(batch)

    task = _Task()
    prepared = prepare_model(with_linear_layers(model, module_names), task)
    train, queries = _single_examples(train_batches), _single_examples(query_batches)
    restack: Callable = _restack
    with tempfile.TemporaryDirectory(prefix="dataworth-ekfac-") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's GradScaler deprecation, on every call
        analyzer = Analyzer("peer", prepared, task, cpu=True, disable_tqdm=True, output_dir=out,
                            log_level=logging.WARNING)
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=restack))
        factors = FactorArguments(strategy="ekfac")
        analyzer.fit_all_factors("factors", train, per_device_batch_size=batch_size, factor_args=factors,
                                 overwrite_output_dir=True)
        analyzer.compute_pairwise_scores(
            "scores", "factors", queries, train, per_device_query_batch_size=batch_size,
            per_device_train_batch_size=batch_size, score_args=ScoreArguments(damping_factor=None),
            overwrite_output_dir=True,
        )
        scores = analyzer.load_pairwise_scores("scores")["all_modules"]
    return scores.to(torch.float64).numpy()
