"""Scoring from a real Zarr store equals the in-memory core, and provider credit from stored sums
equals the row-by-row sum.

Tolerances: against the core on the same decoded rows, 1e-5 relative (the scan multiplies in
float32); against the original float32 rows under the bfloat16 codec, Spearman > 0.999 (codec
error); credit from sums vs per-row sums, 1e-9 relative (both float64).
"""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from scoring.engine import ScanOptions, scan_scores
from scoring.normalization import normalize_rows
from scoring.queries import provider_sum_matrix, scoring_queries
from storage import CodecConfig, GradientStore, RowMetadata
from valuation import LoGra, PreconditionedQueries, ProjectionConfig, influence_scores
from valuation.credit import credit_matrix

from .models import lm_batch, tiny_gpt2

PROVIDERS = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def scored_store(request, tmp_path_factory):
    model = tiny_gpt2(dtype=torch.float32)
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4))
    url = str(tmp_path_factory.mktemp("store") / f"{request.param}.zarr")
    store = GradientStore.create(url, logra.spec, {"fingerprint": "tiny"}, CodecConfig(precision=request.param),
                                 chunk_rows=16)
    original = []
    for shard in range(3):
        rows = torch.cat([logra.log_batch(lm_batch([12, 9, 5, 11, 7, 12], seed=10 * shard + b)).rows
                          for b in range(4)]).numpy()
        n = len(rows)
        meta = RowMetadata([f"s{shard}-{i}" for i in range(n)], [PROVIDERS[(i + shard) % 3] for i in range(n)],
                           np.full(n, 10))
        store.commit_shard(f"shard{shard}", rows, meta, spec=logra.spec, model_fingerprint={"fingerprint": "tiny"})
        original.append(rows)
    queries = logra.log_batch(lm_batch([12, 6, 9], seed=99)).rows
    store.refresh()
    snapshot = store.fisher_partial().snapshot(0.1)
    version = store.save_snapshot(snapshot, [e.shard_hash for e in store.manifest])
    norm = normalize_rows(store, snapshot)
    store.save_self_influence(version, norm.self_influence, norm.provider_sums)
    return store, np.concatenate(original), queries, store.load_snapshot(version)


@pytest.mark.parametrize("mode", ["dot", "relatif", "cosine"])
def test_store_scores_equal_core_scores_and_sums_equal_row_sums(scored_store, mode):
    store, original, queries, stored = scored_store
    decoded = torch.from_numpy(store.read_rows())
    pre = PreconditionedQueries.build(queries, stored.fisher)
    self_inf = stored.fisher.self_influence(decoded)
    core = influence_scores(pre, decoded, mode, self_inf).numpy()

    codes, names = store.provider_codes()
    scale = None if mode == "dot" else (1 / np.sqrt(store.self_influence(stored.version)))
    query_rows = scoring_queries(queries, stored, mode)
    scan = scan_scores(store.committed_rows(), codes, len(names), query_rows, scale, ScanOptions(top_k=5))
    np.testing.assert_allclose(scan.top_scores, np.sort(core, axis=1)[:, ::-1][:, :5], rtol=1e-5)

    _, by_rows = credit_matrix(core, store.read_metadata().providers)
    from_sums = query_rows @ provider_sum_matrix(store, stored, mode, names).T
    np.testing.assert_allclose(from_sums, by_rows, rtol=1e-9, atol=1e-9 * np.abs(by_rows).max())

    exact = influence_scores(pre, torch.from_numpy(original), mode,
                             stored.fisher.self_influence(torch.from_numpy(original))).numpy()
    for q in range(len(core)):
        assert spearmanr(core[q], exact[q]).statistic > 0.999
