"""The state contract of _core, checked on every state type, and the public extension point."""

from __future__ import annotations

import json
import warnings

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datarax_fn as dfn
from conftest import RangeBackend, take

N = 10


def eager(seed=3, shuffle=True, info=None):
    return dfn.from_arrays({"x": np.arange(N, dtype=np.int32), "y": {"z": 2 * np.arange(N, dtype=np.float32)}},
                           shuffle=shuffle, seed=seed, info=info)


def streaming(seed=3, shuffle=True, known=True):
    return dfn.from_backend(RangeBackend(N, 3, known_length=known, shuffle=shuffle), shuffle=shuffle, seed=seed)


def double(batch, key):
    return {**batch, "x": batch["x"] * 2}


def pipeline(seed=3, shuffle=True, stages=(double,), batch_size=4, over=eager):
    return dfn.Pipeline(over(seed=seed, shuffle=shuffle), list(stages), batch_size=batch_size)


BUILDERS = {
    "eager": eager,
    "streaming": streaming,
    "streaming-unknown-length": lambda **kw: streaming(known=False, **kw),
    "pipeline": pipeline,
    "pipeline-over-stream": lambda **kw: pipeline(over=streaming, **kw),
}


@pytest.fixture(params=sorted(BUILDERS))
def build(request):
    return BUILDERS[request.param]


def advance(state, k=7):
    if isinstance(state, dfn.Pipeline):
        return dfn.step(state)[0] if k else state
    return dfn.get_batch(state, k)[0]


def next_batch(state):
    if isinstance(state, dfn.Pipeline):
        return jax.device_get(dfn.step(state)[1])
    return jax.device_get(dfn.get_batch(state, 5)[1])


# ----------------------------------------------------------------------------- length


def test_num_records_len_and_truth(build):
    state = build()
    n = dfn.num_records(state)
    assert bool(state) is True  # `if state:` never raises, whatever the length
    if n is None:
        with pytest.raises(TypeError, match="length is unknown.*returns None"):
            len(state)
    else:
        assert n == len(state) == N and type(n) is int


# ----------------------------------------------------------------------------- cursor


def test_cursor_schema_and_round_trip(build):
    state = advance(build())
    cur = json.loads(json.dumps(dfn.cursor(state)))
    assert cur["version"] == 1 and {"kind", "index", "epoch", "seed"} <= set(cur)
    assert (cur["index"], cur["epoch"]) == (int(state.index), int(state.epoch))
    restored = dfn.restore_cursor(build(), cur)
    chex.assert_trees_all_equal(next_batch(restored), next_batch(state))


def test_restore_names_the_seed_that_differs(build):
    cur = dfn.cursor(advance(build(seed=3)))
    with pytest.raises(ValueError, match=r"seed \(cursor 3, this state 4\)"):
        dfn.restore_cursor(build(seed=4), cur)


def test_restore_names_the_shuffle_that_differs(build):
    cur = dfn.cursor(build(shuffle=True))
    with pytest.raises(ValueError, match=r"shuffle \(cursor True, this state False\)"):
        dfn.restore_cursor(build(shuffle=False), cur)


def test_restore_refuses_an_unversioned_cursor(build):
    cur = dfn.cursor(build())
    del cur["version"]
    with pytest.raises(ValueError, match="version"):
        dfn.restore_cursor(build(), cur)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_restore_rejects_a_seed_out_of_range_with_value_error(build, seed):
    cur = {**dfn.cursor(build()), "seed": seed}
    with pytest.raises(ValueError, match="seed must be in"):
        dfn.restore_cursor(build(), cur)


def test_pipeline_restore_checks_stages_and_batch_size():
    cur = dfn.cursor(advance(pipeline()))
    with pytest.raises(ValueError, match=r"batch_size \(cursor 4, this state 8\)"):
        dfn.restore_cursor(pipeline(batch_size=8), cur)
    with pytest.raises(ValueError, match="differs in stages"):
        dfn.restore_cursor(pipeline(stages=(dfn.cast("x"),)), cur)
    with pytest.raises(ValueError, match="differs in stages"):
        dfn.restore_cursor(dfn.Pipeline(eager(), [dfn.normalize("x", mean=1.0, std=3.0)], 4),
                           dfn.cursor(dfn.Pipeline(eager(), [dfn.normalize("x", mean=1.0, std=2.0)], 4)))
    assert int(dfn.restore_cursor(pipeline(), cur).index) == 4


