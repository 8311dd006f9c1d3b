"""The gradient store on real Zarr stores: local directories and fsspec's memory:// filesystem."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

from storage import (
    CodecConfig,
    DuplicateIdsError,
    GradientStore,
    ModelMismatchError,
    RowMetadata,
    RowsInvalidError,
    StoreError,
    StoreExistsError,
    StoreNotFoundError,
    store_info,
    verify_store,
)
from storage.codecs import decode, encode
from tests.test_store_support import MODEL, SPEC, WIDTH, make_shard, make_spec
from valuation import FisherPartial, ProjectionMismatchError


@pytest.fixture(params=["local", "memory"])
def url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store.zarr")
    return f"memory://dataworth-test-{uuid.uuid4().hex}"


def create(url: str, **kwargs) -> GradientStore:
    codec, chunk_rows = kwargs.pop("codec", None), kwargs.pop("chunk_rows", 16)
    return GradientStore.create(url, SPEC, MODEL, codec, chunk_rows=chunk_rows, **kwargs)


def commit(store: GradientStore, seed: int, n: int = 50):
    shard_hash, rows, meta = make_shard(seed, n)
    return store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL), rows, meta


def test_append_then_read_back_rows_metadata_and_dask_views(url):
    store = create(url)
    first, rows0, meta0 = commit(store, 0, 50)
    second, rows1, meta1 = commit(store, 1, 37)
    assert (first.status, first.row_start, first.row_stop) == ("committed", 0, 50)
    assert (second.row_start, second.row_stop) == (50, 87)

    reopened = GradientStore.open(url)
    assert reopened.n_rows == 87 and [e.row_count for e in reopened.manifest] == [50, 37]
    expected = decode(encode(np.concatenate([rows0, rows1]), "bfloat16"), "bfloat16")
    np.testing.assert_array_equal(reopened.read_rows(), expected)
    np.testing.assert_array_equal(reopened.read_rows(40, 60), expected[40:60])
    start, stop = reopened.layout.offsets["block.0.mlp"]
    np.testing.assert_array_equal(reopened.read_rows(module="block.0.mlp"), expected[:, start:stop])

    lazy = reopened.dask_rows()
    assert lazy.dtype == np.float32 and lazy.chunks[0] == (16,) * 5 + (7,)  # one block per Zarr chunk
    np.testing.assert_array_equal(lazy.compute(), expected)
    blocks = list(reopened.iter_row_blocks(block_rows=40))
    assert [s for s, _ in blocks] == [0, 32, 64]  # whole chunks: 40 rounds down to 32
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), expected)

    meta = reopened.read_metadata()
    assert meta.example_ids == meta0.example_ids + meta1.example_ids
    assert meta.providers == meta0.providers + meta1.providers
    assert meta.shards == [first.shard_hash] * 50 + [second.shard_hash] * 37
    np.testing.assert_array_equal(meta.n_tokens, np.concatenate([meta0.n_tokens, meta1.n_tokens]))
    assert reopened.dask_metadata()["provider"].compute().tolist() == meta.providers
    codes, names = reopened.provider_codes()
    assert [names[c] for c in codes] == meta.providers


def test_recommitting_a_shard_is_a_no_op_that_says_so(url):
    store = create(url)
    commit(store, 0)
    commit(store, 1)
    again, _, _ = commit(store, 0)
    assert not again.committed and again.status == "already_committed"
    assert (again.row_start, again.row_stop) == (0, 50)
    assert "already committed" in str(again)
    assert store.n_rows == 100 and len(store.manifest) == 2 and store.is_committed(again.shard_hash)
    assert len(set(store.read_metadata().example_ids)) == 100


def test_example_ids_are_unique_at_commit_whatever_the_caller_checked(url):
    store = create(url)
    commit(store, 0, 20)
    snapshot = [e.model_dump() for e in store.manifest], store.fisher_partial().count
    taken = make_shard(1, 12, ids_of=0)  # other rows naming examples s0-ex0..11
    with pytest.raises(DuplicateIdsError, match=r"'s0-ex0', .* and 7 more are in committed shard .*nothing was"):
        store.commit_shard(*taken, spec=SPEC, model_fingerprint=MODEL)
    shard_hash, rows, meta = make_shard(2, 4)
    meta.example_ids[3] = meta.example_ids[1]
    with pytest.raises(DuplicateIdsError, match="'s2-ex1' repeat within the shard"):
        store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL)
    assert ([e.model_dump() for e in store.refresh().manifest], store.fisher_partial().count) == snapshot

    # Staged shards: one naming committed examples, two naming the same new ones; the first of those wins.
    area = store.stage("w0", spec=SPEC, model_fingerprint=MODEL)
    for shard in (taken, make_shard(3, 5), make_shard(4, 5, ids_of=3)):
        area.write_shard(*shard)
    results = store.commit_staged([taken[0], make_shard(3, 5)[0], make_shard(4, 5, ids_of=3)[0]])
    assert [r.status for r in results] == ["refused", "committed", "refused"]
    assert "same commit" in results[2].reason and "refused, nothing written" in str(results[2])
    assert store.n_rows == 25 and store_info(url)["staged"] == [] and verify_store(url) == []
    ids = store.read_metadata().example_ids
    assert len(ids) == len(set(ids)) == 25


def test_a_handle_serves_its_view_until_refreshed(url):
    writer, reader = create(url), None
    commit(writer, 0)
    reader = GradientStore.open(url, read_only=True)
    commit(writer, 1)
    assert reader.n_rows == 50 and reader.read_rows().shape == (50, WIDTH)
    assert reader.refresh().n_rows == 100
    with pytest.raises(StoreError, match="read-only"):
        reader.commit_shard(*make_shard(2), spec=SPEC, model_fingerprint=MODEL)


def test_rows_of_another_projection_are_refused_naming_both(url):
    store = create(url)
    other = make_spec(seed=7)
    shard_hash, rows, meta = make_shard(0)
    with pytest.raises(ProjectionMismatchError) as err:
        store.commit_shard(shard_hash, rows, meta, spec=other, model_fingerprint=MODEL)
    message = str(err.value)
    assert SPEC.fingerprint in message and other.fingerprint in message and "seed: 0 vs 7" in message
    with pytest.raises(ProjectionMismatchError):
        store.stage("w0", spec=other, model_fingerprint=MODEL)
    with pytest.raises(ProjectionMismatchError):
        GradientStore.open_or_create(url, other, MODEL)
    assert store.refresh().n_rows == 0


def test_rows_of_another_model_are_refused_naming_both(url):
    store = create(url)
    other = {**MODEL, "weights_sha256": "cd" * 32, "fingerprint": "model-b"}
    shard_hash, rows, meta = make_shard(0)
    with pytest.raises(ModelMismatchError) as err:
        store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=other)
    message = str(err.value)
    assert "store model model-a" in message and "rows' model model-b" in message and "weights_sha256" in message
    assert store.refresh().n_rows == 0


def test_invalid_rows_are_refused_before_anything_is_written(url):
    store = create(url)
    shard_hash, rows, meta = make_shard(0, 10)
    rows[3, 2] = np.nan
    with pytest.raises(RowsInvalidError, match="s0-ex3"):
        store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL)
    with pytest.raises(RowsInvalidError, match="shape"):
        store.commit_shard(shard_hash, rows[:, :5], meta, spec=SPEC, model_fingerprint=MODEL)
    with pytest.raises(RowsInvalidError, match="metadata for 9"):
        store.commit_shard(shard_hash, rows[:10], meta.slice(0, 9), spec=SPEC, model_fingerprint=MODEL)
    with pytest.raises(RowsInvalidError, match="shard hash"):
        store.commit_shard("../evil", np.nan_to_num(rows), meta, spec=SPEC, model_fingerprint=MODEL)
    assert store.refresh().n_rows == 0 and verify_store(url) == []


def test_create_open_and_open_or_create(url):
    with pytest.raises(StoreNotFoundError):
        GradientStore.open(url)
    store = GradientStore.open_or_create(url, SPEC, MODEL, CodecConfig(precision="int8"))
    commit(store, 0)
    with pytest.raises(StoreExistsError):
        create(url)
    again = GradientStore.open_or_create(url, SPEC, MODEL, CodecConfig(precision="float32"))
    assert again.codec.precision == "int8" and again.n_rows == 50  # an existing store keeps its codec
    attrs = again.attributes
    assert attrs.schema_version == 2 and attrs.model_fingerprint == MODEL and attrs.projection_spec == SPEC.to_dict()
    assert attrs.code_version and attrs.created_at.endswith("+00:00")


def test_fisher_from_partials_equals_fisher_from_all_rows(url):
    store = create(url, codec=CodecConfig(precision="int8"))
    all_rows = []
    for seed in range(4):
        _, rows, _ = commit(store, seed, 20 + seed)
        all_rows.append(rows)
    direct = FisherPartial.zeros(SPEC.layout).update(torch.from_numpy(np.concatenate(all_rows)))
    summed = store.fisher_partial()
    assert summed.count == direct.count == 86
    for name in direct.sums:
        torch.testing.assert_close(summed.sums[name], direct.sums[name], rtol=1e-12, atol=0)
    a, b = summed.snapshot(0.1), direct.snapshot(0.1)
    for name in a.eigvals:
        atol = 1e-9 * b.eigvals[name].max().item()
        torch.testing.assert_close(a.eigvals[name], b.eigvals[name], rtol=1e-9, atol=atol)
    assert store.fisher_partial([e.shard_hash for e in store.manifest]).count == 86
    with pytest.raises(StoreError, match="one running total over every committed shard"):
        store.fisher_partial([e.shard_hash for e in store.manifest[:2]])


def test_the_running_total_is_the_sum_of_the_shards_partials_and_one_group_whatever_the_shard_count(url):
    """One totals group of fixed shape, whether the same rows come in 2 or 8 shards."""
    rows = np.random.default_rng(4).standard_normal((64, WIDTH)).astype(np.float32)
    totals = {}
    for n_shards in (2, 8):
        store = create(f"{url}-{n_shards}")
        partials = []
        for i, part in enumerate(np.array_split(rows, n_shards)):
            sampled = torch.from_numpy(np.random.default_rng(i).standard_normal(part.shape))  # true-Fisher-like rows
            partials.append(FisherPartial.zeros(SPEC.layout).update(sampled))
            meta = RowMetadata([f"{n_shards}-{i}-{j}" for j in range(len(part))], ["p"] * len(part), np.ones(len(part)))
            store.commit_shard(f"shard-{i}", part, meta, partials[-1], spec=SPEC, model_fingerprint=MODEL)
        expected = sum(partials[1:], partials[0])
        total = store.fisher_partial()
        assert total.count == expected.count == 64
        for name in expected.sums:
            scale = expected.sums[name].abs().max().item()
            assert (total.sums[name] - expected.sums[name]).abs().max().item() <= 1e-12 * scale
        assert list(store.root()["totals"].group_keys()) == [f"t{n_shards:09d}"]
        totals[n_shards] = store.root()["totals"][f"t{n_shards:09d}"]["fisher"].shape
    assert totals[2] == totals[8]


def test_given_fisher_partials_are_kept_as_given(url):
    """Under the true Fisher the partial comes from sampled-label rows, not the stored rows."""
    store = create(url)
    shard_hash, rows, meta = make_shard(0, 30)
    sampled = np.random.default_rng(9).standard_normal(rows.shape).astype(np.float32)
    partial = FisherPartial.zeros(SPEC.layout).update(torch.from_numpy(sampled))
    store.commit_shard(shard_hash, rows, meta, partial, spec=SPEC, model_fingerprint=MODEL)
    for name, total in store.fisher_partial().sums.items():
        torch.testing.assert_close(total, partial.sums[name], rtol=0, atol=0)


def test_snapshots_are_versioned_with_their_shard_set_and_self_influence(url):
    store = create(url)
    commit(store, 0)
    first = [store.manifest[0].shard_hash]
    v1 = store.save_snapshot(store.fisher_partial().snapshot(0.1), first)
    commit(store, 1)
    everything = [e.shard_hash for e in store.manifest]
    fisher = store.fisher_partial().snapshot(0.5)
    v2 = store.save_snapshot(fisher, everything)
    assert (v1, v2) == (1, 2) and store.snapshot_versions() == [1, 2]

    latest = store.load_snapshot()
    assert latest.version == 2 and latest.shards == everything and latest.fisher.alpha == 0.5
    assert latest.fisher.count == 100 and latest.fisher.lambdas == pytest.approx(fisher.lambdas)
    for name in fisher.eigvecs:
        torch.testing.assert_close(latest.fisher.eigvecs[name], fisher.eigvecs[name], rtol=0, atol=0)
        torch.testing.assert_close(latest.fisher.eigvals[name], fisher.eigvals[name], rtol=0, atol=0)
    assert store.load_snapshot(1).shards == first and store.load_snapshot(1).fisher.count == 50

    with pytest.raises(StoreError, match="no self-influence"):
        store.self_influence(2)
    values = latest.fisher.self_influence(torch.from_numpy(store.read_rows())).numpy()
    store.save_self_influence(2, values)
    np.testing.assert_array_equal(store.self_influence(), values)
    assert store.load_snapshot().self_influence_rows == 100
    with pytest.raises(RowsInvalidError, match="100 rows"):
        store.save_self_influence(1, values[:10])
    with pytest.raises(RowsInvalidError, match="50 Fisher rows"):
        store.save_snapshot(fisher, first)  # the snapshot sums 100 rows, the shard holds 50
    with pytest.raises(StoreError, match="not committed"):
        store.save_snapshot(fisher, ["no-such-shard"])
    with pytest.raises(StoreError, match="versions"):
        store.load_snapshot(9)


def test_only_the_latest_snapshots_keep_their_eigenvectors_and_self_influence(url):
    store = create(url)
    commit(store, 0)
    shards = [store.manifest[0].shard_hash]
    rows = torch.from_numpy(store.read_rows())
    for alpha in (0.1, 0.2, 0.3):
        snapshot = store.fisher_partial().snapshot(alpha)
        version = store.save_snapshot(snapshot, shards)
        store.save_self_influence(version, snapshot.self_influence(rows).numpy())
    assert store.snapshot_versions() == [1, 2, 3]
    with pytest.raises(StoreError, match="snapshot 1 was retired"):
        store.load_snapshot(1)
    assert store.load_snapshot(2).fisher.alpha == 0.2 and store.self_influence(2).shape == (50,)
    root = store.root()
    assert "eigvecs" not in root["snapshots"]["v000001"] and "derived" not in root["snapshots"]["v000001"]
    assert store.snapshot_attrs(1)["alpha"] == 0.1  # what a report's provenance names stays
    assert [s["retired_at"] is not None for s in store_info(url)["snapshots"]] == [True, False, False]
    assert verify_store(url) == []


def test_provider_sums_are_the_sums_of_the_stored_rows(url):
    store = create(url, codec=CodecConfig(precision="int8"))
    for seed in range(3):
        commit(store, seed, 25)
    rows, providers = store.read_rows(), np.asarray(store.read_metadata().providers)
    sums = store.provider_sums()
    assert sorted(sums) == ["alice", "bob", "carol"]
    for name, vector in sums.items():
        assert vector.dtype == np.float64 and vector.shape == (WIDTH,)
        np.testing.assert_allclose(vector, rows[providers == name].sum(axis=0, dtype=np.float64), rtol=1e-12)
    assert store.provider_row_counts() == {p: int((providers == p).sum()) for p in sums}


def test_store_info_reports_counts_sizes_and_snapshots(url):
    store = create(url)
    for seed in range(2):
        commit(store, seed, 40)
    store.save_snapshot(store.fisher_partial().snapshot(0.1), [e.shard_hash for e in store.manifest])
    info = store_info(url)
    assert info["rows"] == 80 and info["uncommitted_tail_rows"] == 0
    assert sum(info["providers"].values()) == 80 and len(info["shards"]) == 2
    assert info["snapshots"][0]["count"] == 80 and info["snapshots"][0]["shards"] == 2
    assert info["bytes"]["rows"] > 0 and info["bytes"]["total"] > info["bytes"]["rows"]
    assert info["projection"]["fingerprint"] == SPEC.fingerprint and info["model"]["fingerprint"] == "model-a"


def test_an_empty_shard_is_recorded_so_re_ingesting_it_is_a_no_op(url):
    store = create(url)
    no_rows, no_meta = np.zeros((0, WIDTH), np.float32), RowMetadata([], [], [])
    first = store.commit_shard("empty-shard", no_rows, no_meta, spec=SPEC, model_fingerprint=MODEL)
    again = store.commit_shard("empty-shard", no_rows, no_meta, spec=SPEC, model_fingerprint=MODEL)
    assert first.committed and not again.committed and first.rows == 0
    commit(store, 0)
    assert store.n_rows == 50 and store.provider_sums().keys() == {"alice", "bob", "carol"}
    assert verify_store(url) == []


def test_string_metadata_round_trips_exactly_and_snippets_are_capped(url):
    store = create(url)
    odd = ["plain", "ünïcödé ✓", "tab\tand\nnewline", "trailing nul\0", "", "x" * 2000]
    meta = RowMetadata(odd, odd[::-1], np.arange(6), snippets=odd)
    rows = np.ones((6, WIDTH), np.float32)
    store.commit_shard("odd-strings", rows, meta, spec=SPEC, model_fingerprint=MODEL)
    stored = store.read_metadata()
    assert stored.example_ids == odd and stored.providers == odd[::-1]
    assert stored.snippets[:5] == odd[:5] and stored.snippets[5] == "x" * 512
    assert verify_store(url) == []
