"""The one scoring call: Influence(fisher).scores / top_k, with self-influence and ids inside."""

import pytest
import torch

from valuation import FisherPartial, Influence, LoGra, PreconditionedQueries, ProjectionConfig, influence_scores

from .models import lm_batch, tiny_gpt2


@pytest.fixture(scope="module")
def logged():
    with LoGra(tiny_gpt2(), ProjectionConfig(init="random", rank_in=4, rank_out=4)) as logra:
        train = logra.log_batch(lm_batch([12, 9, 5, 11, 7, 12, 3, 8], seed=3))
        queries = logra.log_batch(lm_batch([10, 6], seed=4), ids=["q-a", "q-b"])
    fisher = FisherPartial.zeros(logra.layout).update(train.fisher_rows).snapshot(0.1)
    return fisher, train, queries


@pytest.mark.parametrize("mode", ["dot", "relatif", "cosine"])
def test_scores_equal_the_building_blocks(logged, mode):
    fisher, train, queries = logged
    pre = PreconditionedQueries.build(queries.rows, fisher)
    expected = influence_scores(pre, train.rows, mode, fisher.self_influence(train.rows))
    assert torch.equal(Influence(fisher).scores(queries, train, mode), expected)
    assert torch.equal(Influence(fisher).scores(queries.rows, train.rows, mode), expected)  # plain tensors too


def test_top_k_names_the_training_examples_best_first(logged):
    fisher, train, queries = logged
    influence = Influence(fisher)
    scores = influence.scores(queries, train, "relatif")
    best = influence.top_k(queries, train, k=3, mode="relatif")
    order = scores.argsort(dim=1, descending=True)[:, :3]
    assert torch.equal(best.indices, order)
    assert best.ids == [[train.ids[i] for i in row] for row in order.tolist()]
    assert best.query_ids == ["q-a", "q-b"]
    assert torch.equal(best.scores, scores.gather(1, order))
    assert influence.top_k(queries.rows, train.rows, k=3).ids is None  # rows without ids


def test_rows_of_another_layout_are_refused(logged):
    fisher, train, queries = logged
    with pytest.raises(ValueError, match=r"train rows have shape \(8, 5\); this Fisher's rows are N x 128"):
        Influence(fisher).scores(queries, train.rows[:, :5])
