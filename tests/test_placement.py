"""Placements and canonical partitions of eager states on one device: values against an independent reference."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn._layout.partitions import partition_offsets, partition_seed

PLACEMENTS = ("device", "replicated", "partitioned", "host")


def reference_batches(n, partitions, size, steps, shuffle, seed, start_step=0):
    """Returns the record ids of each batch, written from the canonical-partition definition alone."""
    off = partition_offsets(n, partitions)
    per = size // partitions
    out = []
    for step in range(start_step, start_step + steps):
        rows = []
        for c in range(partitions):
            length = int(off[c + 1] - off[c])
            for k in range(step * per, (step + 1) * per):
                epoch, pos = divmod(k, length)
                if shuffle:
                    pos = int(dfn.permute(np.asarray([pos]), length, partition_seed(seed, c, partitions), epoch)[0])
                rows.append(int(off[c]) + pos)
        out.append(rows)
    return out


def records(n):
    return {"x": np.arange(n, dtype=np.int32), "y": np.arange(n * 2, dtype=np.float32).reshape(n, 2)}


def walk(state, size, steps):
    out = []
    for _ in range(steps):
        state, batch = dfn.get_batch(state, size)
        np.testing.assert_array_equal(np.asarray(batch["y"]), np.asarray(batch["x"])[:, None] * 2 + [0, 1])
        out.append(np.asarray(batch["x"]).tolist())
    return state, out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 40), partitions=st.integers(1, 5), per=st.integers(1, 4), shuffle=st.booleans(),
       seed=st.integers(0, 2**32 - 1), placement=st.sampled_from(PLACEMENTS))
def test_every_placement_walks_the_canonical_partition_order(n, partitions, per, shuffle, seed, placement):
    partitions = min(partitions, n)
    size = per * partitions
    steps = 2 * n // size + 2  # past at least two epochs of every partition
    state = dfn.from_arrays(records(n), partitions=partitions, placement=placement, shuffle=shuffle, seed=seed)
    state, got = walk(state, size, steps)
    assert got == reference_batches(n, partitions, size, steps, shuffle, seed)
    assert (int(state.epoch), int(state.index)) == divmod(steps * size, n)


@pytest.mark.parametrize("shuffle", [False, True])
def test_one_partition_is_the_plain_stream_in_every_placement(shuffle):
    plain = dfn.from_arrays(records(23), shuffle=shuffle, seed=7)
    _, want = walk(plain, 5, 12)
    for placement in PLACEMENTS:
        _, got = walk(dfn.from_arrays(records(23), placement=placement, shuffle=shuffle, seed=7), 5, 12)
        assert got == want, placement


def test_partitioned_example_values():
    state = dfn.from_arrays({"x": np.arange(10, dtype=np.int32)}, partitions=3, placement="partitioned")
    # partitions [0, 3), [3, 6), [6, 10): the short ones start their next epoch earlier
    _, got = walk_x(state, 6, 3)
    assert got == [[0, 1, 3, 4, 6, 7], [2, 0, 5, 3, 8, 9], [1, 2, 4, 5, 6, 7]]


def walk_x(state, size, steps):
    out = []
    for _ in range(steps):
        state, batch = dfn.get_batch(state, size)
        out.append(np.asarray(batch["x"]).tolist())
    return state, out


@pytest.mark.parametrize("placement", ["device", "replicated", "partitioned"])
def test_jit_and_scan_equal_eager(placement):
    state = dfn.from_arrays(records(29), partitions=4, placement=placement, shuffle=True, seed=3)
    _, want = walk(state, 8, 9)

    def body(s, _):
        s, batch = dfn.get_batch(s, 8)
        return s, batch["x"]

    scanned, xs = jax.jit(lambda s: jax.lax.scan(body, s, None, length=9))(state)
    assert np.asarray(xs).tolist() == want
    stepped = dfn.jit_step(lambda s: dfn.get_batch(s, 8))
    got, s = [], state
    for _ in range(9):
        s, batch = stepped(s)
        got.append(np.asarray(batch["x"]).tolist())
    assert got == want and dfn.cursor(s) == dfn.cursor(scanned)


@settings(max_examples=8, deadline=None)
@given(stop=st.integers(0, 7), placement=st.sampled_from(PLACEMENTS), resumed=st.sampled_from(PLACEMENTS))
def test_resume_from_cursor_in_any_placement_equals_uninterrupted(stop, placement, resumed):
    build = lambda where: dfn.from_arrays(records(19), partitions=2, placement=where, shuffle=True, seed=11)  # noqa: E731
    _, want = walk(build(placement), 6, 8)
    state, _ = walk(build(placement), 6, stop)
    restored = dfn.restore_cursor(build(resumed), dfn.cursor(state))
    _, rest = walk(restored, 6, 8 - stop)
    assert rest == want[stop:]


def test_a_cursor_of_other_partitions_is_refused_naming_them():
    two = dfn.from_arrays(records(10), partitions=2)
    one = dfn.from_arrays(records(10))
    with pytest.raises(ValueError, match=r"partitions \(cursor 1, this state 2\)"):
        dfn.restore_cursor(two, dfn.cursor(one))
    with pytest.raises(ValueError, match=r"partitions \(cursor 2, this state 1\)"):
        dfn.restore_cursor(one, dfn.cursor(two))
    assert "partitions" not in dfn.cursor(one)  # plain cursors are unchanged
    # A partitioned stream moves by multiples of C: a position between them is refused, as for streams.
    with pytest.raises(ValueError, match="13 records into the stream.*not a multiple of partitions=2"):
        dfn.restore_cursor(two, {**dfn.cursor(two), "epoch": 1, "index": 3})
    assert int(dfn.restore_cursor(two, {**dfn.cursor(two), "epoch": 1, "index": 4}).index) == 4


def test_place_keeps_stream_cursor_and_data():
    state = dfn.from_arrays(records(17), partitions=3, shuffle=True, seed=2)
    state, _ = walk(state, 6, 2)
    _, want = walk(state, 6, 4)
    for placement in PLACEMENTS:
        moved = dfn.place(state, placement)
        assert moved.placement.kind == placement and dfn.cursor(moved) == dfn.cursor(state)
        _, got = walk(moved, 6, 4)
        assert got == want, placement
        chex.assert_trees_all_equal(jax.tree.map(np.asarray, dfn.collect_to_array(moved)), records(17))
    assert dfn.place(state, "device") is state


def test_partitioned_data_is_padded_per_partition():
    state = dfn.from_arrays({"x": np.arange(10, dtype=np.int32) + 1}, partitions=3, placement="partitioned")
    # L = 4 rows per partition; partitions [0, 3) and [3, 6) end in one unused row
    assert np.asarray(state.data["x"]).tolist() == [1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 10]


def test_get_batch_at_follows_the_partitioned_stream():
    state = dfn.from_arrays(records(13), partitions=2, placement="partitioned", shuffle=True, seed=1)
    _, want = walk(state, 4, 5)
    assert [np.asarray(dfn.get_batch_at(state, 4 * k, 4)["x"]).tolist() for k in range(5)] == want
    jitted = jax.jit(lambda s, start: dfn.get_batch_at(s, start, 4)["x"])
    assert np.asarray(jitted(state, 8)).tolist() == want[2]
    with pytest.raises(ValueError, match="multiple of partitions=2"):
        dfn.get_batch_at(state, 3, 4)


def test_host_placement_keeps_numpy_and_refuses_jit():
    state = dfn.from_arrays(records(8), placement="host")
    assert isinstance(state.data["x"], np.ndarray)
    _, batch = dfn.get_batch(state, 4)
    assert isinstance(batch["x"], jax.Array) and batch["x"].tolist() == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="placement='host'.*dfn.place"):
        jax.jit(lambda s: dfn.get_batch(s, 4))(state)


def test_bad_options_name_the_fix():
    with pytest.raises(ValueError, match="placement must be one of"):
        dfn.from_arrays(records(4), placement="gpu")
    with pytest.raises(TypeError, match="placement must be a str"):
        dfn.from_arrays(records(4), placement=None)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        dfn.from_arrays(records(4), placement="replicated", mesh="data")
    with pytest.raises(ValueError, match="takes no mesh"):
        dfn.from_arrays(records(4), mesh=jax.make_mesh((1,), ("data",)))
    with pytest.raises(TypeError, match="partitions must be an int"):
        dfn.from_arrays(records(4), partitions=True)
    with pytest.raises(ValueError, match="partitions <= 4"):
        dfn.from_arrays(records(4), partitions=5)
    state = dfn.from_arrays(records(9), partitions=np.int64(3))
    with pytest.raises(ValueError, match=r"size=5 is not a multiple of partitions=3;.*Use size=3 or 6"):
        dfn.get_batch(state, 5)
    with pytest.raises(ValueError, match="a key draws from the whole dataset"):
        dfn.get_batch(state, 3, jax.random.key(0))


def test_from_local_partitions_in_one_process_equals_from_arrays():
    data = records(21)
    span = dfn.local_records(21, 4)
    assert span == range(0, 21)
    local = dfn.from_local_partitions(jax.tree.map(lambda x: x[span.start:span.stop], data), num_records=21,
                                      partitions=4, fingerprint="r21", shuffle=True, seed=8)
    whole = dfn.from_arrays(data, partitions=4, placement="partitioned", shuffle=True, seed=8, fingerprint="r21")
    assert walk(local, 8, 6)[1] == walk(whole, 8, 6)[1]
    assert dfn.cursor(local) == dfn.cursor(whole)
    with pytest.raises(ValueError, match=r"the 21 records \[0, 21\).*dfn.local_records"):
        dfn.from_local_partitions({"x": data["x"][:20]}, num_records=21, partitions=4, fingerprint="r21")
    with pytest.raises(TypeError, match="fingerprint must be a non-empty str"):
        dfn.from_local_partitions({"x": data["x"]}, num_records=21, partitions=4, fingerprint=None)


def test_pipeline_scan_over_a_partitioned_state_equals_its_batches():
    state = dfn.from_arrays(records(22), partitions=2, placement="partitioned", shuffle=True, seed=6)
    _, want = walk(state, 6, 5)
    pipe = dfn.Pipeline(state, (), 6)
    pipe, total, xs = dfn.scan(pipe, lambda carry, batch: (carry + batch["x"].sum(), batch["x"]), 0, 5)
    assert np.asarray(xs).tolist() == want and int(total) == sum(map(sum, want))
    assert dfn.cursor(pipe.source) == dfn.cursor(walk(state, 6, 5)[0])


def test_partition_positions_past_uint32_raise_instead_of_wrapping():
    state = dfn.from_arrays(records(40), partitions=2)
    late = dfn.restore_cursor(state, {**dfn.cursor(state), "epoch": 3 * 10**8, "partitions": 2})
    with pytest.raises(Exception, match="overflow uint32"):
        jax.block_until_ready(dfn.get_batch(late, 2))
    early = dfn.restore_cursor(state, {**dfn.cursor(state), "epoch": 10**8, "partitions": 2})
    # epoch 1e8 of 40 records: each partition of 20 has consumed 2e9 records, a multiple of 20
    assert np.asarray(dfn.get_batch(early, 2)[1]["x"]).tolist() == [0, 20]
