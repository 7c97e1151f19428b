"""Text held flat (RaggedRows): batches equal the padded field's, and memory follows the data."""

from __future__ import annotations

import datasets as hd
import jax
import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn._eager.arrays import hash_arrays
from datarax_fn._layout.ragged_rows import RaggedRows, compact

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def _held(state) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(state.data))


def _same(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@settings(max_examples=6, deadline=None)
@given(
    rows=st.lists(st.tuples(texts, st.lists(texts, max_size=4)), min_size=1, max_size=30),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 40),
)
def test_flat_text_batches_equal_the_padded_ones(rows, shuffle, seed, size):
    # A long row among short ones: the padded field is mostly padding, so it is held flat.
    rows = [("x" * 200, ["y" * 50])] + rows
    ds = hd.Dataset.from_dict({"t": [t for t, _ in rows], "ans": [a for _, a in rows]})
    flat = dfn.from_hf(ds, streaming=False, shuffle=shuffle, seed=seed)
    assert isinstance(flat.data["t"], RaggedRows)
    padded = dfn.place(flat, "host")  # the host placement keeps the padded arrays
    assert not isinstance(padded.data["t"], RaggedRows)
    assert dfn.cursor(flat) == dfn.cursor(padded)
    assert dfn.decode_text(flat.data, "t") == [t for t, _ in rows]
    assert dfn.decode_text(flat.data, "ans") == [a for _, a in rows]
    step = jax.jit(lambda s: dfn.get_batch(s, size))
    jitted = flat
    for _ in range(3):  # across an epoch boundary for most sizes
        flat, a = dfn.get_batch(flat, size)
        jitted, j = step(jitted)
        padded, b = dfn.get_batch(padded, size)
        _same(a, b)
        _same(j, b)
    _same(dfn.get_batch_at(flat, 3, size), dfn.get_batch_at(padded, 3, size))


def test_text_held_flat_follows_the_arrow_bytes():
    # Lognormal lengths: the longest row is ~40x the typical one, so padding would hold ~25x the data.
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(3.5, 0.9, 20_000).astype(int), 4000)
    words = ["é", "a", "漢", "bc", " "]
    col = ["".join(rng.choice(words, n)) for n in lengths]
    arrow = pa.array(col, pa.large_string()).nbytes
    state = dfn.from_hf(hd.Dataset.from_dict({"t": col}), streaming=False)
    assert isinstance(state.data["t"], RaggedRows)
    assert _held(state) <= 1.5 * arrow + 4096
    # The digest and the cursor are those of the padded arrays: an old cursor still restores.
    assert dfn.cursor(state) == dfn.cursor(dfn.place(state, "host"))
    assert hash_arrays(state.data) == hash_arrays(dfn.place(state, "host").data)
    _, batch = dfn.get_batch(state, 4)
    assert dfn.decode_text(batch, "t") == col[:4]


def test_nonzero_padding_stays_padded():
    # Values past a length are part of the data here: dropping them would change the batches.
    t = np.zeros((4, 100), np.uint8)
    t[:, :2] = 7
    t[3, 50] = 9  # past row 3's length
    data = {"t": t, "t_length": np.full(4, 2, np.int32)}
    assert compact(t, [data["t_length"]]) is None
    state = dfn.from_arrays(data)
    assert isinstance(state.data["t"], jax.Array)
    _, batch = dfn.get_batch(state, 4)
    assert int(batch["t"][3, 50]) == 9
    data["t"][3, 50] = 0
    state = dfn.from_arrays(data)
    assert isinstance(state.data["t"], RaggedRows)
    _, batch = dfn.get_batch(state, 4)
    np.testing.assert_array_equal(np.asarray(batch["t"]), data["t"])


def test_lengths_out_of_range_stay_padded():
    t = np.zeros((3, 50), np.uint8)
    assert compact(t, [np.array([1, 51, 0], np.int32)]) is None
    assert compact(t, [np.array([1, -1, 0], np.int32)]) is None
    assert isinstance(compact(t, [np.array([1, 2, 0], np.int32)]), RaggedRows)


def test_flat_text_in_keyed_batches_statistics_and_collect():
    col = ["a" * 300] + [str(i) for i in range(40)]
    state = dfn.from_hf(hd.Dataset.from_dict({"t": col, "y": list(range(41))}), streaming=False)
    host = dfn.place(state, "host")
    assert isinstance(state.data["t"], RaggedRows)
    key = jax.random.key(5)
    keyed = dfn.get_batch(state, 7, key=key)[1]
    ids = np.asarray(keyed["y"])
    assert dfn.decode_text(keyed, "t") == [col[i] for i in ids]
    collected = dfn.collect_to_array(state)
    np.testing.assert_array_equal(np.asarray(collected["t"]), host.data["t"])
    back = dfn.place(host, "device")
    assert isinstance(back.data["t"], RaggedRows)  # back on one device: held flat again
    _same(dfn.get_batch(back, 9)[1], dfn.get_batch(state, 9)[1])
