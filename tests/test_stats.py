"""compute_statistics against NumPy on the full array; user batch_stats_fn reductions."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn._pipeline.statistics import _chunk_moments, _merge_moments


def assert_matches_numpy(stats, arrays, per_channel=True):
    for k, x in arrays.items():
        axes = tuple(range(x.ndim - 1)) if per_channel and x.ndim >= 2 else None
        x64 = x.astype(np.float64)
        scale = max(1.0, float(np.abs(x64).max()))
        np.testing.assert_allclose(stats.mean[k], x64.mean(axis=axes), rtol=1e-5, atol=1e-5 * scale)
        np.testing.assert_allclose(stats.std[k], x64.std(axis=axes), rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_array_equal(stats.min[k], x.min(axis=axes))
        np.testing.assert_array_equal(stats.max[k], x.max(axis=axes))
    assert stats.count == len(next(iter(arrays.values())))


@settings(max_examples=10)
@given(
    n=st.integers(1, 70),
    chunk=st.integers(1, 32),
    channels=st.integers(1, 3),
    offset=st.sampled_from([0.0, 1e3, -5e4]),
    seed=st.integers(0, 2**16),
    per_channel=st.booleans(),
)
def test_statistics_match_numpy(n, chunk, channels, offset, seed, per_channel):
    rng = np.random.default_rng(seed)
    arrays = {
        "x": (rng.normal(size=(n, 3, channels)) * rng.uniform(0.1, 10) + offset).astype(np.float32),
        "u8": rng.integers(0, 256, (n, 2, 2, channels), dtype=np.uint8),
        "y": rng.integers(-5, 5, (n,), dtype=np.int32),
    }
    stats = dfn.compute_statistics(dfn.from_arrays(arrays), batch_size=chunk, per_channel=per_channel)
    assert_matches_numpy(stats, arrays, per_channel)


def test_chan_merge_is_stable_far_from_zero():
    # A naive E[x^2] - E[x]^2 in float32 loses every digit here; Chan's merge does not.
    rng = np.random.default_rng(1)
    x = (1e6 + rng.normal(size=(4096, 1))).astype(np.float32)
    stats = dfn.compute_statistics(dfn.from_arrays({"x": x}), batch_size=100)
    np.testing.assert_allclose(stats.std["x"], x.astype(np.float64).std(0), rtol=2e-3)


def test_merge_of_two_chunks_equals_one_chunk():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(10, 3)).astype(np.float32))
    whole = _chunk_moments({"x": x}, True)["x"]
    merged = _merge_moments(_chunk_moments({"x": x[:3]}, True), _chunk_moments({"x": x[3:]}, True))["x"]
    for a, b in zip(whole, merged):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keys_and_shapes():
    x = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    stats = dfn.compute_statistics(dfn.from_arrays({"x": x, "y": np.arange(4, dtype=np.int32)}), keys="x")
    assert set(stats.mean) == {"x"} and stats.mean["x"].shape == (2,)
    assert dfn.compute_statistics(dfn.from_arrays({"x": x}), per_channel=False).mean["x"].shape == ()
    with pytest.raises(KeyError, match="available"):
        dfn.compute_statistics(dfn.from_arrays({"x": x}), keys="z")
    with pytest.raises(ValueError, match="batch_size"):
        dfn.compute_statistics(dfn.from_arrays({"x": x}), batch_size=0)


def test_source_is_not_advanced_and_shuffle_does_not_matter():
    x = np.random.default_rng(3).normal(size=(50, 2)).astype(np.float32)
    plain = dfn.compute_statistics(dfn.from_arrays({"x": x}), batch_size=7)
    source = dfn.from_arrays({"x": x}, shuffle=True, seed=4)
    source, _ = dfn.get_batch(source, 13)
    shuffled = dfn.compute_statistics(source, batch_size=7)
    np.testing.assert_allclose(plain.mean["x"], shuffled.mean["x"], rtol=1e-6)
    assert int(source.index) == 13


@pytest.mark.parametrize(
    "reduction,fn,want",
    [
        ("mean", lambda b: {"m": b["x"].mean(0), "sq": (b["x"] ** 2).mean(0)}, lambda x: {"m": x.mean(0), "sq": (x**2).mean(0)}),
        ("sum", lambda b: {"hist": jnp.bincount(b["c"], length=4)}, lambda x: None),
        ("min", lambda b: b["x"].min(0), lambda x: x.min(0)),
        ("max", lambda b: b["x"].max(0), lambda x: x.max(0)),
    ],
)
def test_batch_stats_fn_reductions(reduction, fn, want):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(37, 3)).astype(np.float32)
    c = rng.integers(0, 4, 37).astype(np.int32)
    out = dfn.compute_statistics(dfn.from_arrays({"x": x, "c": c}), fn, batch_size=8, reduction=reduction)
    if reduction == "sum":
        np.testing.assert_array_equal(out["hist"], np.bincount(c, minlength=4))
    else:
        expected = want(x.astype(np.float64))
        import jax

        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), out, expected)


def test_precomputed_statistics_skip_the_computation():
    stats = dfn.Statistics(mean={"x": [1.0, 2.0]}, std={"x": [2.0, 4.0]})
    source = dfn.from_arrays({"x": np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)})
    pipe = dfn.Pipeline(source, [dfn.normalize("x")], batch_size=2, stats=stats)
    _, batch = dfn.step(pipe)
    np.testing.assert_array_equal(batch["x"], [[0.0, 0.0], [1.0, 1.0]])
    # a plain dict with mean/std works as well
    pipe = dfn.Pipeline(source, [dfn.normalize("x")], batch_size=2, stats={"mean": {"x": 1.0}, "std": {"x": 2.0}})
    np.testing.assert_array_equal(dfn.step(pipe)[1]["x"], [[0.0, 0.5], [1.0, 2.5]])
    with pytest.raises(ValueError, match="same keys"):
        dfn.Statistics(mean={"x": 0.0}, std={"y": 1.0})


def test_statistics_live_with_their_computation():
    # The type and the function that builds it are one concept: one module.
    assert dfn.Statistics.__module__ == dfn.compute_statistics.__module__ == "datarax_fn._pipeline.statistics"
