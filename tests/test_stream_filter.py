"""Streams whose filter or transform changes the row count: exact resume, the eager records, errors."""

from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest
from conftest import run_fresh
from hf_fixtures import hf_dataset, parquet_folder, saved_folder  # noqa: F401 (fixtures)
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn import _convert as cv
from datarax_fn._loaders import backends as bk

# ----------------------------------------------------------------------------- the filter and expansion of the real-data tests
# Module-level, so that a fresh process imports the very functions (a cursor names the filter by its code).


def keep(chunk):
    """Keeps the records whose id is not a multiple of 3."""
    return chunk["id"] % 3 != 0


def expand(chunk):
    """Returns ``id % 3`` copies of each record (0, 1 or 2), each with its copy number."""
    counts = np.asarray(chunk["id"]) % 3
    tokens = [t for t, c in zip(chunk["tokens"], counts.tolist()) for _ in range(c)]
    return {"id": np.repeat(chunk["id"], counts), "copy": np.concatenate([np.arange(c) for c in counts]).astype(np.int32),
            "tokens": tokens}


ROW_RULES = {"filter": {"filter": keep}, "expand": {"transform": expand}}

# ----------------------------------------------------------------------------- the real backends over arrays


def _counts(n: int, seed: int, partitions: int) -> np.ndarray:
    """Returns 0..3 outputs per row, at least one in every partition (an epoch must give a record)."""
    counts = np.random.default_rng(seed).integers(0, 4, n)
    counts[np.linspace(0, n - 1, partitions).astype(int)] = np.maximum(counts[np.linspace(0, n - 1, partitions).astype(int)], 1)
    return counts


def _expand(counts: np.ndarray):
    def expand(chunk):
        ids = np.repeat(chunk["id"], counts[chunk["id"]])
        starts = np.repeat(np.cumsum(counts[chunk["id"]]) - counts[chunk["id"]], counts[chunk["id"]])
        return {"id": ids, "k": (np.arange(len(ids)) - starts).astype(np.int32)}
    return expand


