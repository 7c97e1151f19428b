"""dfn.mix: proportions in every window, jit == eager == stream, exact resume, stop modes, errors."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import RangeBackend, run_fresh
from hypothesis import given, settings
from hypothesis import strategies as st
from process_group import run_group

import datarax_fn as dfn


def corpus(n: int, base: int, shuffle: bool = False, seed: int = 0) -> dfn.EagerSource:
    return dfn.from_arrays({"id": base + np.arange(n, dtype=np.int32),
                            "x": np.full((n, 2), base, np.float32)}, shuffle=shuffle, seed=seed)


class Counting:
    """A stream of ids ``base .. base + n - 1`` read on the host (no compile per batch size)."""

    def __init__(self, n: int, base: int):
        self.n, self.base = n, base

    def open(self, epoch, seed, start):
        for lo in range(start, self.n, 16):
            ids = self.base + np.arange(lo, min(lo + 16, self.n), dtype=np.int32)
            yield {"id": ids, "x": np.full((len(ids), 2), self.base, np.float32)}

    def num_records(self):
        return self.n

    def element_spec(self):
        return {"id": jax.ShapeDtypeStruct((), np.int32), "x": jax.ShapeDtypeStruct((2,), np.float32)}

    def fingerprint(self):
        return f"counting-{self.n}-{self.base}"


def stream(n: int, base: int) -> dfn.StreamingSource:
    return dfn.from_backend(Counting(n, base))


def walk(state, size: int, steps: int):
    out = []
    for _ in range(steps):
        state, batch = dfn.get_batch(state, size)
        out.append(np.asarray(batch["id"]))
    return state, np.concatenate(out)


@pytest.fixture(scope="module")
def token_parquet(tmp_path_factory):
    """Two HF parquet corpora of token lists: 200 rows (ids 0..199) and 100 rows (ids 1000..1099)."""
    import datasets as hd

    root = tmp_path_factory.mktemp("mix")
    features = hd.Features({"id": hd.Value("int32"), "tokens": hd.List(hd.Value("int32"))})
    for name, n, base in (("a", 200, 0), ("b", 100, 1000)):
        (root / name).mkdir()
        rows = {"id": [base + i for i in range(n)], "tokens": [list(range(base, base + i % 7 + 1)) for i in range(n)]}
        hd.Dataset.from_dict(rows, features=features).to_parquet(str(root / name / "train.parquet"))
    return root


def test_every_window_holds_each_source_by_its_quota_and_10k_records_hold_the_weights():
    weights = [0.5, 0.3, 0.2]
    state = dfn.mix([corpus(500, 0), corpus(300, 1000), corpus(200, 2000, shuffle=True)], weights, seed=7)
    _, ids = walk(state, 500, 20)
    source = ids // 1000
    windows = source.reshape(-1, 100)
    assert [np.bincount(w, minlength=3).tolist() for w in windows] == [[50, 30, 20]] * 100
    share = np.bincount(source, minlength=3) / len(source)
    assert np.all(np.abs(share - weights) <= 0.02)
    # Each source serves its own stream in order: the first 5000 of source 0 are 0..499 cycled.
    assert ids[source == 0].tolist() == (np.arange(5000) % 500).tolist()
    assert sorted(ids[source == 2][:200].tolist()) == list(range(2000, 2200))


@settings(max_examples=15, deadline=None)
@given(weights=st.lists(st.floats(0.05, 1.0), min_size=2, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_proportions_hold_for_any_weights(weights, seed):
    sources = [stream(50, 1000 * k) for k in range(len(weights))]
    state = dfn.mix(sources, weights, seed=seed, window=1000)
    _, ids = walk(state, 1000, 10)
    share = np.bincount(ids // 1000, minlength=len(weights)) / len(ids)
    assert np.all(np.abs(share - np.asarray(weights) / sum(weights)) <= 0.02)


def test_the_layout_is_a_function_of_the_seed():
    a, b = corpus(40, 0), corpus(40, 1000)
    first = walk(dfn.mix([a, b], [1, 1], seed=1), 20, 2)[1]
    assert np.array_equal(first, walk(dfn.mix([a, b], [1, 1], seed=1), 20, 2)[1])
    assert not np.array_equal(first, walk(dfn.mix([a, b], [1, 1], seed=2), 20, 2)[1])


def test_jit_and_scan_give_the_eager_stream():
    state = dfn.mix([corpus(70, 0, shuffle=True, seed=3), corpus(30, 1000)], [0.7, 0.3], seed=5, window=10)
    _, expected = walk(state, 16, 6)
    step = jax.jit(lambda s: dfn.get_batch(s, 16))
    s, got = state, []
    for _ in range(6):
        s, b = step(s)
        got.append(np.asarray(b["id"]))
    assert np.array_equal(np.concatenate(got), expected)
    _, scanned = jax.lax.scan(lambda s, _: dfn.get_batch(s, 16), state, None, length=6)
    assert np.array_equal(np.asarray(scanned["id"]).reshape(-1), expected)
    _, b = dfn.jit_step(lambda s: dfn.get_batch(s, 16))(state)
    assert np.array_equal(np.asarray(b["id"]), expected[:16])


def test_get_batch_at_reads_ahead_without_moving():
    state = dfn.mix([corpus(70, 0, shuffle=True), corpus(30, 1000)], [0.7, 0.3], seed=5, window=10)
    state, _ = dfn.get_batch(state, 13)
    _, ahead = walk(state, 9, 4)
    assert np.asarray(dfn.get_batch_at(state, 13 + 18, 9)["id"]).tolist() == ahead[18:27].tolist()
    at = jax.jit(lambda s, i: dfn.get_batch_at(s, i, 9))(state, 13 + 9)
    assert np.asarray(at["id"]).tolist() == ahead[9:18].tolist()


@settings(max_examples=12, deadline=None)
@given(sizes=st.lists(st.sampled_from([1, 7, 30]), min_size=2, max_size=5), seed=st.integers(0, 2**32 - 1),
       on_host=st.booleans())
def test_resume_from_any_cursor_continues_the_uninterrupted_stream(sizes, seed, on_host):
    # Sizes from a small set: an eager mixture compiles once per batch size.
    def build():
        last = stream(5, 2000) if on_host else corpus(5, 2000)
        return dfn.mix([corpus(23, 0, shuffle=True, seed=1), corpus(11, 1000), last], [3, 2, 1],
                       seed=seed, window=12)

    _, whole = walk(build(), 7, 40)
    s, got = build(), []
    for size in sizes:
        s = dfn.restore_cursor(build(), json.loads(json.dumps(dfn.cursor(s))))
        s, b = dfn.get_batch(s, size)
        got.append(np.asarray(b["id"]))
    got = np.concatenate(got)
    assert np.array_equal(got, whole[: len(got)])


def test_streams_eager_sources_and_both_mixed_give_one_stream(token_parquet):
    def load(name, streaming):
        return dfn.from_hf(str(token_parquet / name), split="train", streaming=streaming, max_length=8)

    streams = dfn.mix([load("a", True), load("b", True)], [2, 1], seed=3)
    eager = dfn.mix([load("a", False), load("b", False)], [2, 1], seed=3)
    both = dfn.mix([load("a", False), load("b", True)], [2, 1], seed=3)
    ids = []
    for _ in range(5):
        streams, b1 = dfn.get_batch(streams, 64)
        eager, b2 = dfn.get_batch(eager, 64)
        both, b3 = dfn.get_batch(both, 64)
        for k in b1:
            assert np.array_equal(b1[k], np.asarray(b2[k])) and np.array_equal(b1[k], b3[k]), k
        ids += b1["id"].tolist()
    assert (np.asarray(ids[:300]) >= 1000).sum() == 99  # 33 of each window of 100
    with pytest.raises(TypeError, match="holds a stream"):
        jax.jit(lambda s: dfn.get_batch(s, 4))(streams)


def test_a_fresh_process_restores_the_same_stream(token_parquet, tmp_path):
    # Process 1 walks 150 records of a shuffled stream mixture and of an eager one, saves both
    # cursors as JSON and reads on; process 2 restores them and must read the same records.
    saved = tmp_path / "cursors.json"
    code = f"""
        import json, os, numpy as np, datarax_fn as dfn
        def build(streaming):
            a = dfn.from_hf({str(token_parquet / "a")!r}, split="train", streaming=streaming, max_length=8,
                            shuffle=True, seed=4)
            b = dfn.from_hf({str(token_parquet / "b")!r}, split="train", streaming=streaming, max_length=8)
            return dfn.mix([a, b], [0.6, 0.4], seed=9, window=10)
        restore = os.path.exists({str(saved)!r})
        cursors = json.load(open({str(saved)!r})) if restore else {{}}
        out = {{}}
        for mode in ("stream", "eager"):
            s = build(mode == "stream")
            if restore:
                s = dfn.restore_cursor(s, cursors[mode])
            else:
                for _ in range(3):
                    s, _ = dfn.get_batch(s, 50)
                cursors[mode] = dfn.cursor(s)
            s, b = dfn.get_batch(s, 120)
            out[mode] = np.asarray(b["id"]).tolist()
        json.dump(cursors, open({str(saved)!r}, "w"))
        print(json.dumps(out))
        """
    first = json.loads(run_fresh(code).stdout.strip().splitlines()[-1])
    again = json.loads(run_fresh(code).stdout.strip().splitlines()[-1])
    assert again == first and len(first["stream"]) == 120 and len(first["eager"]) == 120


def test_stop_modes_set_the_epoch_and_end_the_stream():
    small, large = corpus(10, 0), corpus(40, 1000)
    first = dfn.mix([small, large], [1, 1], stop="first_exhausted", window=4)
    assert dfn.num_records(first) == 20  # 5 whole windows, each taking 2 of the 10 small records
    batches = [np.asarray(b["id"]) for _, b in dfn.iterate(first, 8)]
    assert len(batches) == 2  # 16 records; the 4 left before the end make no short batch
    state, _ = dfn.get_batch(first, 16)
    with pytest.raises(dfn.EndOfStream, match="first_exhausted"):
        dfn.get_batch(state, 8)
    every = dfn.mix([small, large], [1, 1], stop="all_exhausted", window=4)
    assert dfn.num_records(every) == 80
    ids = np.concatenate([np.asarray(b["id"]) for _, b in dfn.iterate(every, 10)])
    assert sorted(set(ids.tolist())) == list(range(10)) + list(range(1000, 1040))
    assert (ids < 1000).sum() == 40  # the small source cycled 4 times meanwhile
    never = dfn.mix([small, large], [1, 1], window=4)
    assert dfn.num_records(never) == 80
    _, ids = walk(never, 80, 3)
    assert ids[ids < 1000].tolist() == (np.arange(120) % 10).tolist()
    with pytest.raises(Exception, match="mixture ended"):
        jax.jit(lambda s: dfn.get_batch(s, 8))(state)
    with pytest.raises(Exception, match="mixture ended"):  # a batch of exactly two epochs passes the end too
        jax.jit(lambda s: dfn.get_batch(s, 40))(first)
    _, whole = jax.jit(lambda s: dfn.get_batch(s, 20))(first)  # exactly one epoch: the last batch that fits
    assert np.asarray(whole["id"]).shape == (20,)


def test_differing_element_specs_name_every_field():
    a = dfn.from_arrays({"id": np.arange(4, dtype=np.int32), "x": np.zeros((4, 2), np.float32)})
    b = dfn.from_arrays({"id": np.arange(4, dtype=np.int32), "x": np.zeros((4, 3), np.float32),
                         "y": np.zeros(4, np.int32)})
    c = dfn.from_arrays({"id": np.arange(4, dtype=np.int16)})
    with pytest.raises(ValueError) as e:
        dfn.mix([a, b, c], [1, 1, 1])
    msg = str(e.value)
    assert "source 1 has [\"['y']\"]" in msg and "field ['x'] is (2,) float32 in source 0 and (3,) float32" in msg
    assert "source 2 lacks [\"['x']\"]" in msg and "field ['id'] is () int32 in source 0 and () int16" in msg


def test_bad_options_name_the_argument_and_the_fix():
    a, b = corpus(10, 0), corpus(10, 1000)
    with pytest.raises(TypeError, match="weights must be a sequence"):
        dfn.mix([a, b], "1,1")
    with pytest.raises(ValueError, match=r"weights\[1\] must be a finite number > 0"):
        dfn.mix([a, b], [1, 0])
    with pytest.raises(ValueError, match="2 sources need 2 weights; got 3"):
        dfn.mix([a, b], [1, 1, 1])
    with pytest.raises(ValueError, match="Pass window= at least 1001"):
        dfn.mix([a, b], [1000, 1])
    assert dfn.mix([a, b], [1000, 1], window=1001).quotas == (1000, 1)
    assert dfn.mix([a, b], [np.float32(1), np.int64(3)], window=np.int64(4)).quotas == (1, 3)
    with pytest.raises(ValueError, match="stop must be one of"):
        dfn.mix([a, b], [1, 1], stop="first")
    with pytest.raises(TypeError, match="window must be an int"):
        dfn.mix([a, b], [1, 1], window=10.0)
    with pytest.raises(TypeError, match="a mixture takes source states"):
        dfn.mix([a, {"x": np.zeros(3)}], [1, 1])
    with pytest.raises(ValueError, match="10 records, fewer than its 11 slots"):
        dfn.mix([a, b], [1, 1], stop="first_exhausted", window=22)
    with pytest.raises(ValueError, match="partitions=2"):
        dfn.mix([a, dfn.from_arrays({"id": np.arange(4, dtype=np.int32), "x": np.zeros((4, 2), np.float32)},
                                    partitions=2)], [1, 1])


def test_a_cursor_of_another_mixture_or_an_edited_one_is_refused():
    def build(weights=(2, 1)):
        return dfn.mix([corpus(20, 0, shuffle=True), corpus(10, 1000)], list(weights), seed=1, window=6)

    state, _ = dfn.get_batch(build(), 9)
    saved = dfn.cursor(state)
    with pytest.raises(ValueError, match=r"quotas \(cursor \[4, 2\], this state \[3, 3\]\)"):
        dfn.restore_cursor(build((1, 1)), saved)
    edited = json.loads(json.dumps(saved))
    edited["children"][1]["index"] += 1
    with pytest.raises(ValueError, match="source 1's cursor is at record 4, but the mixture's position"):
        dfn.restore_cursor(build(), edited)
    other = json.loads(json.dumps(saved))
    other["children"][0]["fingerprint"] = "elsewhere"
    with pytest.raises(ValueError, match="source 0 of the mixture: .*fingerprint"):
        dfn.restore_cursor(build(), other)


def test_packed_streams_mix_and_resume():
    def build():
        parts = []
        for base, n in ((0, 40), (1000, 30)):
            lens = (np.arange(n) % 5 + 1).astype(np.int32)
            tokens = np.where(np.arange(5)[None] < lens[:, None], base + np.arange(n)[:, None], 0).astype(np.int32)
            parts.append(dfn.pack(dfn.from_arrays({"t": tokens, "t_length": lens}), {"t": 8}, num_bins=2))
        return dfn.mix(parts, [1, 1], window=4)

    state, whole = build(), []
    for _ in range(6):
        state, b = dfn.get_batch(state, 5)
        whole.append(b["t"])
    whole = np.concatenate(whole)
    assert np.bincount((whole[:28].max(1) >= 1000).astype(int)).tolist() == [14, 14]  # 7 windows of 2 + 2
    s = build()
    s, first = dfn.get_batch(s, 13)
    s = dfn.restore_cursor(build(), json.loads(json.dumps(dfn.cursor(s))))
    s, rest = dfn.get_batch(s, 17)
    assert np.array_equal(np.concatenate([first["t"], rest["t"]]), whole)
    with pytest.raises(TypeError, match="is itself a mixture"):
        dfn.mix([build(), corpus(4, 0)], [1, 1])


@pytest.mark.slow
def test_a_mixture_continues_its_global_stream_across_2_then_1_then_4_processes():
    # Real jax.distributed groups (tests/distributed_worker.py, source "mix"); each process computes
    # the whole batch from the same state and keeps its devices' rows.
    spec = {"sources": ["mix"], "records": 20, "partitions": 1, "seed": 11, "size": 4}
    x = 100 + np.arange(20, dtype=np.int32)
    eager = dfn.from_arrays({"x": x, "y": {"z": (2 * x).astype(np.float32)}}, shuffle=True, seed=11)
    state = dfn.mix([eager, dfn.from_backend(RangeBackend(20, 3), shuffle=True, seed=11)], [2, 1], seed=11, window=6)
    want = []
    for _ in range(6):
        state, batch = dfn.get_batch(state, 4)
        want.append(np.asarray(batch["x"]).tolist())

    def merged(results):
        out = []
        for step in range(len(results[0]["mix"]["rows"])):
            rows = {}
            for r in results:
                rows.update(dict(map(tuple, r["mix"]["rows"][step])))
            out.append([rows[i] for i in range(4)])
        assert all(r["mix"]["cursor"] == results[0]["mix"]["cursor"] for r in results)
        return out, results[0]["mix"]["cursor"]

    got, cursor = merged(run_group({**spec, "devices": 2, "steps": 2}, 2))
    assert got == want[:2]
    got, cursor = merged(run_group({**spec, "devices": 1, "steps": 2, "cursors": {"mix": cursor}}, 1))
    assert got == want[2:4]
    got, cursor = merged(run_group({**spec, "devices": 1, "steps": 2, "cursors": {"mix": cursor}}, 4))
    assert got == want[4:6] and cursor == dfn.cursor(state)


def test_fill_missing_fills_absent_fields_with_zeros_and_a_mask_eagerly_in_jit_and_on_the_host():
    def build(on_host):
        a = dfn.from_arrays({"id": np.arange(6, dtype=np.int32), "label": 10 + np.arange(6, dtype=np.int32)})
        b = stream(4, 1000) if on_host else corpus(4, 1000)   # records {"id", "x"}: no label; a has no x
        return dfn.mix([a, b], [1, 1], window=2, fill_missing=True)

    with pytest.raises(ValueError, match="or pass fill_missing=True"):
        dfn.mix([build(False).children[0], corpus(4, 1000)], [1, 1])
    state = build(False)
    assert list(dfn.element_spec(state)) == ["id", "label", "x", "label_present", "x_present"]
    _, eager = dfn.get_batch(state, 6)
    _, jitted = jax.jit(lambda s: dfn.get_batch(s, 6))(state)
    _, host = dfn.get_batch(build(True), 6)
    for batch in (eager, jitted, host):
        batch = {k: np.asarray(v) for k, v in batch.items()}
        from_b = batch["id"] >= 1000
        assert from_b.sum() == 3
        assert batch["label_present"].tolist() == (~from_b).tolist() and batch["x_present"].tolist() == from_b.tolist()
        assert batch["label"][from_b].tolist() == [0, 0, 0] and batch["label"][~from_b].tolist() == [10, 11, 12]
        assert batch["x"][~from_b].tolist() == [[0, 0]] * 3 and batch["x"][from_b].tolist() == [[1000, 1000]] * 3
    clash = dfn.from_arrays({"id": np.arange(4, dtype=np.int32), "x": np.zeros((4, 3), np.float32)})
    with pytest.raises(ValueError, match=r"field \['x'\] is \(2,\) float32 in an earlier source and \(3,\)"):
        dfn.mix([corpus(4, 0), build(False).children[0], clash], [1, 1, 1], fill_missing=True)
    with pytest.raises(TypeError, match="fill_missing must be a bool"):
        dfn.mix([corpus(4, 0), corpus(4, 0)], [1, 1], fill_missing="yes")


def test_a_pipeline_runs_its_stages_over_a_mixture_in_scan():
    def build():
        return dfn.mix([corpus(14, 0, shuffle=True), corpus(6, 1000)], [0.7, 0.3], seed=2, window=10)

    _, ids = walk(build(), 10, 3)
    pipe = dfn.Pipeline(build(), batch_size=10)
    pipe, total, firsts = dfn.scan(pipe, lambda c, b: (c + b["id"].sum(), b["id"][0]), jax.numpy.int32(0), length=3)
    assert int(total) == int(ids.sum()) and np.asarray(firsts).tolist() == ids[::10].tolist()
    assert dfn.cursor(pipe)["source"]["kind"] == "mix"


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(1, 9), min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1),
       start=st.integers(0, 10_000), size=st.integers(1, 300), window=st.integers(1, 40))
def test_a_batch_never_needs_more_rows_of_a_source_than_it_gathers(weights, seed, start, size, window):
    # An eager batch gathers most_rows(...) rows per source, not `size`: the layout must never
    # put more positions of one source in a batch, wherever the batch starts.
    from datarax_fn._compose.layout import select
    from datarax_fn._compose.mix import most_rows

    window = max(window, sum(weights))
    quotas = dfn.mix([corpus(4, 0)] * len(weights), weights, window=window).quotas
    n = window * 7
    epoch, index = divmod(start, n)
    counts = np.bincount(select(index, epoch, seed, size, quotas, n), minlength=len(quotas))
    assert np.all(counts <= most_rows(quotas, size))


class Shifted(RangeBackend):
    """RangeBackend's records as ids ``base .. base + n - 1`` (partitionable, shuffled per partition)."""

    def __init__(self, n: int, base: int):
        super().__init__(n, 3, tag=str(base))
        self.base = base

    def _records(self, *args):
        for chunk in super()._records(*args):
            yield {"x": chunk["x"] + self.base, "y": chunk["y"]}


