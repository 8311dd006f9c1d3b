"""Settings that an existing store fixes: a run asking for others is refused, not silently ignored.

A store's rows are logged under one projection, its Fisher partials summed under one estimator,
and its examples tokenised with one set of special tokens (BOS/EOS), so none can change once rows
exist: rows under another projection or tokenised otherwise cannot be compared with them, and
Fisher sums of two estimators do not add up. A run whose parameters ask for other values (an edit
in the UI form, a CLI flag) would otherwise complete with the store's own settings and say nothing.
"""

from __future__ import annotations

from storage import GradientStore
from storage.schema import fisher_identity
from valuation.data import SpecialTokens, resolve_special_tokens

from .models import lm_fisher, load_tokenizer, model_path
from .params import IngestParams, ModelParams, NightlyParams, Workspace


def _differences(mine: dict, theirs: dict) -> list[str]:
    return [f"{key} {mine.get(key)!r} (asked {theirs.get(key)!r})"
            for key in sorted(mine.keys() | theirs.keys()) if mine.get(key) != theirs.get(key)]


def store_special_tokens(store: GradientStore) -> SpecialTokens:
    """The BOS/EOS setting the store's rows were tokenised with (the tokenizer's own, "auto", for a
    store made before it was recorded)."""
    stored = store.attributes.encoding
    return SpecialTokens(bos=stored["bos"], eos=stored["eos"]) if stored else SpecialTokens()


def special_token_changes(store: GradientStore, model: ModelParams, workspace: Workspace) -> list[str]:
    """How the special tokens `model.bos`/`model.eos` resolve to differ from those of the store's
    rows: none when the settings are the store's, or resolve to the same tokens (a tokenizer that
    adds a BOS itself gives the same rows under "auto" and "add"). Raises a one-line ValueError when
    the setting cannot be resolved (no such token, no such model)."""
    stored, made, asked = store.attributes.encoding, store_special_tokens(store), model.special_tokens
    if asked == made:  # same setting, same model: the same tokens, without loading the tokenizer
        return []
    tokenizer = load_tokenizer(model_path(model, workspace))
    mine = stored["special_tokens"] if stored else resolve_special_tokens(tokenizer, made).names(tokenizer)
    tokens = _differences(mine, resolve_special_tokens(tokenizer, asked).names(tokenizer))
    if not tokens:
        return []
    return [f"model.{d}" for d in _differences(made.model_dump(), asked.model_dump())] + tokens


def settings_conflict(store: GradientStore, params: IngestParams | NightlyParams) -> str | None:
    """Why the run's projection, Fisher estimator and special tokens cannot apply to `store`, in
    one line, or None when they match it."""
    changed = [f"projection.{d}" for d in _differences(store.spec.config.model_dump(mode="json"),
                                                        params.projection.model_dump(mode="json"))]
    changed += [f"fisher.{d}" for d in _differences(fisher_identity(store.attributes.fisher),
                                                     fisher_identity(lm_fisher(params.fisher)))]
    try:
        changed += special_token_changes(store, params.model, params.workspace)
    except ValueError as err:
        return f"model.bos/model.eos for the store {store.url}: {err}"
    if not changed:
        return None
    return (f"the store {store.url} was made with {', '.join(changed)}: an existing store keeps the projection, "
            "Fisher estimator and special tokens it was made with: give a new workspace (workspace.root) for "
            "these settings, or set them back to keep this store")


def query_encoding_conflict(store: GradientStore, model: ModelParams, workspace: Workspace) -> str | None:
    """Why queries tokenised with `model`'s special tokens cannot be scored against `store`'s rows,
    in one line, or None (scoring takes the projection and Fisher from the store)."""
    try:
        changed = special_token_changes(store, model, workspace)
    except ValueError as err:
        return f"model.bos/model.eos for the store {store.url}: {err}"
    if not changed:
        return None
    return (f"the store {store.url} was made with {', '.join(changed)}: queries are tokenised as its rows "
            "were: set model.bos/model.eos back to score against this store")
