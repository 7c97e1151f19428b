"""EagerSource and its pure functions: the stream's semantics, exact values, errors."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn._state.shuffle import permute


# Few distinct shapes: every (N, size) pair compiles once, and compiles dominate the suite.
NS = st.sampled_from([1, 2, 3, 5, 8, 13, 16, 17])
SIZES = st.sampled_from([1, 2, 3, 5, 8, 13, 21, 34])


def make(n, shuffle=False, seed=0):
    return dfn.from_arrays(
        {"x": np.arange(n, dtype=np.int32), "img": np.arange(n * 6, dtype=np.uint8).reshape(n, 2, 3)},
        shuffle=shuffle,
        seed=seed,
    )


def expected_stream(n, shuffle, seed, epochs, first_epoch=0):
    if not shuffle:
        return np.tile(np.arange(n), epochs)
    return np.concatenate([permute(np.arange(n), n, seed, e) for e in range(first_epoch, first_epoch + epochs)])


def take_stream(state, sizes):
    out = []
    for size in sizes:
        state, batch = dfn.get_batch(state, size)
        out.append(np.asarray(batch["x"]))
    return state, np.concatenate(out)


# ---------------------------------------------------------------- stream semantics


@given(
    n=NS,
    shuffle=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(SIZES, min_size=1, max_size=8),
)
def test_stream_is_concatenated_epoch_orders(n, shuffle, seed, sizes):
    state, got = take_stream(make(n, shuffle, seed), sizes)
    total = sum(sizes)
    epochs = -(-total // n)
    np.testing.assert_array_equal(got, expected_stream(n, shuffle, seed, epochs)[:total])
    assert int(state.index) == total % n and int(state.epoch) == total // n


@given(n=NS, seed=st.integers(0, 1000), sizes=st.lists(SIZES, min_size=2, max_size=6))
def test_split_invariance(n, seed, sizes):
    _, pieces = take_stream(make(n, True, seed), sizes)
    _, whole = take_stream(make(n, True, seed), [sum(sizes)])
    np.testing.assert_array_equal(pieces, whole)


@given(n=st.integers(1, 200), seed=st.integers(0, 2**32 - 1), epochs=st.integers(1, 4))
def test_each_epoch_visits_every_record_once(n, seed, epochs):
    got = np.asarray(dfn.get_batch_at(make(n, True, seed), 0, n * epochs)["x"])
    for e in range(epochs):
        assert sorted(got[e * n : (e + 1) * n].tolist()) == list(range(n))


def test_exact_values_sequential_and_straddling():
    state = make(5)
    state, b = dfn.get_batch(state, 3)
    assert b["x"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(b["img"], np.arange(30, dtype=np.uint8).reshape(5, 2, 3)[:3])
    state, b = dfn.get_batch(state, 4)  # straddles: 3 4 | 0 1
    assert b["x"].tolist() == [3, 4, 0, 1]
    assert (int(state.index), int(state.epoch)) == (2, 1)
    state, b = dfn.get_batch(state, 12)  # size > N: spans three epochs
    assert b["x"].tolist() == [2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert (int(state.index), int(state.epoch)) == (4, 3)


def test_exact_values_shuffled():
    state = make(10, shuffle=True, seed=0)
    _, b = dfn.get_batch(state, 10)
    assert b["x"].tolist() == [0, 6, 5, 3, 7, 2, 9, 8, 1, 4]
    np.testing.assert_array_equal(b["img"], np.asarray(make(10).data["img"])[b["x"]])


def test_different_seeds_give_different_orders():
    a = take_stream(make(100, True, 1), [100])[1]
    b = take_stream(make(100, True, 2), [100])[1]
    assert not np.array_equal(a, b)


def test_next_epoch_is_reshuffled():
    _, got = take_stream(make(100, True, 1), [200])
    assert not np.array_equal(got[:100], got[100:])


# ---------------------------------------------------------------- jit / scan / fori


@given(n=NS, shuffle=st.booleans(), seed=st.integers(0, 2**32 - 1), size=SIZES)
@settings(max_examples=10)
def test_jit_scan_fori_match_eager(n, shuffle, seed, size):
    steps = 4
    state0 = make(n, shuffle, seed)
    eager_state, eager = take_stream(state0, [size] * steps)
    eager = eager.reshape(steps, size)

    jit_get = jax.jit(dfn.get_batch, static_argnums=1)
    s, outs = state0, []
    for _ in range(steps):
        s, b = jit_get(s, size)
        outs.append(b["x"])
    np.testing.assert_array_equal(np.stack(outs), eager)

    def body(s, _):
        s, b = dfn.get_batch(s, size)
        return s, b["x"]

    s_scan, xs = jax.lax.scan(body, state0, None, length=steps)
    np.testing.assert_array_equal(xs, eager)

    def fbody(i, c):
        s, acc = c
        s, b = dfn.get_batch(s, size)
        return s, acc.at[i].set(b["x"])

    s_fori, acc = jax.lax.fori_loop(0, steps, fbody, (state0, jnp.zeros((steps, size), jnp.int32)))
    np.testing.assert_array_equal(acc, eager)
    for s in (s_scan, s_fori):
        assert (int(s.index), int(s.epoch)) == (int(eager_state.index), int(eager_state.epoch))


def test_state_is_a_stable_loop_carry():
    state = make(7, True, 3)
    new, _ = dfn.get_batch(state, 3)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert not getattr(a, "weak_type", False) and not getattr(b, "weak_type", False)
    assert jax.tree.structure(state) == jax.tree.structure(new)
    assert (state.index.dtype, state.epoch.dtype, state.seed.dtype) == (jnp.int32, jnp.int32, jnp.uint32)


def test_get_batch_is_pure():
    state = make(9, True, 5)
    _, a = dfn.get_batch(state, 4)
    _, b = dfn.get_batch(state, 4)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert int(state.index) == 0


# ---------------------------------------------------------------- get_batch_at and keys


@given(n=NS, shuffle=st.booleans(), start=st.integers(0, 100), size=SIZES)
def test_get_batch_at_matches_stream(n, shuffle, start, size):
    state = make(n, shuffle, 11)
    stream = expected_stream(n, shuffle, 11, -(-(start + size) // n))
    got = dfn.get_batch_at(state, start, size)["x"]
    np.testing.assert_array_equal(got, stream[start : start + size])
    traced = jax.jit(lambda s, i: dfn.get_batch_at(s, i, size))(state, jnp.int32(start))["x"]
    np.testing.assert_array_equal(traced, got)


def test_get_batch_at_counts_from_state_epoch():
    state, _ = dfn.get_batch(make(6, True, 2), 14)  # now at epoch 2, index 2
    got = dfn.get_batch_at(state, 0, 6)["x"]
    np.testing.assert_array_equal(got, permute(np.arange(6), 6, 2, 2))


def test_keyed_batches_are_distinct_and_leave_state():
    state = make(50, seed=1)
    key = jax.random.key(0)
    new, b = dfn.get_batch(state, 20, key)
    x = np.asarray(b["x"])
    assert len(set(x.tolist())) == 20 and new is state
    _, again = dfn.get_batch(state, 20, key)
    np.testing.assert_array_equal(again["x"], x)
    _, other = dfn.get_batch(state, 20, jax.random.key(1))
    assert not np.array_equal(other["x"], x)
    _, jitted = jax.jit(dfn.get_batch, static_argnums=1)(state, 20, key)
    np.testing.assert_array_equal(jitted["x"], x)
    # the first `size` positions of the key's permutation
    _, full = dfn.get_batch(state, 50, key)
    np.testing.assert_array_equal(np.asarray(full["x"])[:20], x)


def test_keyed_size_above_n_raises():
    with pytest.raises(ValueError, match="distinct records"):
        dfn.get_batch(make(5), 6, jax.random.key(0))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("size", [0, -3])
def test_nonpositive_size(size):
    with pytest.raises(ValueError, match="size must be in"):
        dfn.get_batch(make(5), size)


@pytest.mark.parametrize("size", [2.0, True, jnp.int32(2), "2"])
def test_size_must_be_python_int(size):
    with pytest.raises(TypeError, match="static Python int"):
        dfn.get_batch(make(5), size)


def test_numpy_int_size_works_like_an_int():
    _, a = dfn.get_batch(make(5), np.int64(2))
    _, b = dfn.get_batch(make(5), 2)
    chex.assert_trees_all_equal(a, b)


def test_unequal_leading_axes():
    with pytest.raises(ValueError, match=r"leading axis.*\['x'\]: 3, \['y'\]: 4"):
        dfn.from_arrays({"x": np.zeros(3, np.float32), "y": np.zeros(4, np.float32)})


def test_empty_dataset():
    with pytest.raises(ValueError, match="N=0"):
        dfn.from_arrays({"x": np.zeros((0, 2), np.float32)})


def test_non_array_leaves_named():
    with pytest.raises(TypeError, match=r"\['names'\]"):
        dfn.from_arrays({"x": np.zeros(3, np.float32), "names": ["a", "b", "c"]})


def test_scalar_leaf_named():
    with pytest.raises(ValueError, match=r"scalars at \['s'\]"):
        dfn.from_arrays({"x": np.zeros(3, np.float32), "s": np.zeros((), np.float32)})


def test_int64_is_not_silently_narrowed():
    with pytest.raises(TypeError, match=r"\['x'\].*int64.*jax_enable_x64"):
        dfn.from_arrays({"x": np.arange(3, dtype=np.int64)})


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        dfn.from_arrays({"x": np.zeros(3, np.float32)}, seed=-1)


def test_not_a_state():
    with pytest.raises(TypeError, match="source state"):
        dfn.get_batch({"x": np.zeros(3)}, 2)


def test_epoch_overflow_raises():
    state = make(4)
    state = dfn.restore_cursor(state, {**dfn.cursor(state), "epoch": 2**31 - 1, "index": 3})
    with pytest.raises(jax.errors.JaxRuntimeError, match="epoch counter overflowed"):
        jax.block_until_ready(dfn.get_batch(state, 2))


# ---------------------------------------------------------------- small API


def test_element_spec_len_num_records():
    state = make(7)
    spec = dfn.element_spec(state)
    assert spec == {"x": jax.ShapeDtypeStruct((), jnp.int32), "img": jax.ShapeDtypeStruct((2, 3), jnp.uint8)}
    assert len(state) == dfn.num_records(state) == 7
    assert dfn.dataset_info(state) is None
    info = object()
    assert dfn.dataset_info(dfn.from_arrays({"x": np.zeros(2, np.float32)}, info=info)) is info


def test_iterate_walks_epochs_without_dropping():
    got = [(int(s.index), int(s.epoch), b["x"].tolist()) for s, b in dfn.iterate(make(5), 2, epochs=2)]
    assert [b for _, _, b in got] == [[0, 1], [2, 3], [4, 0], [1, 2], [3, 4]]
    assert got[-1][:2] == (0, 2)
    got = [b["x"].tolist() for _, b in dfn.iterate(make(5), 3)]
    assert got == [[0, 1, 2], [3, 4, 0]]  # the last batch straddles instead of being short


def test_nested_pytree_data():
    data = {"a": {"b": np.arange(4, dtype=np.float32)}, "c": (np.arange(8, dtype=np.int32).reshape(4, 2),)}
    state, b = dfn.get_batch(dfn.from_arrays(data), 3)
    np.testing.assert_array_equal(b["a"]["b"], [0, 1, 2])
    np.testing.assert_array_equal(b["c"][0], [[0, 1], [2, 3], [4, 5]])


def _aligned(n):
    buf = np.empty(n * 4 + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off : off + n * 4].view(np.float32)


def test_from_arrays_copies_by_default():
    x = _aligned(1000)
    x[:] = 1.0
    state = dfn.from_arrays({"x": x})
    x[:] = 2.0  # the user's buffer changes; the immutable state must not
    assert float(state.data["x"][0]) == 1.0


def test_from_arrays_copy_false_may_alias_owned_buffers():
    x = _aligned(1000)
    x[:] = 1.0
    state = dfn.from_arrays({"x": x}, copy=False)
    np.testing.assert_array_equal(state.data["x"], x)
    if jax.devices()[0].platform == "cpu":
        assert state.data["x"].unsafe_buffer_pointer() == x.ctypes.data  # zero-copy on CPU


NOT_BOOLS = st.one_of(st.integers(), st.text(max_size=8), st.floats(allow_nan=False), st.none(),
                      st.lists(st.booleans(), max_size=2), st.just(np.int64(1)), st.just(np.asarray([True])))


@settings(max_examples=40, deadline=None)
@given(value=NOT_BOOLS, option=st.sampled_from(["shuffle", "copy"]))
def test_flag_options_refuse_every_non_bool(value, option):
    data = {"x": np.arange(6, dtype=np.int32)}
    with pytest.raises(TypeError, match=f"from_arrays: {option} must be True or False; got .*Pass {option}=True"):
        dfn.from_arrays(data, **{option: value})


def test_flag_options_take_numpy_bools_like_bools():
    data = {"x": np.arange(6, dtype=np.int32)}
    for flag in (np.bool_(True), np.asarray([True])[0]):
        a = dfn.get_batch(dfn.from_arrays(data, shuffle=flag, copy=flag, seed=3), 6)[1]["x"]
        b = dfn.get_batch(dfn.from_arrays(data, shuffle=True, copy=True, seed=3), 6)[1]["x"]
        assert a.tolist() == b.tolist() != list(range(6))
    # "false" is truthy: it used to shuffle
    with pytest.raises(TypeError, match="shuffle must be True or False; got str shuffle='false'"):
        dfn.from_arrays(data, shuffle="false")


@pytest.mark.parametrize("n", [12, 4])
def test_data_swapped_in_with_tree_at_is_refused_not_served_under_the_old_length(n):
    # Growing 8 -> 12 served 8 records; shrinking to 4 with shuffle served [1, 2, 3, 3] (a clamped gather).
    state = dfn.from_arrays({"x": np.arange(8, dtype=np.int32)}, shuffle=True, seed=1)
    new = {"x": np.arange(100, 100 + n, dtype=np.int32)}
    swapped = eqx.tree_at(lambda s: s.data, state, {"x": jnp.asarray(new["x"])})
    calls = [
        ("get_batch", lambda: dfn.get_batch(swapped, 4)),
        ("get_batch", lambda: dfn.jit_step(lambda s: dfn.get_batch(s, 4)[::-1])(swapped)),
        ("get_batch_at", lambda: dfn.get_batch_at(swapped, 0, 4)),
        ("get_global_batch", lambda: dfn.get_global_batch(swapped, 4, dfn.data_sharding())),
        ("place", lambda: dfn.place(swapped, "host")),
        ("cursor", lambda: dfn.cursor(swapped)),
        ("restore_cursor", lambda: dfn.restore_cursor(swapped, dfn.cursor(state))),
        ("num_records", lambda: len(swapped)),
    ]
    for name, call in calls:
        with pytest.raises(ValueError, match=rf"{name}: this state was built over N=8 records, but its data now has "
                                             rf"leading sizes \['x'\]: {n}\..*dfn.from_arrays\(new_data, shuffle=True"):
            call()
    fixed = dfn.from_arrays(new, shuffle=True, seed=1)  # the fix the message names
    _, batch = dfn.get_batch(fixed, n)
    assert sorted(np.asarray(batch["x"]).tolist()) == list(range(100, 100 + n))


@pytest.mark.parametrize("data, named", [
    ({"x": np.arange(4, dtype=np.int32), "label": None}, r"data\['label'\] is None"),
    ({"x": np.arange(4, dtype=np.int32), "meta": {"a": None, "b": [None, np.arange(4, dtype=np.int32)]}},
     r"data\['meta'\]\['a'\], data\['meta'\]\['b'\]\[0\] are None"),
    (None, "data is None"),
])
def test_none_leaves_are_refused_naming_the_key_instead_of_dropped(data, named):
    with pytest.raises(TypeError, match=rf"from_arrays: {named}, which JAX treats as an empty subtree.*remove the key"):
        dfn.from_arrays(data)
    if data is not None:  # the fix: remove the key (or give it an array)
        kept = {k: v for k, v in data.items() if k == "x"}
        assert dfn.get_batch(dfn.from_arrays(kept), 4)[1]["x"].tolist() == [0, 1, 2, 3]
