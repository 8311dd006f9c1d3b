"""Counterfactual checks (LDS, brittleness, leave-one-provider-out) against known answers.

The known answer: a model whose optimum is linear in the data weights. With per-example loss
-theta . x_n and weight decay c/2 |theta|^2, training on a subset S gives theta = sum_{n in S} x_n / c,
so the query loss -x_q . theta is exactly minus the sum over S of the influence x_q . x_n / c:
LDS is 1, removing the top-k raises the loss by exactly their summed score, and a provider's
credit is exactly what leaving it out costs.
"""

import argparse
import json
import sys

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from evaluation import (
    BrittlenessConfig,
    CommandRetrain,
    LDSConfig,
    LOPOConfig,
    Method,
    OutcomeCache,
    RetrainError,
    Scorer,
    lds_subsets,
    run_brittleness,
    run_lds,
    run_lopo,
    spearman,
    spearman_columns,
)
from evaluation.gradients import exact_influence
from evaluation.methods import with_embeddings
from evaluation.suite import PLANS, all_methods, headline_methods
from evaluation.tasks import Task
from flows.eval_cli import add_eval_arguments, run_eval
from valuation import ProjectionConfig
from valuation.objectives import ClassificationObjective
from valuation.targets import select_modules

from .models import classification_batch, tiny_gpt2, tiny_mlp

N, D, Q, DECAY = 30, 5, 4, 2.0
PROVIDERS = [f"p{i % 3}" for i in range(N)]


def linear_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, D)), rng.normal(size=(Q, D))


def linear_retrain(train_indices, seed):
    x, xq = linear_data()
    theta = x[np.asarray(train_indices)].sum(axis=0) / DECAY
    return -xq @ theta


def linear_scores():
    x, xq = linear_data()
    return xq @ x.T / DECAY


def cache(tmp_path=None, retrain=linear_retrain, identity=None):
    path = None if tmp_path is None else tmp_path / "checkpoint.json"
    return OutcomeCache(retrain, Q, identity or {"task": "linear"}, path)


# --- rank statistics ------------------------------------------------------------------------


def test_spearman_matches_scipy_with_ties_and_is_nan_for_constants():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=(40, 6)).astype(float)  # many ties
    b = a + rng.normal(scale=2.0, size=a.shape)
    b[:, 2] = rng.integers(0, 3, size=40)
    expected = [spearmanr(a[:, j], b[:, j]).statistic for j in range(6)]
    np.testing.assert_allclose(spearman_columns(a, b), expected, rtol=1e-12)
    assert spearman(a[:, 0], b[:, 0]) == pytest.approx(expected[0], rel=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5)))


# --- known answers on the linear model --------------------------------------------------------