class Held:
    """A stream over records held in memory, in order (no compile per batch size, unlike an eager source)."""

    def __init__(self, rows):
        self.rows, self.n = rows, len(rows["x"])

    def open(self, epoch, seed, start):
        for lo in range(start, self.n, 4):
            yield jax.tree.map(lambda v, lo=lo: v[lo:lo + 4], self.rows)

    def num_records(self):
        return self.n

    def element_spec(self):
        return jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape[1:], v.dtype), self.rows)

    def fingerprint(self):
        return f"held-{self.rows['x'].tolist()}"


def test_partitioned_streams_mix_partition_by_partition_and_resume():
    # Streams of 4 partitions mix each partition apart: rows [3c, 3c + 3) of each batch of 12 are the
    # mixture of the streams' partition c (in the order each stream reads it), keyed by the partition's seed.
    from datarax_fn._layout.partitions import partition_seed

    def sources():
        return [dfn.from_backend(Shifted(40, 0), shuffle=True, seed=1, partitions=4),
                dfn.from_backend(Shifted(20, 1000), shuffle=True, seed=2, partitions=4)]

    a, b = sources()
    _, a_rows = dfn.get_batch(a, 4 * 30)  # three epochs of each partition of 10, partition-major
    _, b_rows = dfn.get_batch(b, 4 * 15)  # three epochs of each partition of 5
    state = dfn.mix(sources(), [2, 1], seed=3, window=6)
    assert isinstance(state, dfn.Partitioned) and dfn.num_records(state) == 4 * 18  # 3 windows of 6 per partition
    state, got = walk_x(state, 12, 8)
    for c in range(4):
        part = lambda rows, n: jax.tree.map(lambda v: v[n * c: n * (c + 1)], rows)  # noqa: B023
        alone = dfn.mix([dfn.from_backend(Held(part(a_rows, 30))), dfn.from_backend(Held(part(b_rows, 15)))], [2, 1],
                        seed=partition_seed(3, c, 4), window=6)
        _, want = walk_x(alone, 24, 1)
        mine = got.reshape(8, 4, 3)[:, c].ravel()
        assert mine.tolist() == want.tolist(), c
        assert ((mine >= 1000).reshape(4, 6).sum(1) == 2).all()  # 2 of every window of 6 of the partition
        assert set(mine[mine < 1000] // 10) == {c} and set((mine[mine >= 1000] - 1000) // 5) == {c}
    # A fresh state resumes the cursor taken after 3 batches.
    state, _ = walk_x(dfn.mix(sources(), [2, 1], seed=3, window=6), 12, 3)
    resumed = dfn.restore_cursor(dfn.mix(sources(), [2, 1], seed=3, window=6), json.loads(json.dumps(dfn.cursor(state))))
    assert walk_x(resumed, 12, 5)[1].tolist() == got[36:].tolist()
    with pytest.raises(TypeError, match="cannot run under jax.jit"):
        jax.jit(lambda s: dfn.get_batch(s, 4))(resumed)


def test_partitioned_and_other_sources_do_not_mix():
    four = dfn.from_backend(Shifted(40, 0), partitions=4)
    with pytest.raises(ValueError, match=r"partitions=\[4, 2\]; .* Build every source with partitions=4"):
        dfn.mix([four, dfn.from_backend(Shifted(40, 0), partitions=2)], [1, 1])
    eager = dfn.from_arrays({"x": np.arange(4, dtype=np.int32), "y": {"z": np.zeros(4, np.float32)}})
    with pytest.raises(TypeError, match=r"source 1 \(EagerSource, partitions=1\) cannot be split"):
        dfn.mix([four, eager], [1, 1])


def walk_x(state, size: int, steps: int):
    out = []
    for _ in range(steps):
        state, batch = dfn.get_batch(state, size)
        out.append(np.asarray(batch["x"]))
    return state, np.concatenate(out)