def _backend(kind: str, n: int, chunk: int, shuffle: bool, counts: np.ndarray, mode: str, window: int = 7):
    """Returns the loaders' real backend (random access or replay) over rows ``0..n-1`` with a
    filter (rows whose count is odd) or an expansion (``counts[i]`` copies of row ``i``)."""
    cols = {"id": np.arange(n, dtype=np.int64)}
    flt = (lambda c: counts[c["id"]] % 2 == 1) if mode == "filter" else None
    transform = _expand(counts) if mode == "expand" else None
    cfg = types.SimpleNamespace(chunk_size=chunk, shuffle=shuffle, shuffle_buffer_size=window, max_length=None,
                                truncate=False, image_mode=None, filter=flt)
    conv = cv.Converter({"id": cv.Tensor((), "int64")}, transform=transform, filter=flt, probe=cols, static=True)
    common = {"data": ("arrays", n, mode), "split": "train", "info": None, "cfg": cfg}
    if kind == "random":
        return bk.RandomAccessBackend(lambda idx: {"id": cols["id"][idx]}, n, conv, **common)
    grid = 5  # reads come in row groups of 5 from the start, as a parquet reader gives them

    def read_ranges(ranges):
        for lo, hi in ranges:
            hi = n if hi is None else hi
            at = lo
            while at < hi:
                stop = min(hi, (at // grid + 1) * grid)
                yield {"id": cols["id"][at:stop]}
                at = stop

    return bk.ReplayBackend(read_ranges, n, conv, shard_bounds=np.arange(0, n + 1, 10).tolist() + ([n] if n % 10 else []),
                            **common)


def _stream(kind, n, chunk, shuffle, counts, mode, partitions=1, num_epochs=None, seed=3):
    return dfn.from_backend(_backend(kind, n, chunk, shuffle, counts, mode), shuffle=shuffle, seed=seed,
                            partitions=partitions, num_epochs=num_epochs, num_workers=1)


def _batches(state, size, steps):
    out = []
    for _ in range(steps):
        state, batch = dfn.get_batch(state, size)
        out.append({k: np.asarray(v).tolist() for k, v in batch.items()})
    return state, out


@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(n=st.integers(8, 40), chunk=st.integers(1, 8), size=st.integers(1, 6), shuffle=st.booleans(),
       partitions=st.sampled_from([1, 2]), mode=st.sampled_from(["filter", "expand"]),
       kind=st.sampled_from(["random", "replay"]), data=st.data())
def test_restored_cursor_continues_the_uninterrupted_stream(n, chunk, size, shuffle, partitions, mode, kind, data):
    counts = _counts(n, data.draw(st.integers(0, 99)), partitions)
    size *= partitions
    steps = 8
    at = data.draw(st.integers(0, steps))
    state = _stream(kind, n, chunk, shuffle, counts, mode, partitions)
    assert dfn.num_records(state) is None
    mid, first = _batches(state, size, at)
    cursor = json.loads(json.dumps(dfn.cursor(mid)))
    _, rest = _batches(mid, size, steps - at)
    fresh = _stream(kind, n, chunk, shuffle, counts, mode, partitions)  # a new backend: nothing cached
    _, again = _batches(dfn.restore_cursor(fresh, cursor), size, steps - at)
    assert again == rest
    # Every epoch holds each kept record once (per its count): the first epoch of the whole stream.
    per_epoch = int(counts[counts % 2 == 1].size if mode == "filter" else counts.sum())
    served = [i for b in first + rest for i in b["id"]]
    if len(served) >= per_epoch and partitions == 1:
        want = np.flatnonzero(counts % 2 == 1) if mode == "filter" else np.repeat(np.arange(n), counts)
        assert sorted(served[:per_epoch]) == sorted(want.tolist())
        if not shuffle:
            assert served[:per_epoch] == want.tolist()
    state.close(), fresh.close(), mid.close()


def test_a_stream_that_keeps_the_row_count_keeps_its_cursor():
    counts = np.ones(12, np.int64)
    state = _stream("random", 12, 4, False, counts, "expand")
    assert state.offset is None and dfn.num_records(state) == 12
    state, _ = dfn.get_batch(state, 5)
    assert sorted(dfn.cursor(state)) == ["epoch", "fingerprint", "index", "kind", "seed", "shuffle", "version"]
    assert dfn.cursor(state)["index"] == 5


def test_cursor_records_chunk_start_and_offset_and_partitions_each():
    counts = np.array([2, 0, 3, 1, 1, 0, 2, 2, 1, 3, 0, 1])
    state = _stream("random", 12, 4, False, counts, "expand")
    state, batch = dfn.get_batch(state, 6)
    # chunk rows 0..3 give 2 + 0 + 3 + 1 = 6 records: the batch ends at its end, the next chunk starts at 4
    assert batch["id"].tolist() == [0, 0, 2, 2, 2, 3]
    assert (dfn.cursor(state)["index"], dfn.cursor(state)["offset"]) == (4, 0)
    state, batch = dfn.get_batch(state, 3)
    assert batch["id"].tolist() == [4, 6, 6] and (int(state.index), int(state.offset)) == (4, 3)
    two = _stream("random", 12, 4, False, counts, "expand", partitions=2)
    two, batch = dfn.get_batch(two, 4)
    assert batch["id"].tolist() == [0, 0, 6, 6]
    c = dfn.cursor(two)
    assert (c["index"], c["offset"], c["epoch"], c["partitions"]) == ([0, 0], [2, 2], [0, 0], 2)


def test_restore_refuses_cursors_of_other_row_rules():
    counts = np.array([1, 0, 2, 1, 1, 3, 0, 1])
    plain = _stream("random", 8, 4, False, np.ones(8, np.int64), "expand")
    expanding = _stream("random", 8, 4, False, counts, "expand")
    plain, _ = dfn.get_batch(plain, 2)
    expanding, _ = dfn.get_batch(expanding, 2)
    with pytest.raises(ValueError, match="has no offset: it was saved on a stream that keeps one record"):
        dfn.restore_cursor(expanding, dfn.cursor(plain))
    with pytest.raises(ValueError, match="has an offset: it was saved on a stream that filters or expands"):
        dfn.restore_cursor(plain, dfn.cursor(expanding))
    # Two filters by their code: the fingerprint names the filter.
    one = bk.RandomAccessBackend(lambda i: {"id": i.astype(np.int64)}, 8, cv.Converter(
        {"id": cv.Tensor((), "int64")}, filter=lambda c: c["id"] > 2, static=True), data=1, split="s", info=None,
        cfg=types.SimpleNamespace(chunk_size=4, shuffle=False, max_length=None, truncate=False, image_mode=None,
                                  filter=lambda c: c["id"] > 2))
    other = bk.RandomAccessBackend(lambda i: {"id": i.astype(np.int64)}, 8, cv.Converter(
        {"id": cv.Tensor((), "int64")}, filter=lambda c: c["id"] > 3, static=True), data=1, split="s", info=None,
        cfg=types.SimpleNamespace(chunk_size=4, shuffle=False, max_length=None, truncate=False, image_mode=None,
                                  filter=lambda c: c["id"] > 3))
    assert one.fingerprint_parts()["filter"] != other.fingerprint_parts()["filter"]
    s1, _ = dfn.get_batch(dfn.from_backend(one), 2)
    with pytest.raises(ValueError, match="fingerprint"):
        dfn.restore_cursor(dfn.from_backend(other), dfn.cursor(s1))


def test_iterate_walks_one_input_epoch_and_num_epochs_ends_the_stream():
    counts = np.array([1, 2, 0, 1, 3, 1, 0, 2, 1, 1])  # 12 records per epoch
    state = _stream("random", 10, 3, True, counts, "expand", num_epochs=2)
    got = [b["id"] for _, b in dfn.iterate(state, 5, epochs=1)]
    assert len(got) == 3  # 15 records: past the first epoch's 12
    batches = [b for _, b in dfn.iterate(state, 5, epochs=5)]
    assert len(batches) == 4  # 24 records in 2 epochs: 4 full batches, then EndOfStream
    state, _ = dfn.get_batch(state, 20)
    with pytest.raises(dfn.EndOfStream, match="num_epochs=2"):
        dfn.get_batch(state, 5)


# ----------------------------------------------------------------------------- errors


def _filtered(flt, n=10, chunk=4):
    cols = {"id": np.arange(n, dtype=np.int64)}
    cfg = types.SimpleNamespace(chunk_size=chunk, shuffle=False, max_length=None, truncate=False, image_mode=None,
                                filter=flt)
    conv = cv.Converter({"id": cv.Tensor((), "int64")}, filter=flt, probe=cols, static=True)
    return dfn.from_backend(bk.RandomAccessBackend(lambda i: {"id": cols["id"][i]}, n, conv, data=n, split="s",
                                                   info=None, cfg=cfg), num_workers=1)


@pytest.mark.parametrize("flt, match", [
    (lambda c: (c["id"] > 3).astype(np.int8), r"filter returned a int8 array of shape \(4,\) for rows 0..3"),
    (lambda c: (c["id"] > 3)[:2], r"shape \(2,\) for rows 0..3; it must return a bool array of shape \(4,\)"),
    (lambda c: True, "filter returned a bool for rows 0..3; return a NumPy bool array"),
])
def test_a_bad_mask_names_the_rows_and_the_fix(flt, match):
    state = _filtered(flt)
    with pytest.raises((ValueError, TypeError), match=match):
        dfn.get_batch(state, 2)


def test_the_fix_a_mask_error_names_works():
    state = _filtered(lambda c: np.asarray((c["id"] > 3).astype(np.int8), bool))
    assert dfn.get_batch(state, 3)[1]["id"].tolist() == [4, 5, 6]


@pytest.mark.parametrize("partitions", [1, 2])
def test_a_filter_that_drops_a_whole_epoch_raises_instead_of_hanging(partitions):
    cols = {"id": np.arange(10, dtype=np.int64)}

    def flt(c):
        return c["id"] < (0 if partitions == 1 else 3)  # keeps nothing (of partition 1, rows 5..9)

    state = dfn.from_backend(bk.RandomAccessBackend(
        lambda i: {"id": cols["id"][i]}, 10, cv.Converter({"id": cv.Tensor((), "int64")}, filter=flt, probe=cols,
                                                         static=True),
        data=10, split="s", info=None, cfg=types.SimpleNamespace(chunk_size=4, shuffle=False, max_length=None,
                                                                  truncate=False, image_mode=None, filter=flt)),
        partitions=partitions, num_workers=1)
    with pytest.raises(ValueError, match="kept no record of a whole epoch"):
        dfn.get_batch(state, 4)


def test_a_transform_that_changes_rows_only_after_the_first_chunk_raises_with_a_fix_that_works():
    cols = {"id": np.arange(12, dtype=np.int64)}

    def late(c):
        return {"id": c["id"][c["id"] < 8]}  # keeps every row of the first chunk (rows 0..3)

    def build(**kw):
        conv = cv.Converter({"id": cv.Tensor((), "int64")}, transform=late, probe=cols, static=True,
                            filter=kw.get("filter"))
        cfg = types.SimpleNamespace(chunk_size=4, shuffle=False, max_length=None, truncate=False, image_mode=None,
                                    filter=kw.get("filter"))
        return dfn.from_backend(bk.RandomAccessBackend(lambda i: {"id": cols["id"][i]}, 12, conv, data=12, split="s",
                                                       info=None, cfg=cfg), num_workers=1)

    cols4 = {"id": cols["id"][:4]}  # the probe: the first chunk, as the loaders read it
    conv = cv.Converter({"id": cv.Tensor((), "int64")}, transform=late, probe=cols4, static=True)
    assert not conv.changes_rows
    with pytest.raises(ValueError, match=r"changed the row count at rows 8..11 \(4 in, 0 out\).*Pass filter="):
        conv({"id": cols["id"][8:]}, 8)
    state = build(filter=lambda chunk: np.ones(len(chunk["id"]), bool))  # the fix the message gives
    assert [dfn.get_batch(state, 4)[1]["id"].tolist()] == [[0, 1, 2, 3]]
    state, batch = dfn.get_batch(state, 8)
    assert batch["id"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7] and (int(state.epoch), int(state.index)) == (0, 8)
    assert dfn.get_batch(state, 2)[1]["id"].tolist() == [0, 1]  # rows 8..11 give none: epoch 1 follows


# ----------------------------------------------------------------------------- real HF and TFDS data


HF_OPTS = {"include_keys": ["id", "tokens"], "max_length": {"tokens": 5}}


def _epoch(state, size=4):
    """Returns every record of a stream built with num_epochs=1, batch after batch (the remainder dropped)."""
    out = {}
    for _, batch in dfn.iterate(state, size, epochs=1):
        for k, v in batch.items():
            out.setdefault(k, []).extend(np.asarray(v).tolist())
    return out


def _eager_records(state):
    return {k: np.asarray(v).tolist() for k, v in state.data.items()}


@pytest.mark.parametrize("rule", ["filter", "expand"])
def test_hf_streams_equal_the_eager_source_record_for_record(parquet_folder, saved_folder, tmp_path, rule):
    cache = str(tmp_path / "cache")
    for name in (str(parquet_folder), str(saved_folder / "single")):  # replay and random-access backends
        eager = dfn.from_hf(name, "train", streaming=False, cache_dir=cache, **HF_OPTS, **ROW_RULES[rule])
        want = _eager_records(eager)
        assert len(want["id"]) == (40 if rule == "filter" else 60)  # ids 0..59: 40 kept; 20 x 1 + 20 x 2 copies
        stream = dfn.from_hf(name, "train", streaming=True, chunk_size=7, num_epochs=1, cache_dir=cache, **HF_OPTS,
                             **ROW_RULES[rule])
        got = _epoch(stream)
        assert {k: v[: len(got["id"])] for k, v in want.items()} == got and len(got["id"]) == len(want["id"])
        stream.close()


@pytest.fixture(scope="module")
def toy_dirs(tmp_path_factory):
    import tfds_fixtures as fx

    root = tmp_path_factory.mktemp("tfds_rows")
    return {fmt: fx.prepare(fx.DfnToy, str(root / fmt), fmt) for fmt in ("tfrecord", "array_record")}


TFDS_OPTS = {"include_keys": ["idx", "seq"], "max_length": {"seq": 4}}


def keep_tfds(chunk):
    """Keeps the records whose idx is not a multiple of 3."""
    return chunk["idx"] % 3 != 0


def expand_tfds(chunk):
    """Returns ``idx % 3`` copies of each record."""
    counts = np.asarray(chunk["idx"]) % 3
    return {"idx": np.repeat(chunk["idx"], counts), "seq": [s for s, c in zip(chunk["seq"], counts.tolist()) for _ in range(c)]}


TFDS_RULES = {"filter": {"filter": keep_tfds}, "expand": {"transform": expand_tfds}}


@pytest.mark.parametrize("rule", ["filter", "expand"])
def test_tfds_streams_equal_the_eager_source_record_for_record(toy_dirs, rule):
    for fmt, data_dir in toy_dirs.items():
        eager = dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="dfn_toy", data_dir=data_dir, **TFDS_OPTS, **TFDS_RULES[rule]))
        want = _eager_records(eager)
        assert len(want["idx"]) == (26 if rule == "filter" else 39), fmt  # idx 0..39
        stream = dfn.TFDSStreamingSource(dfn.TFDSStreamingConfig(
            name="dfn_toy", data_dir=data_dir, chunk_size=6, num_epochs=1, **TFDS_OPTS, **TFDS_RULES[rule]))
        got = _epoch(stream, 13)  # 26 and 39 records: whole batches
        assert {k: v[: len(got["idx"])] for k, v in want.items()} == got and len(got["idx"]) == len(want["idx"]), fmt
        stream.close()


