"""The evaluation's real-data parts on tiny versions: the Jane Austen corpus reader and task, the
breast-cancer task, the lexical and kronfluence peers, and LOPO's noise ceiling and intervals.

The full runs (docs/evaluation.md) take tens of minutes; these check the plumbing in seconds.
A part whose package is missing here is skipped with the reason.
"""

import numpy as np
import pytest

from evaluation import OutcomeCache
from evaluation.corpora import CorpusUnavailableError, austen_novels, paragraphs
from evaluation.lopo import LOPOConfig, bootstrap_interval, noise_ceiling, run_lopo
from evaluation.methods import Method, Scorer
from evaluation.peers import PeerUnavailableError, bm25_scores, tfidf_scores
from sample.model import SampleModelConfig


def _austen_or_skip():
    pytest.importorskip("rdata", reason="rdata is not installed (pip install 'dataworth[eval]')")
    try:
        return austen_novels()
    except CorpusUnavailableError as err:
        pytest.skip(str(err))


def test_austen_corpus_has_six_novels_of_paragraphs():
    novels = _austen_or_skip()
    assert sorted(novels) == ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
                              "sensesensibility"]
    emma = paragraphs(novels["emma"])
    assert len(emma) > 2000 and emma[0] == "EMMA"
    assert not any(p.lower().startswith("chapter") for p in emma)


def test_missing_corpus_says_which_package(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAWORTH_JANEAUSTENR", str(tmp_path))
    with pytest.raises(CorpusUnavailableError, match="apt-get install r-cran-janeaustenr"):
        austen_novels()


@pytest.mark.slow
def test_masked_retrain_of_the_austen_task_and_its_noise_ceiling():
    _austen_or_skip()
    from evaluation.tasks import AustenTaskConfig, austen_task

    tiny = SampleModelConfig(vocab_size=300, n_positions=64, max_length=64, n_embd=16, n_layer=1, n_head=2,
                             train_steps=4, batch_size=8)
    config = AustenTaskConfig(novel_sizes={"emma": 6, "persuasion": 4, "northangerabbey": 4}, queries_per_novel=1,
                              base=tiny, fine_tune=tiny.model_copy(update={"train_steps": 3, "lr": 1e-3}))
    task = austen_task(config)
    everyone = np.arange(task.n_train)
    # Masking nobody reproduces the scored model's training exactly.
    np.testing.assert_array_equal(task.retrain(everyone, 0), task.retrain(everyone, 0))
    scores = {m.name: Scorer(task).scores(m) for m in [Method(rank=4, fisher="true", samples=2, mode="dot")]}
    scores["tfidf"] = tfidf_scores(task.train_texts, task.query_texts)
    result = run_lopo(scores, task.providers, OutcomeCache(task.retrain, task.n_queries, {}), LOPOConfig(retrains=2))
    assert np.asarray(result["per_seed"]).shape == (2, 3, 3)
    assert -1 <= result["noise_ceiling"]["spearman"] <= 1
    for stats in result["methods"].values():
        assert stats["ci_low"] <= stats["spearman"] <= stats["ci_high"]


@pytest.mark.slow
def test_breast_cancer_task_and_the_ekfac_peer():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'dataworth[eval]')")
    from evaluation.tasks import BreastCancerTaskConfig, breast_cancer_task

    task = breast_cancer_task(BreastCancerTaskConfig(queries=10, max_iter=30))
    assert task.n_train == 559 and task.n_queries == 10
    scorer = Scorer(task)
    chosen = scorer.scores(Method(rank=4, fisher="exact", mode="dot"))
    assert chosen.shape == (10, 559) and np.isfinite(chosen).all()
    try:
        ekfac = scorer.scores(Method(gradients="ekfac"))
    except PeerUnavailableError as err:
        pytest.skip(str(err))
    # Both say the same examples help: a shared sign on most pairs.
    assert np.mean(np.sign(ekfac) == np.sign(chosen)) > 0.7


def test_lexical_peers_rank_the_matching_document_first():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'dataworth[eval]')")
    train = ["the cat sat on the mat", "a dog ran in the park", "stocks fell on monday"]
    queries = ["my cat sat", "markets and stocks"]
    for scores in (tfidf_scores(train, queries), bm25_scores(train, queries)):
        assert scores.shape == (2, 3)
        assert scores.argmax(axis=1).tolist() == [0, 2]


def test_noise_ceiling_is_one_for_identical_seeds_and_low_for_noise():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(12, 5))
    assert noise_ceiling(np.stack([signal, signal, signal]))["spearman"] == pytest.approx(1.0)
    assert abs(noise_ceiling(rng.normal(size=(3, 40, 5)))["spearman"]) < 0.2
    assert noise_ceiling(signal[None]) is None
    low, high = bootstrap_interval(np.array([0.2, 0.4, 0.6, 0.8]), 500)
    assert 0.2 <= low < 0.5 < high <= 0.8


def test_masked_fine_tune_replays_the_same_batches():
    import torch

    from sample.model import build_gpt2, fit_gpt2
    from valuation.data import EncodedExample

    config = SampleModelConfig(vocab_size=300, n_positions=16, max_length=16, n_embd=8, n_layer=1, n_head=2,
                               train_steps=3, batch_size=2)
    encoded = [EncodedExample(str(i), [i, i + 1, i + 2, 7], [i, i + 1, i + 2, 7]) for i in range(5)]

    def weights(keep):
        model = fit_gpt2(build_gpt2(config.shape(300), seed=0), encoded, 0, config, seed=1, keep=keep)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(None), weights([True] * 5))
    assert not torch.equal(weights(None), weights([True, True, False, True, True]))


def test_pca_stability_varies_the_calibration_half():
    from evaluation.methods import half_of
    from evaluation.runner import seed_stability
    from evaluation.tasks import classification_task

    task = classification_task()
    half = half_of(task.train_batches, task.n_train, seed=1)
    assert sum(len(b["example_ids"]) for b in half) == task.n_train // 2
    other = half_of(task.train_batches, task.n_train, seed=2)
    assert [b["example_ids"] for b in half] != [b["example_ids"] for b in other]
    result = seed_stability(Scorer(task), task.providers, Method(rank=4, init="pca", fisher="exact", mode="dot"),
                            (0, 1, 2))
    assert result["varies"] == "calibration half" and result["seeds"] == [1, 2, 3]
    assert -1 <= result["spearman_min"] <= result["spearman_mean"] <= 1
