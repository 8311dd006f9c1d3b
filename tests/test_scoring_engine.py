"""The Dask scan equals brute force: top-k equals a full sort, credit equals a group-by.

Synthetic float32 rows; scores are computed in float64 on both sides, so agreement is exact up
to summation order (1e-9 relative).
"""

import dask.array as da
import numpy as np
import pytest

from scoring.engine import scan_scores
from valuation.credit import credit_matrix, summarise

N, K, Q, P, TOP = 1037, 48, 5, 4, 7


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((N, K)).astype(np.float32)
    rows[100:110] = rows[90:100]  # exact ties: broken by the smaller row index everywhere
    codes = rng.integers(0, P, N)
    queries = rng.standard_normal((Q, K))
    scale = rng.uniform(0.5, 2.0, N)
    scores = (queries @ rows.astype(np.float64).T) * scale
    return rows, codes, queries, scale, scores


def brute_top(scores, columns):
    order = np.argsort(-scores[:, columns], axis=1, kind="stable")[:, :TOP]
    return columns[order]


@pytest.mark.parametrize("chunk", [64, 100, N])
def test_scan_equals_full_sort_and_group_by(data, chunk):
    rows, codes, queries, scale, scores = data
    result = scan_scores(da.from_array(rows, chunks=(chunk, K)), codes, P, queries,
                         k=TOP, row_scale=scale, dtype=np.float64)
    np.testing.assert_array_equal(result.top_rows, brute_top(scores, np.arange(N)))
    for p in range(P):
        mine = np.flatnonzero(codes == p)
        np.testing.assert_array_equal(result.provider_top_rows[:, p], brute_top(scores, mine))
    names, credit = credit_matrix(scores, [f"p{c}" for c in codes])
    np.testing.assert_allclose(result.credit, credit, rtol=1e-9)
    np.testing.assert_allclose(result.row_mean_scores, scores.mean(axis=0), rtol=1e-9)


def test_threaded_and_distributed_agree(data):
    distributed = pytest.importorskip("distributed")
    rows, codes, queries, scale, _ = data
    array = da.from_array(rows, chunks=(200, K))
    threaded = scan_scores(array, codes, P, queries, k=TOP, row_scale=scale)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        remote = scan_scores(array, codes, P, queries, k=TOP, row_scale=scale, scheduler=None)
    np.testing.assert_array_equal(threaded.top_rows, remote.top_rows)
    np.testing.assert_array_equal(threaded.credit, remote.credit)


def test_provider_summary_shares_and_band():
    credit = np.array([[3.0, -1.0, 1.0], [1.0, 2.0, -4.0], [2.0, 0.0, 1.0]])
    summary = summarise(credit, ["a", "b", "c"], [10, 5, 1], bootstrap=200)
    by_name = {s.provider: s for s in summary}
    assert by_name["a"].positive_credit == 6.0 and by_name["c"].total_credit == -2.0
    assert sum(s.share for s in summary) == pytest.approx(1.0)
    assert by_name["a"].share == pytest.approx(0.6)
    for s in summary:
        assert s.share_low <= s.share <= s.share_high
