"""The scan equals brute force: top-k equals a full sort, credit a group-by, means a row average.

Brute force is the old scan's contract: every score computed, lists sorted by score (descending)
then row index (ascending). Two kinds of data:
- small integers with power-of-two row scales: every score, sum and float32 product is exact, so
  results must be equal, exact ties (duplicated rows) included, for any cut into chunks, tiles,
  tasks and query batches;
- Gaussian float32 rows: scores within float32 rounding (1e-5 relative) of float64 brute force and
  the same rows in every list (no near-ties at this seed).
"""

from dataclasses import replace

import numpy as np
import pytest

from scoring.engine import RowsInMemory, ScanOptions, scan_scores
from scoring.topk import decode, encode
from storage import CodecConfig, GradientStore, RowMetadata
from valuation.credit import credit_matrix, summarise

from .test_store_support import MODEL, SPEC, WIDTH

N, K, Q, P, TOP = 1037, 48, 5, 4, 7
EMPTY_PROVIDER = 3  # no row belongs to it: its lists stay empty


def exact_data(seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.integers(-8, 9, (N, K)).astype(np.float32)
    rows[100:110] = rows[90:100]  # exact ties, in one chunk and across chunks
    rows[900:920] = rows[90:110]
    codes = rng.integers(0, P, N)
    codes[codes == EMPTY_PROVIDER] = 0
    queries = rng.integers(-8, 9, (Q, K)).astype(np.float32)
    scale = 2.0 ** rng.integers(-2, 3, N)
    return rows, codes, queries, scale


def brute_force(rows, codes, queries, scale):
    scores = (queries.astype(np.float64) @ rows.astype(np.float64).T) * (1.0 if scale is None else scale)

    def top(columns):
        order = np.argsort(-scores[:, columns], axis=1, kind="stable")[:, :TOP]
        return columns[order], np.take_along_axis(scores[:, columns], order, axis=1)

    return scores, top


def check_equal(result, rows, codes, queries, scale, rtol=0.0):
    scores, top = brute_force(rows, codes, queries, scale)
    top_rows, top_scores = top(np.arange(len(rows)))
    np.testing.assert_array_equal(result.top_rows, top_rows)
    np.testing.assert_allclose(result.top_scores, top_scores, rtol=rtol)
    for p in range(P):
        mine = np.flatnonzero(codes == p)
        if len(mine) == 0:
            assert (result.provider_top_rows[:, p] == -1).all()
            assert np.isneginf(result.provider_top_scores[:, p]).all()
            continue
        p_rows, p_scores = top(mine)
        np.testing.assert_array_equal(result.provider_top_rows[:, p], p_rows)
        np.testing.assert_allclose(result.provider_top_scores[:, p], p_scores, rtol=rtol)
    names, credit = credit_matrix(scores, [f"p{c}" for c in codes])
    present = [int(name[1:]) for name in names]
    np.testing.assert_allclose(result.credit[:, present], credit, rtol=max(rtol, 1e-12))
    assert (result.credit[:, EMPTY_PROVIDER] == 0).all()
    np.testing.assert_allclose(result.row_mean_scores, scores.mean(axis=0), rtol=max(rtol, 1e-12),
                               atol=rtol * np.abs(scores).mean())


@pytest.mark.parametrize("chunk, options", [
    (64, ScanOptions(top_k=TOP, tile_rows=16, task_rows=150, query_batch=2)),  # tasks of 2 chunks, ragged tiles
    (100, ScanOptions(top_k=TOP, tile_rows=37, task_rows=1)),  # one chunk per task
    (N, ScanOptions(top_k=TOP)),  # one chunk, one task
])
def test_scan_equals_brute_force_exactly_for_any_cut(chunk, options):
    rows, codes, queries, scale = exact_data()
    result = scan_scores(RowsInMemory(rows, chunk), codes, P, queries, scale, options)
    check_equal(result, rows, codes, queries, scale)


def test_scan_of_float_rows_is_float32_close():
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((N, K)).astype(np.float32)
    codes = rng.integers(0, P - 1, N)
    queries = rng.standard_normal((Q, K)).astype(np.float32)
    result = scan_scores(RowsInMemory(rows, 128), codes, P, queries, None, ScanOptions(top_k=TOP, tile_rows=50))
    check_equal(result, rows, codes, queries, None, rtol=1e-5)


def test_fewer_rows_than_k_leave_empty_slots():
    rows, codes, queries, _ = exact_data()
    result = scan_scores(RowsInMemory(rows[:3], 2), codes[:3], P, queries, None, ScanOptions(top_k=TOP))
    assert (result.top_rows[:, 3:] == -1).all() and np.isneginf(result.top_scores[:, 3:]).all()
    assert sorted(result.top_rows[0, :3]) == [0, 1, 2]


@pytest.mark.parametrize("precision", ["int8", "float16", "bfloat16"])
def test_scan_of_a_store_equals_brute_force_on_its_decoded_rows(tmp_path, precision):
    rows, codes, queries, scale = exact_data()
    rows, queries = rows[:, :WIDTH], queries[:, :WIDTH]
    store = GradientStore.create(str(tmp_path / "s.zarr"), SPEC, MODEL, CodecConfig(precision=precision),
                                 chunk_rows=64)
    meta = RowMetadata([f"e{i}" for i in range(N)], [f"p{c}" for c in codes], np.full(N, 4))
    store.commit_shard("one", rows, meta, spec=SPEC, model_fingerprint=MODEL)
    stored_codes, names = store.provider_codes()
    result = scan_scores(store.committed_rows(), stored_codes, len(names), queries, scale,
                         ScanOptions(top_k=TOP, tile_rows=48, task_rows=128))
    decoded = store.read_rows()
    mapped = np.array([int(n[1:]) for n in names])[stored_codes]  # store codes follow sorted names
    scores, top = brute_force(decoded, mapped, queries, scale)
    top_rows, top_scores = top(np.arange(N))
    np.testing.assert_array_equal(result.top_rows, top_rows)
    np.testing.assert_allclose(result.top_scores, top_scores, rtol=1e-6)
    _, credit = credit_matrix(scores, [f"p{c}" for c in mapped])
    np.testing.assert_allclose(result.credit, credit, rtol=1e-6, atol=1e-6 * np.abs(credit).max())


@pytest.mark.slow  # a LocalCluster of worker processes
def test_threads_and_distributed_processes_agree_exactly(tmp_path):
    """The same tasks on a LocalCluster of worker processes, reading from memory and from a store."""
    distributed = pytest.importorskip("distributed")
    rows, codes, queries, scale = exact_data()
    rows = rows + np.float32(0.25) * np.random.default_rng(2).standard_normal(rows.shape).astype(np.float32)
    store = GradientStore.create(str(tmp_path / "s.zarr"), SPEC, MODEL, chunk_rows=64)
    meta = RowMetadata([f"e{i}" for i in range(N)], [f"p{c}" for c in codes], np.full(N, 4))
    store.commit_shard("one", rows[:, :WIDTH], meta, spec=SPEC, model_fingerprint=MODEL)
    stored_codes, names = store.provider_codes()
    scans = {
        "memory": (RowsInMemory(rows, 64), codes, P, queries),
        "store": (store.committed_rows(), stored_codes, len(names), queries[:, :WIDTH]),
    }
    options = ScanOptions(top_k=TOP, tile_rows=40, task_rows=256)
    threaded = {name: scan_scores(*args, scale, options) for name, args in scans.items()}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster):
        remote = {name: scan_scores(*args, scale, replace(options, scheduler=None)) for name, args in scans.items()}
    for source in scans:
        for name in ("top_rows", "top_scores", "provider_top_rows", "provider_top_scores", "credit",
                     "row_mean_scores"):
            np.testing.assert_array_equal(getattr(threaded[source], name), getattr(remote[source], name),
                                          err_msg=f"{source}: {name}")


