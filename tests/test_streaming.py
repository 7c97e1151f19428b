"""StreamingSource semantics on a small in-process backend: epochs, straddling, end, threads."""

from __future__ import annotations

import subprocess
import sys
import threading

import chex
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from hf_fixtures import hf_dataset, parquet_folder  # noqa: F401
from conftest import RangeBackend, live_threads, run_fresh, run_fresh_many, take, wait_threads_gone
from datarax_fn import EndOfStream, StreamingBackend, permute
from datarax_fn._layout.partitions import partition_offsets, partition_seed


def expected(n, seed, epochs, shuffle=True):
    return np.concatenate([permute(np.arange(n), n, seed, e) if shuffle else np.arange(n) for e in range(epochs)])


def test_backend_satisfies_protocol():
    assert isinstance(RangeBackend(), StreamingBackend)


def test_leaves_are_the_cursor_and_backend_is_static():
    state = dfn.from_backend(RangeBackend(), seed=7)
    leaves = jax.tree.leaves(state)
    assert [x.dtype for x in leaves] == [np.int32, np.int32, np.uint32]
    assert (int(state.index), int(state.epoch), int(state.seed)) == (0, 0, 7)
    assert isinstance(state, dfn.StreamingSource)


@settings(max_examples=20)
@given(st.lists(st.integers(1, 13), min_size=1, max_size=6), st.integers(0, 2**32 - 1), st.booleans())
def test_stream_straddles_epochs_and_is_split_independent(sizes, seed, known):
    state = dfn.from_backend(RangeBackend(10, 3, known), shuffle=True, seed=seed)
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
    s0 = dfn.from_backend(RangeBackend(10, 4), shuffle=True, seed=3)
    s1, b1 = dfn.get_batch(s0, 7)
    s2, b2 = dfn.get_batch(s1, 7)
    assert (int(s2.epoch), int(s2.index)) == (1, 4)
    _, again = dfn.get_batch(s1, 7)  # an older state gives the same batch again
    chex.assert_trees_all_equal(jax.device_get(again), jax.device_get(b2))
    _, first = dfn.get_batch(s0, 7)
    chex.assert_trees_all_equal(jax.device_get(first), jax.device_get(b1))
    s0.close()


def test_epochs_have_different_orders():
    s = dfn.from_backend(RangeBackend(50, 8), shuffle=True, seed=1)
    s, a = dfn.get_batch(s, 50)
    s, b = dfn.get_batch(s, 50)
    assert sorted(np.asarray(a["x"]).tolist()) == list(range(50)) and not np.array_equal(a["x"], b["x"])
    s.close()