def test_cursor_does_not_read_the_data(monkeypatch):
    state = eager()
    monkeypatch.setattr(jax, "device_get", lambda *a: pytest.fail("cursor read the data"))
    monkeypatch.setattr(np, "ascontiguousarray", lambda *a: pytest.fail("cursor hashed the data"))
    assert dfn.cursor(state)["fingerprint"] == state.fingerprint


def test_pipeline_seed_out_of_range_is_a_value_error():
    with pytest.raises(ValueError, match="seed must be in"):
        dfn.Pipeline(eager(), [], 4, seed=-1)


# ----------------------------------------------------------------------------- stable structure


def test_rebuilt_state_has_the_same_structure(build):
    a, b = build(), build()
    assert jax.tree.structure(a) == jax.tree.structure(b)
    same = jax.tree.map(lambda x, y: np.array_equal(x, y), a, b)
    assert all(jax.tree.leaves(same))


def test_other_data_has_another_structure():
    other = dfn.from_arrays({"x": np.arange(N, dtype=np.int32) + 1, "y": {"z": 2 * np.arange(N, dtype=np.float32)}},
                            shuffle=True, seed=3)
    assert jax.tree.structure(eager()) != jax.tree.structure(other)


def test_rebuilt_source_with_metadata_reuses_the_compiled_step():
    # info stands for a loader's DatasetInfo: a new object on every load.
    @dfn.jit_step
    def step(state):
        return dfn.get_batch(state, 4)

    for _ in range(3):
        step(eager(info={"split": "train"}))
    assert sum(f._cache_size() for f in step.compiled.values()) == 1
    jitted = jax.jit(lambda s: dfn.get_batch(s, 4)[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dfn.DatasetCopyWarning)
        jitted(eager(info={"a": 1}))
        jitted(eager(info={"a": 1}))
    assert jitted._cache_size() == 1


def test_statistics_count_is_a_leaf():
    a = dfn.Statistics(mean={"x": 0.0}, std={"x": 1.0}, count=10)
    b = dfn.Statistics(mean={"x": 0.0}, std={"x": 1.0}, count=20)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert int(jax.tree.map(lambda u, v: u + v, a, b).count) == 30


# ----------------------------------------------------------------------------- get_batch_at


def test_get_batch_at_refuses_a_negative_start():
    with pytest.raises(ValueError, match="start must be in"):
        dfn.get_batch_at(eager(), -1, 3)
    with pytest.raises(ValueError, match="start must be in"):
        dfn.get_batch_at(eager(), np.int64(-1), 3)
    traced = jax.jit(lambda s, i: dfn.get_batch_at(s, i, 3))
    with pytest.raises(jax.errors.JaxRuntimeError, match="start must be >= 0"):
        jax.block_until_ready(traced(eager(), jnp.int32(-1)))
    assert traced(eager(shuffle=False), jnp.int32(9))["x"].tolist() == [9, 0, 1]


# ----------------------------------------------------------------------------- extension point


class Countdown(dfn.Source):
    """Records n-1 .. 0 in order, written through the public API only."""

    index: jax.Array
    epoch: jax.Array
    seed: jax.Array
    n: int = eqx.field(static=True)

    def moved(self, size):
        epochs, index = jnp.divmod(self.index + size, self.n)
        return Countdown(index, self.epoch + epochs, self.seed, self.n)


@dfn.get_batch.register(Countdown)
def _(state, size, key=None):
    return state.moved(size), {"x": state.n - 1 - (state.index + jnp.arange(size)) % state.n}


@dfn.num_records.register(Countdown)
def _(state):
    return state.n


def countdown():
    return Countdown(jnp.int32(0), jnp.int32(0), jnp.uint32(0), 5)


def test_a_source_written_from_scratch_plugs_in():
    state = countdown()
    assert len(state) == 5 and bool(state)
    state, batch = dfn.get_batch(state, 3)
    assert batch["x"].tolist() == [4, 3, 2]

    @dfn.jit_step
    def step(state):
        return dfn.get_batch(state, 4)

    state, batch = step(state)
    assert batch["x"].tolist() == [1, 0, 4, 3] and (int(state.index), int(state.epoch)) == (2, 1)
    pipe, out = dfn.step(dfn.Pipeline(countdown(), [double], batch_size=2))
    assert out["x"].tolist() == [8, 6]
    with pytest.raises(TypeError, match="registers cursor"):
        dfn.cursor(state)


def test_a_backend_written_from_scratch_plugs_in():
    class Letters:
        def open(self, epoch, seed, start):
            yield {"c": np.frombuffer(b"abcdef"[start:], np.uint8).copy()}

        def num_records(self):
            return 6

        def element_spec(self):
            return {"c": jax.ShapeDtypeStruct((), np.uint8)}

        def fingerprint(self):
            return "letters"

    assert isinstance(Letters(), dfn.StreamingBackend)
    state = dfn.from_backend(Letters())
    state, batch = take(state, [4, 4])
    assert bytes(batch["c"]) == b"abcdefab"
    assert dfn.cursor(state)["fingerprint"] == "letters"
    state.close()


def test_a_backend_without_fingerprint_is_refused():
    class NoFingerprint:
        def open(self, epoch, seed, start):
            yield {"c": np.zeros(1)}

        def num_records(self):
            return 1

        def element_spec(self):
            return {"c": jax.ShapeDtypeStruct((), np.float64)}

    with pytest.raises(TypeError, match=r"lacks \['fingerprint'\]"):
        dfn.from_backend(NoFingerprint())


def test_end_of_stream_is_safe_inside_generators():
    state = dfn.from_backend(RangeBackend(4, 2), num_epochs=1)

    def batches(state):
        while True:
            state, batch = dfn.get_batch(state, 3)
            yield batch

    with pytest.raises(dfn.EndOfStream, match="num_epochs=1"):
        list(batches(state))


class _Rows(jax.sharding.Sharding):
    """A sharding seen from one process: the row blocks its devices hold (what process_rows reads)."""

    def __init__(self, *blocks):
        self.blocks = blocks

    def addressable_devices_indices_map(self, shape):
        return {f"device{i}": (slice(lo, hi),) for i, (lo, hi) in enumerate(self.blocks)}


def test_process_rows_is_the_contiguous_block_of_this_process():
    from datarax_fn._layout.partitions import process_rows

    assert process_rows(dfn.data_sharding(), 8) == (0, 8)
    assert process_rows(_Rows((4, 6), (2, 4)), 8) == (2, 6)
    assert process_rows(_Rows((0, 4), (0, 4)), 8) == (0, 4)  # replicated over this process's devices
    with pytest.raises(ValueError, match=r"owns the batch rows \[0, 1, 4, 5\], which are not contiguous"):
        process_rows(_Rows((0, 2), (4, 6)), 8)


def test_static_metadata_compares_by_key_and_kind_only():
    from datarax_fn._state.contract import Static

    class Other(Static):
        __slots__ = ()

    a, b = Static({"meta": 1}, "arrays:abc"), Static({"meta": 2}, "arrays:abc")
    assert a == b and hash(a) == hash(b)
    assert a != Static({"meta": 1}, "arrays:abd")
    assert a != Other({"meta": 1}, "arrays:abc")  # a streaming handle never equals eager metadata
    x = np.arange(6, dtype=np.int32)
    s1 = dfn.from_arrays({"x": x}, info={"v": 1}, fingerprint="f")
    s2 = dfn.from_arrays({"x": x.copy()}, info={"v": 2}, fingerprint="f")
    assert jax.tree.structure(s1) == jax.tree.structure(s2)