def test_keys_order_by_score_then_row_and_round_trip():
    scores = np.array([1.5, -0.0, 0.0, -2.0, 1.5, np.finfo(np.float32).max, -np.finfo(np.float32).max, 1e-45],
                      dtype=np.float32)
    rows = np.array([7, 3, 2, 0, 5, 9, 1, 4])
    order = np.argsort(encode(scores, rows))
    np.testing.assert_array_equal(order, np.lexsort((rows, -scores.astype(np.float64))))
    back_scores, back_rows = decode(encode(scores, rows))
    np.testing.assert_array_equal(back_scores, scores.astype(np.float64))
    np.testing.assert_array_equal(back_rows, rows)


def test_bad_options_and_empty_stores_are_refused():
    with pytest.raises(ValueError, match="top_k"):
        ScanOptions(top_k=0)
    with pytest.raises(ValueError, match="tile_rows"):
        ScanOptions(tile_rows=1 << 20)
    with pytest.raises(ValueError, match="no rows"):
        scan_scores(RowsInMemory(np.zeros((0, K), np.float32), 8), np.zeros(0, int), 1, np.ones((1, K)))
    rows, codes, queries, scale = exact_data()
    with pytest.raises(ValueError, match="provider_codes"):
        scan_scores(RowsInMemory(rows, 64), codes[:-1], P, queries)
    with pytest.raises(ValueError, match="provider_codes"):
        scan_scores(RowsInMemory(rows, 64), codes, 2, queries)
    with pytest.raises(ValueError, match="row_scale"):
        scan_scores(RowsInMemory(rows, 64), codes, P, queries, scale[:10])


def test_provider_summary_shares_and_band():
    credit = np.array([[3.0, -1.0, 1.0], [1.0, 2.0, -4.0], [2.0, 0.0, 1.0]])
    summary = summarise(credit, ["a", "b", "c"], [10, 5, 1], bootstrap=200)
    by_name = {s.provider: s for s in summary}
    assert by_name["a"].positive_credit == 6.0 and by_name["c"].total_credit == -2.0
    assert sum(s.share for s in summary) == pytest.approx(1.0)
    assert by_name["a"].share == pytest.approx((3 / 4 + 1 / 3 + 2 / 3) / 3)  # each query's share, averaged
    assert (by_name["c"].queries_helped, by_name["c"].queries_hurt) == (2, 1)
    for s in summary:
        assert s.share_low <= s.share <= s.share_high