def test_num_epochs_raises_end_of_stream_and_iterate_stops():
    s = dfn.from_backend(RangeBackend(10, 3), seed=0, num_epochs=2)
    s, _ = dfn.get_batch(s, 8)
    s, _ = dfn.get_batch(s, 8)
    with pytest.raises(EndOfStream, match="num_epochs=2"):
        dfn.get_batch(s, 8)
    assert not issubclass(EndOfStream, StopIteration)

    def batches(state):  # PEP 479 turns a StopIteration escaping a generator into RuntimeError
        while True:
            state, batch = dfn.get_batch(state, 8)
            yield batch

    with pytest.raises(EndOfStream):
        list(batches(s))
    s2, _ = dfn.get_batch(s, 4)  # exactly the 4 records left are still served
    assert (int(s2.epoch), int(s2.index)) == (1, 10)
    batches = list(dfn.iterate(dfn.from_backend(RangeBackend(10, 3, shuffle=False), num_epochs=1), 4))
    assert [np.asarray(b["x"]).tolist() for _, b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_iterate_with_unknown_length_walks_epochs():
    s = dfn.from_backend(RangeBackend(10, 3, known_length=False, shuffle=False))
    pairs = list(dfn.iterate(s, 4, epochs=2))
    out = [np.asarray(b["x"]) for _, b in pairs]
    assert (int(pairs[-1][0].epoch), int(pairs[-1][0].index)) == (2, 0)
    assert len(out) == 5 and np.concatenate(out).tolist() == (list(range(10)) * 2)
    s.close()


def test_element_spec_peeks_without_consuming_and_len():
    backend = RangeBackend(10, 3, shuffle=False)
    s = dfn.from_backend(backend)
    spec = dfn.element_spec(s)
    assert spec["x"].shape == () and spec["y"]["z"].dtype == np.float32
    assert len(s) == 10 and dfn.num_records(s) == 10
    _, b = dfn.get_batch(s, 2)
    assert np.asarray(b["x"]).tolist() == [0, 1]
    unknown = dfn.from_backend(RangeBackend(known_length=False))
    assert dfn.num_records(unknown) is None and bool(unknown)
    with pytest.raises(TypeError, match="length is unknown"):
        len(unknown)
    s.close()


def test_errors_under_jit_and_for_keys():
    s = dfn.from_backend(RangeBackend())
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
    s = dfn.from_backend(RangeBackend(10, 3), shuffle=True, seed=5)
    s, _ = dfn.get_batch(s, 6)
    c = dfn.cursor(s)
    assert c == {"version": 1, "kind": "streaming", "index": 6, "epoch": 0, "seed": 5, "shuffle": True,
                 "fingerprint": "range:10:True:"}
    fresh = dfn.from_backend(RangeBackend(10, 3), shuffle=True, seed=5)
    r = dfn.restore_cursor(fresh, c)
    _, a = dfn.get_batch(r, 5)
    _, b = dfn.get_batch(s, 5)
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))
    with pytest.raises(ValueError, match=r"shuffle \(cursor True, this state False\)"):
        dfn.restore_cursor(dfn.from_backend(RangeBackend(10, 3), seed=5), c)
    with pytest.raises(ValueError, match=r"seed \(cursor 5, this state 0\)"):
        dfn.restore_cursor(dfn.from_backend(RangeBackend(10, 3), shuffle=True), c)
    with pytest.raises(ValueError, match="fingerprint"):
        dfn.restore_cursor(dfn.from_backend(RangeBackend(11, 3), shuffle=True, seed=5), c)
    assert dfn.dataset_info(s) == {"kind": "test"}
    s.close()
    r.close()


def test_threads_stop_on_close_and_on_gc():
    before = set(live_threads("datarax_fn-prefetch", ))
    s = dfn.from_backend(RangeBackend(1000, 1), prefetch=2)
    s, _ = dfn.get_batch(s, 3)
    assert live_threads("datarax_fn-prefetch", before)
    s.close()
    assert wait_threads_gone("datarax_fn-prefetch", before) == []
    s = dfn.from_backend(RangeBackend(1000, 1), prefetch=2)
    s, _ = dfn.get_batch(s, 3)
    assert live_threads("datarax_fn-prefetch", before)
    del s, _
    assert wait_threads_gone("datarax_fn-prefetch", before) == []


def test_backend_errors_reach_the_caller():
    class Broken(RangeBackend):
        def open(self, epoch, seed, start):
            yield {"x": np.zeros(2, np.int32), "y": {"z": np.zeros(2, np.float32)}}
            raise RuntimeError("disk on fire")

    before = set(live_threads("datarax_fn-prefetch", ))
    s = dfn.from_backend(Broken())
    with pytest.raises(RuntimeError, match="disk on fire"):
        dfn.get_batch(s, 5)
    assert wait_threads_gone("datarax_fn-prefetch", before) == []


def test_interpreter_exit_does_not_hang():
    out = run_fresh(
        """
        import numpy as np, jax, datarax_fn as dfn
        class Endless:
            def open(self, epoch, seed, start):
                while True:
                    yield {"x": np.zeros(4, np.int32)}
            def num_records(self): return None
            def element_spec(self): return {"x": jax.ShapeDtypeStruct((), np.int32)}
            def fingerprint(self): return "endless"
        keep = dfn.from_backend(Endless(), prefetch=1)   # producer blocks on a full queue
        keep, b = dfn.get_batch(keep, 3)
        print("ok", b["x"].shape)
        """,
        timeout=60,
    )
    assert "ok (3,)" in out.stdout