def _hf_stream(name, cache, rule, streaming=True):
    chunks = {"shuffle_buffer_size": 16, "chunk_size": 7} if streaming else {}
    return dfn.from_hf(name, "train", streaming=streaming, shuffle=True, seed=5, cache_dir=cache, **chunks, **HF_OPTS,
                       **ROW_RULES[rule])


def _source(kind, where, cache, rule):
    """Returns the shuffled source a fresh process rebuilds: HF or TFDS streams, or an eager HF source."""
    if kind == "tfds":
        return _tfds_stream(where, rule)
    return _hf_stream(where, cache, rule, streaming=kind == "hf")


def _tfds_stream(data_dir, rule):
    return dfn.TFDSStreamingSource(dfn.TFDSStreamingConfig(
        name="dfn_toy", data_dir=data_dir, shuffle=True, seed=5, shuffle_buffer_size=16, chunk_size=6, **TFDS_OPTS,
        **TFDS_RULES[rule]))


def _lists(batch):
    return {k: np.asarray(v).tolist() for k, v in batch.items()}


@pytest.mark.slow
def test_shuffled_filtered_and_expanded_streams_resume_exactly_in_a_fresh_process(parquet_folder, saved_folder,
                                                                                   toy_dirs, tmp_path):
    cache = str(tmp_path / "cache")
    jobs, want = [], []
    # Each backend kind (replay, random access) of each loader, filtered or expanded.
    sources = [("hf", str(parquet_folder), "filter"), ("hf", str(saved_folder / "single"), "expand"),
               ("tfds", toy_dirs["tfrecord"], "expand"), ("tfds", toy_dirs["array_record"], "filter"),
               ("hf_eager", str(parquet_folder), "expand")]
    for kind, where, rule in sources:
        state = _source(kind, where, cache, rule)
        for _ in range(3):  # mid-epoch, mid-chunk: the cursor holds an offset
            state, _ = dfn.get_batch(state, 7)
        cursor = dfn.cursor(state)
        batches = []
        for _ in range(6):  # on past the end of the epoch
            state, batch = dfn.get_batch(state, 7)
            batches.append(_lists(batch))
        if kind != "hf_eager":
            state.close()
        jobs.append((kind, where, rule, cursor))
        want.append(batches)
    assert all(c["offset"] for *_, c in jobs[:3])  # mid-chunk
    out = run_fresh(f"""
        import json, datarax_fn as dfn
        from test_stream_filter import _source, _lists
        for kind, where, rule, cursor in json.loads({json.dumps(json.dumps(jobs))}):
            state = dfn.restore_cursor(_source(kind, where, {cache!r}, rule), cursor)
            batches = []
            for _ in range(6):
                state, batch = dfn.get_batch(state, 7)
                batches.append(_lists(batch))
            print(json.dumps(batches))
            if kind != "hf_eager":
                state.close()
    """, env={"JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
              "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    assert [json.loads(x) for x in out.stdout.strip().splitlines()[-len(jobs):]] == want


def test_a_mixture_of_a_filtered_and_an_expanded_stream_resumes_exactly(tmp_path):
    import datasets as hd

    files = {}
    for name, first in (("a", 0), ("b", 1000)):
        files[name] = str(tmp_path / f"{name}.parquet")
        hd.Dataset.from_dict({"x": np.arange(first, first + 300)}).to_parquet(files[name])

    def make():
        a = dfn.from_hf("parquet", split="train", data_files=files["a"], streaming=True, shuffle=True, seed=1,
                        filter=lambda b: b["x"] % 3 != 0, chunk_size=32)
        b = dfn.from_hf("parquet", split="train", data_files=files["b"], streaming=True, shuffle=True, seed=2,
                        transform=lambda b: {"x": np.repeat(b["x"], 2)}, chunk_size=32)
        return dfn.mix([a, b], [0.7, 0.3], seed=3)

    state, batches = make(), []
    for step in range(40):  # two epochs of the filtered child
        if step == 17:
            saved = json.loads(json.dumps(dfn.cursor(state)))
        state, batch = dfn.get_batch(state, 10)
        batches.append(batch["x"].tolist())
    restored = dfn.restore_cursor(make(), saved)
    for step in range(17, 40):
        restored, batch = dfn.get_batch(restored, 10)
        assert batch["x"].tolist() == batches[step], step
    seen = [x for b in batches[:15] for x in b]
    assert all(x % 3 for x in seen if x < 1000)  # the filter holds in the mixture
