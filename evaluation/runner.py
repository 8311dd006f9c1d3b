"""Run the counterfactual checks of a task for a list of methods; results as one JSON-able dict."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from tqdm.auto import tqdm

from valuation.credit import credit_matrix
from valuation.stats import spearman

from .brittleness import BrittlenessConfig, run_brittleness
from .lds import LDSConfig, run_lds
from .lopo import LOPOConfig, run_lopo
from .methods import Method, Scorer
from .peers import PeerUnavailableError
from .retrain import OutcomeCache
from .tasks.base import Task

Check = Literal["lds", "brittleness", "lopo"]
CHECKS: tuple[Check, ...] = ("lds", "lopo", "brittleness")


class EvalConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    checks: tuple[Check, ...] = CHECKS
    lds: LDSConfig = LDSConfig()
    lopo: LOPOConfig = LOPOConfig()
    brittleness: BrittlenessConfig = BrittlenessConfig()


def evaluate(
    task: Task,
    methods: Sequence[Method],
    cache: OutcomeCache,
    config: EvalConfig = EvalConfig(),
    brittleness_methods: Sequence[Method] = (),
    stability: tuple[Method, Sequence[int]] | None = None,
) -> dict:
    """Scores of every method, then each check of `config.checks` over them.

    Brittleness runs on `brittleness_methods` (default: all of `methods`), since it retrains per
    method; the other checks share their retrains across methods. A peer that cannot run here
    (a missing extra) is listed under "skipped" with the reason. `stability` (a method and
    projection seeds) adds the agreement of its provider credit across those seeds.
    """
    started = time.perf_counter()
    brittle = (list(brittleness_methods) or list(methods)) if "brittleness" in config.checks else []
    everything = {m.name: m for m in [*methods, *brittle]}
    scorer = Scorer(task)
    scores, skipped = {}, {}
    for name, method in tqdm(everything.items(), desc="scoring methods", leave=False):
        try:
            scores[name] = scorer.scores(method)
        except PeerUnavailableError as err:
            skipped[name] = str(err)
            print(f"dataworth eval: skipping {name}: {err}")
    scored_s = time.perf_counter() - started
    listed = {m.name: scores[m.name] for m in methods if m.name in scores}
    brittle = [m for m in brittle if m.name in scores]
    results: dict = {
        "task": task.name,
        "identity": task.identity,
        "n_train": task.n_train,
        "query_ids": task.query_ids,
        "methods": {name: m.model_dump(mode="json") for name, m in everything.items() if name in scores},
        "skipped": skipped,
    }
    if stability is not None:
        results["stability"] = seed_stability(scorer, task.providers, *stability)
    if "lds" in config.checks:
        results["lds"] = run_lds(listed, cache, task.n_train, config.lds)
    if "lopo" in config.checks:
        results["lopo"] = run_lopo(listed, task.providers, cache, config.lopo)
    if "brittleness" in config.checks:
        chosen = {m.name: scores[m.name] for m in brittle}
        results["brittleness"] = run_brittleness(chosen, cache, task.n_train, task.n_queries, config.brittleness)
    results["run"] = {
        "scoring_s": scored_s,
        "total_s": time.perf_counter() - started,
        "retrains_done": cache.retrained,
        "retrains_reused": cache.reused,
    }
    return results


def seed_stability(scorer: Scorer, providers: Sequence[str], method: Method, seeds: Sequence[int]) -> dict:
    """Spearman of the query x provider credit matrix between every pair of projection seeds (the
    measure `dataworth stability` reports on a store). For PCA init, whose projection has no
    seed, the seeds draw the half of the training data the PCA is fitted on instead; with sampled
    labels each seed also draws its own (Scorer._log)."""
    if method.init == "pca":
        seeds = [s + 1 for s in seeds]  # seed 0 would be all of the data
    credits = {s: credit_matrix(scorer.scores(method.model_copy(update={"seeds": (s,)})), providers)[1] for s in seeds}
    pairs = [spearman(credits[a], credits[b]) for a, b in itertools.combinations(seeds, 2)]
    varies = "calibration half" if method.init == "pca" else "projection seed"
    return {"method": method.name, "seeds": list(seeds), "varies": varies, "labels_redrawn": method.fisher == "true",
            "spearman_mean": float(np.mean(pairs)), "spearman_min": float(np.min(pairs)), "pairs": pairs}