def _numbers_parquet(folder, n):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": np.arange(n), "y": np.arange(n) * 0.5}), str(folder / "train.parquet"),
                   row_group_size=n // 3)
    return folder


def test_processes_that_streamed_parquet_exit_cleanly_under_load(tmp_path):
    # A reader thread still inside pyarrow while pyarrow's exit handlers ran aborted the
    # process ("terminate called without an active exception", exit -6). The old reader of
    # a reopened stream (a restored cursor) was left reading after a 2 s join and was no
    # longer waited for at exit: under load, 1 run in 10 of this script aborted. CI runs 8; before a
    # change to the reader or its threads, run it 50+ times (the last check: 100 runs, no abort).
    folder = _numbers_parquet(tmp_path / "data", 60_000)
    code = f"""
        import datarax_fn as dfn
        s0 = dfn.from_hf({str(folder)!r}, split="train", streaming=True, shuffle=True, shuffle_buffer_size=6000,
                         chunk_size=6000)
        s, b = dfn.get_batch(s0, 16)
        c = dfn.cursor(s)
        for _ in range(3):
            dfn.get_batch(s0, 16)  # reopens: the reader at index 16 is closed mid-read
            s, b = dfn.get_batch(dfn.restore_cursor(s0, c), 16)
        print("streamed", b["x"].shape)
        """
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the load: one more busy core
    try:
        runs = run_fresh_many(code, 8, parallel=2, env={"HF_HOME": str(tmp_path / "hf")}, timeout=300)
    finally:
        busy.kill()
        busy.wait()
    failed = [(r.returncode, r.stderr[-500:]) for r in runs if r.returncode or "streamed (16,)" not in r.stdout]
    assert failed == []
    assert not any("terminate called" in r.stderr for r in runs)


def test_reader_threads_finish_before_exit_handlers_run():
    # The construction behind a clean exit: reader threads are not daemons, so the
    # interpreter joins them, their reads and their backend's cleanup, before any atexit
    # handler (pyarrow's, TensorFlow's) runs, with no timeout after which one is abandoned.
    out = run_fresh(
        """
        import atexit, threading, time, numpy as np, jax, datarax_fn as dfn
        atexit.register(lambda: print("atexit", flush=True))
        class Slow:
            def open(self, epoch, seed, start):
                try:
                    while True:
                        time.sleep(0.3)  # a read in progress when the main thread ends
                        yield {"x": np.zeros(4, np.int32)}
                finally:
                    print("backend closed", flush=True)
            def num_records(self): return None
            def element_spec(self): return {"x": jax.ShapeDtypeStruct((), np.int32)}
            def fingerprint(self): return "slow"
        keep = dfn.from_backend(Slow(), prefetch=1)
        keep, b = dfn.get_batch(keep, 3)
        print("daemon", [t.daemon for t in threading.enumerate() if t.name.startswith("datarax_fn")])
        """,
        timeout=120,
    )
    lines = out.stdout.split()
    assert "daemon [False]" in out.stdout
    assert lines.index("closed") < lines.index("atexit")


