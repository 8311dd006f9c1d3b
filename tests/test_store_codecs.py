"""Codec round trips stay within their stated error bounds, on the rows gradients actually have:
magnitudes from 1e-30 to 1e30, all-zero rows, and values plain float16 cannot hold.

Stated tolerances (per element x of a row with max-abs m):
- bfloat16: |x' - x| <= 2^-8 |x|               (normal float32 x)
- float16:  |x' - x| <= 2^-11 |x| + 2^-38 m    (per-row power-of-two scale)
- int8:     |x' - x| <= m / 127                 (per-row scale; in fact m / 254)
- float32:  exact
"""

from __future__ import annotations

import numpy as np
import pytest

from storage import CodecConfig, GradientStore
from storage.codecs import decode, encode
from tests.test_store_support import MODEL, SPEC, WIDTH, make_shard


def awkward_rows() -> np.ndarray:
    rng = np.random.default_rng(3)
    magnitudes = 10.0 ** np.array([-30, -8, -3, 0, 3, 5, 12, 30, 38], dtype=np.float64)
    rows = rng.standard_normal((len(magnitudes), WIDTH)) * magnitudes[:, None]
    rows[:, 0] = magnitudes * 3.0  # the row's max-abs, exactly representable or not
    rows[-1, 1] = np.finfo(np.float32).max  # rounds up to inf unless handled
    rows = np.vstack([rows, np.zeros((1, WIDTH)), -rows[:2]])
    return rows.astype(np.float32)


def check_bounds(original: np.ndarray, decoded: np.ndarray, precision: str) -> None:
    assert decoded.dtype == np.float32 and np.isfinite(decoded).all()
    x, y = original.astype(np.float64), decoded.astype(np.float64)
    err, max_abs = np.abs(y - x), np.abs(x).max(axis=1, keepdims=True)
    if precision == "float32":
        np.testing.assert_array_equal(decoded, original)
    elif precision == "bfloat16":
        normal = np.abs(x) >= np.finfo(np.float32).tiny
        assert (err[normal] <= 2.0**-8 * np.abs(x[normal])).all()
    elif precision == "float16":
        assert (err <= 2.0**-11 * np.abs(x) + 2.0**-38 * max_abs).all()
    else:
        assert (err <= max_abs / 127).all()
        assert (err <= max_abs / 254 * (1 + 1e-6)).all()
    zero = ~original.any(axis=1)
    assert not decoded[zero].any()


@pytest.mark.parametrize("precision", ["bfloat16", "float16", "int8", "float32"])
def test_codec_round_trip_error_is_bounded(precision):
    rows = awkward_rows()
    encoded = encode(rows, precision)
    assert encoded.codes.dtype == CodecConfig(precision=precision).storage_dtype
    assert (encoded.scale is not None) == CodecConfig(precision=precision).scaled
    check_bounds(rows, decode(encoded, precision), precision)


def test_plain_float16_would_overflow_where_the_scaled_codec_does_not():
    rows = awkward_rows()
    with np.errstate(over="ignore"):
        assert not np.isfinite(rows.astype(np.float16)).all()
    assert np.isfinite(decode(encode(rows, "float16"), "float16")).all()


def test_bfloat16_rounds_to_nearest_even_like_torch():
    import torch

    rows = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    ours = decode(encode(rows, "bfloat16"), "bfloat16")
    theirs = torch.from_numpy(rows).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("precision", ["bfloat16", "float16", "int8", "float32"])
def test_store_round_trip_per_codec(tmp_path, precision):
    store = GradientStore.create(str(tmp_path / "s.zarr"), SPEC, MODEL, CodecConfig(precision=precision), chunk_rows=8)
    shard_hash, rows, meta = make_shard(5, 30)
    store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL)
    check_bounds(rows, store.read_rows(), precision)
    np.testing.assert_array_equal(store.dask_rows().compute(), store.read_rows())