def test_lds_is_one_where_the_model_is_linear_in_the_data_weights():
    scores = linear_scores()
    noise = np.random.default_rng(2).normal(scale=scores.std() * 2, size=scores.shape)
    config = LDSConfig(subsets=20)
    result = run_lds({"exact": scores, "noisy": scores + noise, "negated": -scores}, cache(), N, config)
    methods = result["methods"]
    np.testing.assert_allclose(methods["exact"]["per_query"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(methods["negated"]["per_query"], -1.0, rtol=1e-12)
    assert 0 < methods["noisy"]["lds"] < 0.95


def test_lds_subsets_are_reproducible_halves():
    masks = lds_subsets(N, LDSConfig(subsets=8, seed=3))
    assert masks.shape == (8, N) and (masks.sum(axis=1) == N // 2).all()
    assert (masks == lds_subsets(N, LDSConfig(subsets=8, seed=3))).all()
    assert not (masks == lds_subsets(N, LDSConfig(subsets=8, seed=4))).all()


def test_brittleness_rise_is_the_removed_scores_and_beats_random():
    scores = linear_scores()
    config = BrittlenessConfig(top_k=5, queries=Q)
    result = run_brittleness({"exact": scores, "worst": -scores}, cache(), N, Q, config)
    top = np.sort(scores, axis=1)[:, ::-1][:, :5].sum(axis=1)
    np.testing.assert_allclose(result["methods"]["exact"]["per_query"], top, rtol=1e-10)
    assert result["methods"]["exact"]["beats_random"] == 1.0
    assert result["methods"]["worst"]["beats_random"] == 0.0  # removing the most harmful lowers the loss


def test_leave_one_provider_out_credit_is_the_actual_effect():
    scores = linear_scores()
    result = run_lopo({"exact": scores}, PROVIDERS, cache(), LOPOConfig())
    exact = result["methods"]["exact"]
    assert exact["spearman"] == pytest.approx(1.0) and exact["top1"] == 1.0
    assert exact["spearman_pooled"] == pytest.approx(1.0)
    groups = np.array([int(p[1]) for p in PROVIDERS])
    actual = np.stack([scores[:, groups == g].sum(axis=1) for g in range(3)], axis=1)
    np.testing.assert_allclose(result["actual"], actual, rtol=1e-10)


# --- checkpoint and retrain command ------------------------------------------------------------


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    calls = []

    def crashing_retrain(indices, seed):
        if len(calls) == 7:
            raise KeyboardInterrupt  # the run is killed mid-way
        calls.append(seed)
        return linear_retrain(indices, seed)

    config = LDSConfig(subsets=6, retrains=2)
    with pytest.raises(KeyboardInterrupt):
        run_lds({"exact": linear_scores()}, cache(tmp_path, crashing_retrain), N, config)
    assert len(calls) == 7

    resumed = cache(tmp_path, crashing_retrain)
    assert len(resumed.outcomes) == 7
    calls.clear()
    result = run_lds({"exact": linear_scores()}, resumed, N, config)
    assert (resumed.retrained, resumed.reused, len(calls)) == (5, 7, 5)
    assert result == run_lds({"exact": linear_scores()}, cache(), N, config)

    with pytest.raises(ValueError, match="another task"):
        cache(tmp_path, identity={"task": "something else"})


def test_retrain_command_gives_what_the_callable_gives(tmp_path):
    script = tmp_path / "retrain.py"  # the linear model again, as a user's own training script
    script.write_text(
        "import json, sys\n"
        "import numpy as np\n"
        f"rng = np.random.default_rng(0)\n"
        f"x, xq = rng.normal(size=({N}, {D})), rng.normal(size=({Q}, {D}))\n"
        "indices = json.load(open(sys.argv[1]))\n"
        f"losses = -xq @ (x[indices].sum(axis=0) / {DECAY})\n"
        "json.dump(losses.tolist(), open(sys.argv[3], 'w'))\n"
    )
    command = CommandRetrain(f"{sys.executable} {script} {{indices}} {{seed}} {{output}}")
    config = LOPOConfig()
    by_command = run_lopo({"exact": linear_scores()}, PROVIDERS, cache(retrain=command), config)
    assert by_command == run_lopo({"exact": linear_scores()}, PROVIDERS, cache(), config)


def test_retrain_command_failures_are_reported(tmp_path):
    with pytest.raises(ValueError, match="{output}"):
        CommandRetrain("train --indices {indices}")
    failing = CommandRetrain(f"{sys.executable} -c 'import sys; sys.exit(\"no GPU\")' {{indices}} {{output}}")
    with pytest.raises(RetrainError, match="no GPU"):
        failing(np.arange(3), 0)
    short = CommandRetrain("echo '[1.0]' > {output} # {indices}")
    with pytest.raises(RetrainError, match="one loss per query"):
        cache(retrain=short).losses(np.arange(3), 0)


# --- methods on a real model -------------------------------------------------------------------


def tiny_task():
    model = tiny_mlp(dims=(4, 3, 2))
    train = {**classification_batch(24, d_in=4, seed=11), "example_ids": [f"t{i}" for i in range(24)]}
    queries = {**classification_batch(3, d_in=4, seed=12), "example_ids": ["q0", "q1", "q2"]}
    return Task("tiny", model, ClassificationObjective(), [train], [queries], ["a"] * 12 + ["b"] * 12,
                ["q0", "q1", "q2"], retrain=linear_retrain, projection=ProjectionConfig())


def test_exact_influence_equals_a_direct_solve():
    gen = torch.Generator().manual_seed(0)
    train = {"m": torch.randn(12, 20, generator=gen, dtype=torch.float64)}
    queries = {"m": torch.randn(3, 20, generator=gen, dtype=torch.float64)}
    dot, self_influence = exact_influence(train, queries, damping=0.3)
    g = train["m"]
    fisher = g.T @ g / 12
    h = fisher + 0.3 * torch.trace(fisher) / 20 * torch.eye(20, dtype=torch.float64)
    assert torch.allclose(dot, queries["m"] @ torch.linalg.solve(h, g.T), rtol=1e-10)
    assert torch.allclose(self_influence, (g * torch.linalg.solve(h, g.T).T).sum(1), rtol=1e-10)


@pytest.mark.parametrize("mode", ["dot", "relatif"])
def test_full_rank_pca_logra_scores_equal_exact_scores(mode):
    scorer = Scorer(tiny_task())
    exact = scorer.scores(Method(gradients="full", mode=mode))
    logra = scorer.scores(Method(init="pca", rank=4, mode=mode))
    np.testing.assert_allclose(logra, exact, rtol=1e-8, atol=1e-12 * np.abs(exact).max())


def test_method_names_and_invalid_combinations():
    assert Method().name == "logra-random-r16-a0.1-relatif"
    assert Method(rank=8, seeds=(0, 1, 2, 3), fisher="true").name == "logra-random-r8x4-true-a0.1-relatif"
    assert Method(gradients="full", fisher="none", mode="dot").name == "grad-dot"
    assert Method(gradients="dense", damping=1, mode="dot").name == "dense-r16-a1-dot"
    assert Method(fisher="true", samples=4, mode="dot").name == "logra-random-r16-true4-a0.1-dot"
    assert Method(gradients="full", fisher="exact", mode="dot").name == "exact-exact-a0.1-dot"
    assert Method(gradients="full", fisher="none", mode="cosine").name == "grad-cosine"
    assert Method(gradients="ekfac").name == "ekfac"
    shipped = Method(init="pca", fisher="true", samples=4, mode="dot")
    assert shipped.model_copy(update={"embeddings": "head"}).name == "logra-pca-r16-true4-a0.1-dot-head"
    assert shipped.model_copy(update={"embeddings": "both"}).name == "logra-pca-r16-true4-a0.1-dot-head-emb"
    for bad in ({"fisher": "none"}, {"samples": 4}, {"gradients": "full", "mode": "cosine"},
                {"init": "pca", "seeds": (0, 1)}, {"gradients": "dense", "embeddings": "head"}):
        with pytest.raises(ValueError):
            Method(**bad)


def test_head_variants_add_the_tied_head_and_embedding_to_the_shipped_selection():
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: one weight, two uses
    body = set(select_modules(model, ProjectionConfig()))
    head = set(select_modules(model, with_embeddings(ProjectionConfig(), model, "head")))
    both = set(select_modules(model, with_embeddings(ProjectionConfig(), model, "both")))
    assert (head - body, both - body) == ({"lm_head"}, {"lm_head", "transformer.wte"})
    assert with_embeddings(ProjectionConfig(), model, "none") == ProjectionConfig()
    with pytest.raises(ValueError, match="no LM head"):
        with_embeddings(ProjectionConfig(), tiny_mlp(), "head")
    names = {m.name for m in headline_methods(PLANS["austen"])}
    assert {"logra-pca-r16-true8-a0.1-dot-head", "logra-pca-r16-true8-a0.1-dot-head-emb"} <= names
    assert "logra-pca-r16-true4-a0.1-dot" in names  # half the shipped sampled labels, beside them
    assert not any(n.endswith("-head") for n in (m.name for m in all_methods(PLANS["breast-cancer"])))


# --- the command ------------------------------------------------------------------------------


def test_eval_command_on_the_classification_task_writes_and_resumes(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    argv = ["--task", "classification", "--check", "lopo", "lds", "--subsets", "4", "--retrains", "1",
            "--methods", "exact-a0.1-*", "grad-dot", "logra-random-r4-a0.1-relatif", "--out", str(tmp_path),
            "--stability-seeds", "2", "--stability-method", "logra-random-r4-true-a0.1-dot"]
    assert run_eval(parser.parse_args(argv)) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    stability = results["stability"]
    assert (stability["method"], stability["seeds"], stability["labels_redrawn"]) == (
        "logra-random-r4-true-a0.1-dot", [0, 1], True)
    assert "projection seeds and the sampled labels [0, 1]" in (tmp_path / "results.md").read_text()
    assert set(results["lopo"]["methods"]) == {"exact-a0.1-dot", "exact-a0.1-relatif", "grad-dot",
                                               "logra-random-r4-a0.1-relatif"}
    assert results["run"]["retrains_done"] == 4 + 7  # subsets, then everyone and six providers left out
    assert "| `grad-dot` |" in (tmp_path / "results.md").read_text()

    assert run_eval(parser.parse_args(argv)) == 0  # everything comes from the checkpoint
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["run"]["retrains_done"] == 0
    assert again["lds"] == results["lds"] and again["lopo"] == results["lopo"]
    assert "resuming: 11 retrains" in capsys.readouterr().out

    unknown = [*argv[:-1], "logra-r4-dot"]
    with pytest.raises(SystemExit, match="no method is named logra-r4-dot; names look like"):
        run_eval(parser.parse_args(unknown))


@pytest.mark.slow
def test_language_model_task_retrains_its_own_model_and_runs_the_checks(tmp_path):
    from evaluation import EvalConfig, evaluate
    from evaluation.tasks import LMTaskConfig, language_model_task
    from evaluation.tasks.language_model import EVAL_MODEL

    task = language_model_task(LMTaskConfig(model=EVAL_MODEL.model_copy(update={"train_steps": 4})))
    assert (task.n_train, task.n_queries, len(set(task.providers))) == (280, 12, 6)
    everyone = np.arange(task.n_train)
    with torch.no_grad():
        own = torch.cat([task.objective.losses(task.objective.forward(task.model, b), b) for b in task.query_batches])
    np.testing.assert_array_equal(task.retrain(everyone, 0), own.numpy())  # the Task contract

    outcomes = OutcomeCache(task.retrain, task.n_queries, task.identity, tmp_path / "checkpoint.json")
    config = EvalConfig(lds=LDSConfig(subsets=3), brittleness=BrittlenessConfig(queries=1, top_k=5))
    methods = [Method(rank=4), Method(gradients="full", fisher="none", mode="dot")]
    results = evaluate(task, methods, outcomes, config)
    assert set(results["lds"]["methods"]) == set(results["lopo"]["methods"]) == {m.name for m in methods}
    assert results["lopo"]["providers"] == sorted(set(task.providers))
    assert results["run"]["retrains_done"] == 3 + 7 + 3  # subsets; everyone + 6 providers; 2 methods + random