def test_close_from_another_thread_returns_while_the_backend_blocks():
    # A watchdog must be able to stop a stream whose backend hangs (a stalled filesystem):
    # close() used to wait for the lock that the blocked get_batch held, forever.
    entered, release = threading.Event(), threading.Event()

    class Stalled(RangeBackend):
        def open(self, epoch, seed, start):
            yield {"x": np.arange(2, dtype=np.int32), "y": {"z": np.zeros(2, np.float32)}}
            entered.set()
            release.wait()  # the read blocks until the test releases it
            yield {"x": np.array([99, 99], np.int32), "y": {"z": np.zeros(2, np.float32)}}

    before = set(live_threads("datarax_fn-prefetch"))
    s = dfn.from_backend(Stalled(), prefetch=1)
    got: list = []

    def read():
        try:
            got.append(dfn.get_batch(s, 4))
        except Exception as err:  # noqa: BLE001 (the outcome is what the test checks)
            got.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    assert entered.wait(60)
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join(60)
    try:
        assert not closer.is_alive(), "close() did not return while the backend blocked"
        reader.join(60)
        assert not reader.is_alive()
        assert isinstance(got[0], dfn.StreamClosed) and "closed" in str(got[0])
    finally:
        release.set()
    # The blocked read's result is discarded and its thread ends once the backend returns.
    assert wait_threads_gone("datarax_fn-prefetch", before, timeout=30) == []
    # The state still works: reading again reopens the backend.
    release.set()
    _, batch = dfn.get_batch(s, 4)
    assert batch["x"].tolist() == [0, 1, 99, 99]
    s.close()


def test_batches_and_cursor_stay_on_the_host():
    # A device_put per batch cost as much as the rest of get_batch; the stream hands out
    # NumPy batches and keeps its cursor in NumPy scalars, exactly typed.
    state = dfn.from_backend(RangeBackend(n=10), shuffle=True, seed=1)
    state, batch = dfn.get_batch(state, 4)
    assert isinstance(batch["x"], np.ndarray) and batch["x"].dtype == np.int32
    assert isinstance(batch["y"]["z"], np.ndarray) and batch["y"]["z"].dtype == np.float32
    for leaf, dtype in ((state.epoch, np.int32), (state.index, np.int32), (state.seed, np.uint32)):
        assert isinstance(leaf, np.ndarray) and leaf.shape == () and leaf.dtype == dtype
    np.testing.assert_array_equal(batch["x"], expected(10, 1, 1)[:4])
    moved = list(dfn.prefetch_to_device(iter([batch])))
    assert isinstance(moved[0]["x"], jax.Array)
    np.testing.assert_array_equal(moved[0]["x"], batch["x"])


# ----------------------------------------------------------------------------- partitions


