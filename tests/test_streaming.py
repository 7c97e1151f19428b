"""StreamingSource semantics on a small in-process backend: epochs, straddling, end, threads."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time

import chex
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn._shuffle import permute
from datarax_fn._streaming import EndOfStream, StreamingBackend, make_streaming


class ArrayBackend:
    """Records 0..n-1; epoch e visits them in permute(., n, seed, e) order, in chunks."""

    info = {"kind": "test"}

    def __init__(self, n: int = 10, chunk: int = 3, known_length: bool = True, shuffle: bool = True):
        self.n, self.chunk, self.known, self.shuffle = n, chunk, known_length, shuffle
        self.opened: list[tuple[int, int, int]] = []

    def open(self, epoch, seed, start):
        self.opened.append((epoch, seed, start))
        order = permute(np.arange(self.n), self.n, seed, epoch) if self.shuffle else np.arange(self.n)
        for lo in range(start, self.n, self.chunk):
            ids = order[lo : lo + self.chunk]
            yield {"x": ids.astype(np.int32), "y": {"z": (ids * 2).astype(np.float32)}}

    def num_records(self):
        return self.n if self.known else None

    def element_spec(self):
        return {"x": jax.ShapeDtypeStruct((), np.int32), "y": {"z": jax.ShapeDtypeStruct((), np.float32)}}


def expected(n, seed, epochs, shuffle=True):
    return np.concatenate([permute(np.arange(n), n, seed, e) if shuffle else np.arange(n) for e in range(epochs)])


def prefetch_threads(exclude=()):
    return [t for t in threading.enumerate()
            if t.name == "datarax_fn-prefetch" and t.is_alive() and t not in exclude]


def wait_no_threads(exclude=(), timeout=5.0):
    end = time.time() + timeout
    while prefetch_threads(exclude) and time.time() < end:
        gc.collect()
        time.sleep(0.01)
    return prefetch_threads(exclude)


def test_backend_satisfies_protocol():
    assert isinstance(ArrayBackend(), StreamingBackend)


def test_leaves_are_the_cursor_and_backend_is_static():
    state = make_streaming(ArrayBackend(), seed=7)
    leaves = jax.tree.leaves(state)
    assert [x.dtype for x in leaves] == [np.int32, np.int32, np.uint32]
    assert isinstance(state, dfn.StreamingSource)


@settings(max_examples=20)
@given(st.lists(st.integers(1, 13), min_size=1, max_size=6), st.integers(0, 2**32 - 1), st.booleans())
def test_stream_straddles_epochs_and_is_split_independent(sizes, seed, known):
    state = make_streaming(ArrayBackend(10, 3, known), shuffle=True, seed=seed)
    got = []
    for s in sizes:
        state, batch = dfn.get_batch(state, s)
        assert batch["x"].shape == (s,)
        got.append(np.asarray(batch["x"]))
        np.testing.assert_array_equal(np.asarray(batch["y"]["z"]), 2 * got[-1])
    total = sum(sizes)
    want = expected(10, seed, total // 10 + 2)[:total]
    np.testing.assert_array_equal(np.concatenate(got), want)
    state.close()


def test_state_counters_and_old_state_replays():
    s0 = make_streaming(ArrayBackend(10, 4), shuffle=True, seed=3)
    s1, b1 = dfn.get_batch(s0, 7)
    s2, b2 = dfn.get_batch(s1, 7)
    assert (int(s2.epoch), int(s2.position)) == (1, 4)
    _, again = dfn.get_batch(s1, 7)  # an older state gives the same batch again
    chex.assert_trees_all_equal(jax.device_get(again), jax.device_get(b2))
    _, first = dfn.get_batch(s0, 7)
    chex.assert_trees_all_equal(jax.device_get(first), jax.device_get(b1))
    s0.close()


def test_epochs_have_different_orders():
    s = make_streaming(ArrayBackend(50, 8), shuffle=True, seed=1)
    s, a = dfn.get_batch(s, 50)
    s, b = dfn.get_batch(s, 50)
    assert sorted(np.asarray(a["x"]).tolist()) == list(range(50)) and not np.array_equal(a["x"], b["x"])
    s.close()


def test_num_epochs_raises_end_of_stream_and_iterate_stops():
    s = make_streaming(ArrayBackend(10, 3), seed=0, num_epochs=2)
    s, _ = dfn.get_batch(s, 8)
    s, _ = dfn.get_batch(s, 8)
    with pytest.raises(EndOfStream, match="num_epochs=2"):
        dfn.get_batch(s, 8)
    with pytest.raises(StopIteration):
        dfn.get_batch(s, 8)
    s2, _ = dfn.get_batch(s, 4)  # exactly the 4 records left are still served
    assert (int(s2.epoch), int(s2.position)) == (1, 10)
    batches = list(dfn.iterate(make_streaming(ArrayBackend(10, 3, shuffle=False), num_epochs=1), 4))
    assert [np.asarray(b["x"]).tolist() for _, b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_iterate_with_unknown_length_walks_epochs():
    s = make_streaming(ArrayBackend(10, 3, known_length=False, shuffle=False))
    pairs = list(dfn.iterate(s, 4, epochs=2))
    out = [np.asarray(b["x"]) for _, b in pairs]
    assert (int(pairs[-1][0].epoch), int(pairs[-1][0].position)) == (2, 0)
    assert len(out) == 5 and np.concatenate(out).tolist() == (list(range(10)) * 2)
    s.close()


def test_element_spec_peeks_without_consuming_and_len():
    backend = ArrayBackend(10, 3, shuffle=False)
    s = make_streaming(backend)
    spec = dfn.element_spec(s)
    assert spec["x"].shape == () and spec["y"]["z"].dtype == np.float32
    assert len(s) == 10 and dfn.num_records(s) == 10
    _, b = dfn.get_batch(s, 2)
    assert np.asarray(b["x"]).tolist() == [0, 1]
    with pytest.raises(TypeError, match="does not know how many records"):
        len(make_streaming(ArrayBackend(known_length=False)))
    s.close()


def test_errors_under_jit_and_for_keys():
    s = make_streaming(ArrayBackend())
    with pytest.raises(TypeError, match="cannot run under jax.jit"):
        jax.jit(lambda st: dfn.get_batch(st, 2)[1])(s)
    with pytest.raises(TypeError, match="key"):
        dfn.get_batch(s, 2, jax.random.key(0))
    with pytest.raises(TypeError, match="random access"):
        dfn.get_batch_at(s, 0, 2)
    with pytest.raises(TypeError, match="static Python int"):
        dfn.get_batch(s, 2.0)
    s.close()


def test_cursor_round_trip_and_mismatch():
    s = make_streaming(ArrayBackend(10, 3), shuffle=True, seed=5)
    s, _ = dfn.get_batch(s, 6)
    c = dfn.cursor(s)
    assert c == {"kind": "streaming", "epoch": 0, "position": 6, "seed": 5, "shuffle": True,
                 "name": "stream", "fingerprint": None}
    fresh = make_streaming(ArrayBackend(10, 3), shuffle=True, seed=0)
    r = dfn.restore_cursor(fresh, c)
    _, a = dfn.get_batch(r, 5)
    _, b = dfn.get_batch(s, 5)
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))
    with pytest.raises(ValueError, match="shuffle"):
        dfn.restore_cursor(make_streaming(ArrayBackend(10, 3)), c)
    assert dfn.dataset_info(s) == {"kind": "test"}
    s.close()
    r.close()


def test_threads_stop_on_close_and_on_gc():
    before = set(prefetch_threads())
    s = make_streaming(ArrayBackend(1000, 1), prefetch=2)
    s, _ = dfn.get_batch(s, 3)
    assert prefetch_threads(before)
    s.close()
    assert wait_no_threads(before) == []
    s = make_streaming(ArrayBackend(1000, 1), prefetch=2)
    s, _ = dfn.get_batch(s, 3)
    assert prefetch_threads(before)
    del s, _
    assert wait_no_threads(before) == []


def test_backend_errors_reach_the_caller():
    class Broken(ArrayBackend):
        def open(self, epoch, seed, start):
            yield {"x": np.zeros(2, np.int32), "y": {"z": np.zeros(2, np.float32)}}
            raise RuntimeError("disk on fire")

    before = set(prefetch_threads())
    s = make_streaming(Broken())
    with pytest.raises(RuntimeError, match="disk on fire"):
        dfn.get_batch(s, 5)
    assert wait_no_threads(before) == []


def test_interpreter_exit_does_not_hang():
    code = textwrap.dedent(
        """
        import numpy as np, jax, datarax_fn as dfn
        from datarax_fn._streaming import make_streaming
        class Endless:
            info = None
            def open(self, epoch, seed, start):
                while True:
                    yield {"x": np.zeros(4, np.int32)}
            def num_records(self): return None
            def element_spec(self): return {"x": jax.ShapeDtypeStruct((), np.int32)}
        keep = make_streaming(Endless(), prefetch=1)   # producer blocks on a full queue
        keep, b = dfn.get_batch(keep, 3)
        print("ok", b["x"].shape)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ok (3,)" in out.stdout


def test_batches_and_cursor_stay_on_the_host():
    # A device_put per batch cost as much as the rest of get_batch; the stream hands out
    # NumPy batches and keeps its cursor in NumPy scalars, exactly typed.
    state = make_streaming(ArrayBackend(n=10), shuffle=True, seed=1)
    state, batch = dfn.get_batch(state, 4)
    assert isinstance(batch["x"], np.ndarray) and batch["x"].dtype == np.int32
    assert isinstance(batch["y"]["z"], np.ndarray) and batch["y"]["z"].dtype == np.float32
    for leaf, dtype in ((state.epoch, np.int32), (state.position, np.int32), (state.seed, np.uint32)):
        assert isinstance(leaf, np.ndarray) and leaf.shape == () and leaf.dtype == dtype
    np.testing.assert_array_equal(batch["x"], expected(10, 1, 1)[:4])
    moved = list(dfn.prefetch_to_device(iter([batch])))
    assert isinstance(moved[0]["x"], jax.Array)
    np.testing.assert_array_equal(moved[0]["x"], batch["x"])