def partitioned(n, c, seed, sizes, shuffle=True, total=0):
    """Returns the record ids of batches of ``sizes`` from ``total`` on, by the canonical-partition definition."""
    off = partition_offsets(n, c)
    out = []
    for size in sizes:
        q = np.arange(total // c, total // c + size // c)
        for k in range(c):
            length, s = int(off[k + 1] - off[k]), partition_seed(seed, k, c)
            e, p = q // length, q % length
            out.append(off[k] + (permute(p, length, s, e) if shuffle else p))
        total += size
    return np.concatenate(out)


@settings(max_examples=20)
@given(st.data(), st.integers(1, 6), st.integers(0, 2**32 - 1), st.booleans())
def test_partitioned_batches_follow_the_canonical_definition(data, c, seed, shuffle):
    n = data.draw(st.integers(c, 40))
    sizes = data.draw(st.lists(st.integers(1, 5).map(lambda k: k * c), min_size=1, max_size=6))
    state = dfn.from_backend(RangeBackend(n, 3, shuffle=shuffle), shuffle=shuffle, seed=seed, partitions=c)
    state, batch = take(state, sizes)
    want = partitioned(n, c, seed, sizes, shuffle)
    np.testing.assert_array_equal(batch["x"], want)
    np.testing.assert_array_equal(batch["y"]["z"], 2 * want)
    assert (int(state.epoch), int(state.index)) == divmod(sum(sizes), n)
    if c == 1:  # one partition is exactly the unpartitioned stream
        np.testing.assert_array_equal(want, expected(n, seed, sum(sizes) // n + 1, shuffle)[: sum(sizes)])
    state.close()


def test_partitions_drift_when_records_are_not_a_multiple():
    # 26 records in partitions of 6, 7, 6, 7: the fourth batch of 8 starts epoch 1 of the short
    # partitions (records 0.. and 13..) while the long ones give the last record of their epoch 0.
    state = dfn.from_backend(RangeBackend(26, 4, shuffle=False), partitions=4)
    state, batch = take(state, [8, 8, 8, 8])
    assert batch["x"][24:].tolist() == [0, 1, 12, 6, 13, 14, 25, 19]
    assert (int(state.epoch), int(state.index)) == (1, 6)


def test_partitioned_end_of_stream_is_set_by_the_shortest_partition():
    state = dfn.from_backend(RangeBackend(26, 4), seed=3, shuffle=True, num_epochs=1, partitions=4)
    state, batch = take(state, [8, 8, 8])
    with pytest.raises(EndOfStream, match="shortest partition has 0 records left and a batch of 4 takes 1"):
        dfn.get_batch(state, 4)
    # Every record served once: the last records of the two long partitions' epoch are dropped.
    last = {off + int(permute(6, 7, partition_seed(3, c, 4), 0)) for c, off in ((1, 6), (3, 19))}
    assert sorted(batch["x"].tolist()) == sorted(set(range(26)) - last)
    pairs = list(dfn.iterate(dfn.from_backend(RangeBackend(26, 4), num_epochs=1, partitions=2), 4))
    assert len(pairs) == 6 and (int(pairs[-1][0].epoch), int(pairs[-1][0].index)) == (0, 24)


def test_one_reader_thread_for_many_partitions():
    before = set(live_threads("datarax_fn-prefetch"))
    state = dfn.from_backend(RangeBackend(256, 2), seed=1, shuffle=True, partitions=64)
    state, batch = take(state, [128, 128, 128])
    assert len(live_threads("datarax_fn-prefetch", before)) == 1
    np.testing.assert_array_equal(batch["x"], partitioned(256, 64, 1, [128] * 3))
    state.close()
    assert wait_threads_gone("datarax_fn-prefetch", before) == []


def test_partitioned_resume_opens_each_partition_at_its_position():
    backend = RangeBackend(26, 4)
    s0 = dfn.from_backend(backend, seed=9, shuffle=True, partitions=4)
    s1, _ = take(s0, [8, 8, 8])
    s2, b2 = dfn.get_batch(s1, 8)
    backend.opened.clear()
    _, again = dfn.get_batch(s1, 8)  # an older state reopens every partition at its own position
    chex.assert_trees_all_equal(again, b2)
    seeds = [partition_seed(9, c, 4) for c in range(4)]
    assert backend.opened[:4] == [(0, 4, 1, seeds[0], 0), (1, 4, 0, seeds[1], 6), (2, 4, 1, seeds[2], 0),
                                  (3, 4, 0, seeds[3], 6)]
    s0.close()


def test_partitioned_cursor_names_partitions_and_restores_exactly():
    s = dfn.from_backend(RangeBackend(26, 4), shuffle=True, seed=5, partitions=2)
    s, _ = take(s, [6, 6, 6, 6, 6])
    c = dfn.cursor(s)
    assert c == {"version": 1, "kind": "streaming", "index": 4, "epoch": 1, "seed": 5, "shuffle": True,
                 "fingerprint": "range:26:True:", "partitions": 2}
    r = dfn.restore_cursor(dfn.from_backend(RangeBackend(26, 4), shuffle=True, seed=5, partitions=2), c)
    _, a = dfn.get_batch(r, 4)
    np.testing.assert_array_equal(a["x"], partitioned(26, 2, 5, [4], total=30))
    with pytest.raises(ValueError, match=r"partitions \(cursor 2, this state 1\)"):
        dfn.restore_cursor(dfn.from_backend(RangeBackend(26, 4), shuffle=True, seed=5), c)
    one = dfn.cursor(dfn.from_backend(RangeBackend(26, 4), shuffle=True, seed=5))
    with pytest.raises(ValueError, match=r"partitions \(cursor 1, this state 2\)"):
        dfn.restore_cursor(r, one)
    with pytest.raises(ValueError, match="not a multiple of partitions=2"):
        dfn.restore_cursor(r, {**c, "index": 5})
    s.close()
    r.close()


def test_partitioned_option_errors_name_fixes_that_work():
    class NoPartitions(RangeBackend):
        open_partition = None

    with pytest.raises(TypeError, match="has no open_partition.*Use partitions=1"):
        dfn.from_backend(NoPartitions(10), partitions=2)
    with pytest.raises(ValueError, match="use partitions=1"):
        dfn.from_backend(RangeBackend(10, known_length=False), partitions=2)
    with pytest.raises(ValueError, match="use partitions <= 10"):
        dfn.from_backend(RangeBackend(10), partitions=11)
    with pytest.raises(TypeError, match="partitions must be an int"):
        dfn.from_backend(RangeBackend(10), partitions=True)
    state = dfn.from_backend(RangeBackend(10), partitions=np.int64(4))
    with pytest.raises(ValueError, match="Use size=4 or 8"):
        dfn.get_batch(state, 6)
    _, batch = dfn.get_batch(state, 8)
    np.testing.assert_array_equal(batch["x"], partitioned(10, 4, 0, [8]))
    state.close()


def test_partition_of_the_wrong_length_is_an_error_naming_the_backend():
    class Short(RangeBackend):
        def open_partition(self, partition, partitions, epoch, seed, start):
            for chunk in super().open_partition(partition, partitions, epoch, seed, start):
                yield jax.tree.map(lambda x: x[:1], chunk)

    state = dfn.from_backend(Short(12, 3), partitions=2)
    with pytest.raises(ValueError, match=r"Short.open_partition\(0, 2, epoch=0, ...\) yielded 2 records"):
        take(state, [4, 4])


def test_global_batch_in_one_process_equals_get_batch():
    for c in (1, 2):
        state = dfn.from_backend(RangeBackend(10), shuffle=True, seed=4, partitions=c)
        g_state, g = dfn.get_global_batch(state, 4, dfn.data_sharding())
        l_state, b = dfn.get_batch(state, 4)
        assert isinstance(g["x"], jax.Array) and g["x"].sharding == dfn.data_sharding()
        chex.assert_trees_all_equal(jax.device_get(g), b)
        assert dfn.cursor(g_state) == dfn.cursor(l_state)
        state.close()


def test_a_partition_error_surfaces_only_when_its_records_are_needed():
    class Failing(RangeBackend):
        def open_partition(self, partition, partitions, epoch, seed, start):
            if partition == 1 and epoch == 1:
                raise RuntimeError("partition 1 lost its disk")
            return super().open_partition(partition, partitions, epoch, seed, start)

    before = set(live_threads("datarax_fn-prefetch"))
    state = dfn.from_backend(Failing(12, 2), shuffle=True, seed=2, partitions=2)
    # The reader runs ahead into partition 1's failing epoch; the batches before it are served.
    state, batch = take(state, [4, 4, 4])
    np.testing.assert_array_equal(batch["x"], partitioned(12, 2, 2, [4, 4, 4]))
    with pytest.raises(RuntimeError, match="partition 1 lost its disk"):
        dfn.get_batch(state, 4)
    assert wait_threads_gone("datarax_fn-prefetch", before) == []


@pytest.mark.parametrize("c", [1, 16])
def test_read_ahead_is_one_budget_for_all_partitions(c):
    # The queue used to hold `prefetch` chunks plus one per partition: memory grew with C.
    produced: list = []

    class Counting(RangeBackend):
        def _records(self, *args):
            for chunk in super()._records(*args):
                produced.append(len(chunk["x"]))
                yield chunk

    s = dfn.from_backend(Counting(640, 2), partitions=c, prefetch=3, num_workers=1)
    s, _ = dfn.get_batch(s, 16)
    reader = s.backend.reader
    for _ in range(3000):  # until the reader waits on its full queue (bounded)
        if reader.prefetcher._q.full():
            break
        threading.Event().wait(0.01)
    assert reader.prefetcher._q.maxsize == 3
    # The batch's 8 chunks, each partition's current chunk, the budget of 3, and the one chunk
    # the thread holds (at c = 16 the old queue let 36 be read).
    assert len(produced) <= 8 + c + 3 + 1
    s.close()
