"""dfn.pack: grain's first-fit layout, eager == stream, exact resume, the end of a stream, errors."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import run_fresh
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn

N, WIDTH = 300, 12


def token_rows(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """Returns ``n`` records: ``inputs`` (1..12 tokens) and ``targets`` (1..6), zero-padded with lengths."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, most in (("inputs", WIDTH), ("targets", 6)):
        lens = rng.integers(1, most + 1, n).astype(np.int32)
        values = rng.integers(1, 30_000, (n, most)).astype(np.int32)
        out[key] = np.where(np.arange(most)[None] < lens[:, None], values, 0).astype(np.int32)
        out[f"{key}_length"] = lens
    return out


def grain_rows(rows: dict[str, np.ndarray], lengths: dict, num_bins: int, count: int | None, repeat: bool = True):
    """Returns grain's ``FirstFitPackIterDataset(shuffle_bins=False)`` rows over the same records."""
    import grain.python as gp
    from grain._src.python.dataset.transformations.packing import (
        FirstFitPackIterDataset,
    )

    keys = list(lengths)
    records = [{k: (rows[k][i, : rows[f"{k}_length"][i]] if f"{k}_length" in rows else rows[k][i]) for k in keys}
               for i in range(len(rows[keys[0]]))]
    ds = gp.MapDataset.source(records)
    ds = (ds.repeat() if repeat else ds).to_iter_dataset()
    it = iter(FirstFitPackIterDataset(ds, length_struct=dict(lengths), num_packing_bins=num_bins, shuffle_bins=False))
    out = [next(it) for _ in range(count)] if count is not None else list(it)
    return {k: np.stack([r[k] for r in out]) for k in out[0]}


def take(state, size: int, steps: int):
    parts = []
    for _ in range(steps):
        state, batch = dfn.get_batch(state, size)
        parts.append(batch)
    return state, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture(scope="module")
def token_parquet(tmp_path_factory):
    import datasets as hd

    rows = token_rows()
    root = tmp_path_factory.mktemp("pack") / "data"
    root.mkdir()
    lists = {k: [rows[k][i, : rows[f"{k}_length"][i]].tolist() for i in range(N)] for k in ("inputs", "targets")}
    features = hd.Features({k: hd.List(hd.Value("int32")) for k in lists})
    hd.Dataset.from_dict(lists, features=features).to_parquet(str(root / "train.parquet"))
    return root


def test_rows_equal_grains_first_fit_on_the_same_records():
    rows = token_rows()
    lengths = {"inputs": 32, "targets": 16}
    _, packed = take(dfn.pack(dfn.from_arrays(rows), lengths, num_bins=8), 50, 6)
    theirs = grain_rows(rows, lengths, 8, 300)
    assert sorted(packed) == sorted(theirs)
    for k in theirs:
        assert packed[k].dtype == theirs[k].dtype and np.array_equal(packed[k], theirs[k]), k
    # 300 rows take more than one epoch of the 300 records: groups run on across the epoch, as grain's repeat.
    assert packed["inputs_segment_ids"].max() >= 2


def test_a_scalar_field_packs_one_value_per_record_as_grain_does():
    rows = token_rows(40)
    rows["id"] = np.arange(40, dtype=np.int32)
    del rows["targets"], rows["targets_length"]
    lengths = {"inputs": 24, "id": 4}
    _, packed = take(dfn.pack(dfn.from_arrays(rows), lengths, num_bins=3), 10, 2)
    theirs = grain_rows(rows, lengths, 3, 20)
    for k in theirs:
        assert np.array_equal(packed[k], theirs[k]), k
    seg = packed["id_segment_ids"]
    assert np.array_equal(packed["id"][seg > 0], np.concatenate([packed["id"][r][seg[r] > 0] for r in range(20)]))


def test_a_stream_packs_as_the_eager_source_and_ends_with_grains_last_rows(token_parquet):
    lengths = {"inputs": 32, "targets": 16}
    load = lambda streaming, **kw: dfn.from_hf(str(token_parquet), split="train", streaming=streaming,
                                              max_length=WIDTH, **kw)
    _, eager = take(dfn.pack(load(False), lengths, num_bins=8), 40, 4)
    _, stream = take(dfn.pack(load(True, chunk_size=64), lengths, num_bins=8, read=50), 40, 4)
    for k in eager:
        assert np.array_equal(eager[k], stream[k]), k
    # One epoch only: the last group is served partly filled, then the stream ends (no short batch).
    once = dfn.pack(load(True, num_epochs=1), lengths, num_bins=8)
    batches = [b for _, b in dfn.iterate(once, 1, epochs=5)]
    theirs = grain_rows(token_rows(), lengths, 8, None, repeat=False)
    assert len(batches) == len(theirs["inputs"])
    for k in theirs:
        assert np.array_equal(np.concatenate([b[k] for b in batches]), theirs[k]), k
    with pytest.raises(dfn.EndOfStream):
        take(once, len(batches) + 1, 1)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 30), min_size=2, max_size=5), bins=st.sampled_from([1, 4, 16]))
def test_resume_from_any_cursor_continues_the_uninterrupted_rows(sizes, bins):
    source = dfn.from_arrays(token_rows(60), shuffle=True, seed=2)
    lengths = {"inputs": 20, "targets": 8}
    _, whole = take(dfn.pack(source, lengths, num_bins=bins), sum(sizes), 1)
    state, got = dfn.pack(source, lengths, num_bins=bins), []
    for size in sizes:
        state = dfn.restore_cursor(dfn.pack(source, lengths, num_bins=bins), json.loads(json.dumps(dfn.cursor(state))))
        state, batch = dfn.get_batch(state, size)
        got.append(batch)
    for k in whole:
        assert np.array_equal(np.concatenate([b[k] for b in got]), whole[k]), k


def test_a_fresh_process_resumes_a_shuffled_stream_and_an_eager_source(token_parquet, tmp_path):
    saved = tmp_path / "cursors.json"
    code = f"""
        import json, os, numpy as np, datarax_fn as dfn
        restore = os.path.exists({str(saved)!r})
        cursors = json.load(open({str(saved)!r})) if restore else {{}}
        out = {{}}
        for mode in ("stream", "eager"):
            src = dfn.from_hf({str(token_parquet)!r}, split="train", streaming=mode == "stream", max_length=12,
                              shuffle=True, seed=5)
            s = dfn.pack(src, {{"inputs": 32, "targets": 16}}, num_bins=4)
            if restore:
                s = dfn.restore_cursor(s, cursors[mode])
            else:
                for _ in range(3):
                    s, _ = dfn.get_batch(s, 7)
                cursors[mode] = dfn.cursor(s)
            s, b = dfn.get_batch(s, 30)
            out[mode] = b["inputs"].tolist() + b["targets_segment_ids"].tolist()
        json.dump(cursors, open({str(saved)!r}, "w"))
        print(json.dumps(out))
        """
    first = json.loads(run_fresh(code).stdout.strip().splitlines()[-1])
    again = json.loads(run_fresh(code).stdout.strip().splitlines()[-1])
    assert again == first and len(first["stream"]) == 60


def test_a_record_longer_than_its_row_names_the_field_the_record_and_the_fix():
    rows = token_rows(30)
    source = dfn.from_arrays(rows)
    at = int(np.flatnonzero(rows["inputs_length"] > 10)[0])
    with pytest.raises(ValueError, match=rf"field 'inputs' of the record at stream position {at} .* Raise lengths"):
        dfn.get_batch(dfn.pack(source, {"inputs": 10, "targets": 8}), 4)
    _, batch = dfn.get_batch(dfn.pack(source, {"inputs": WIDTH, "targets": 8}), 4)  # the fix
    assert batch["inputs"].shape == (4, WIDTH)


def test_fields_packing_would_drop_and_bad_options_are_refused():
    rows = token_rows(10)
    rows["label"] = np.zeros(10, np.int32)
    source = dfn.from_arrays(rows)
    with pytest.raises(ValueError, match=r"also hold \['label'\], which packing would drop"):
        dfn.pack(source, {"inputs": 16, "targets": 8})
    state, batch = dfn.get_batch(dfn.pack(source, {"inputs": 16, "targets": 8, "label": 4}), 2)  # the fix
    assert sorted(batch) == sorted(dfn.element_spec(state)) and batch["label_positions"].shape == (2, 4)
    with pytest.raises(TypeError, match="lengths must be a non-empty dict"):
        dfn.pack(source, [("inputs", 16)])
    with pytest.raises(ValueError, match="lengths names 'tokens'"):
        dfn.pack(source, {"tokens": 16})
    with pytest.raises(TypeError, match=r"lengths\['inputs'\] must be an int"):
        dfn.pack(source, {"inputs": 16.0, "targets": 8, "label": 1})
    with pytest.raises(ValueError, match="num_bins must be in"):
        dfn.pack(source, {"inputs": 16, "targets": 8, "label": 1}, num_bins=0)
    assert dfn.pack(source, {"inputs": np.int64(16), "targets": 8, "label": 1}, num_bins=np.int32(2)).num_bins == 2
    with pytest.raises(TypeError, match="EagerSource or StreamingSource"):
        dfn.pack(rows, {"inputs": 16})


def test_a_cursor_of_other_packing_is_refused():
    source = dfn.from_arrays(token_rows(30))
    state, _ = dfn.get_batch(dfn.pack(source, {"inputs": 16, "targets": 8}, num_bins=4), 5)
    with pytest.raises(ValueError, match="num_bins"):
        dfn.restore_cursor(dfn.pack(source, {"inputs": 16, "targets": 8}, num_bins=2), dfn.cursor(state))
    with pytest.raises(ValueError, match="lengths"):
        dfn.restore_cursor(dfn.pack(source, {"inputs": 20, "targets": 8}, num_bins=4), dfn.cursor(state))


def test_a_mixture_packs_as_its_records_do_and_resumes_exactly():
    # The LM recipe: mix two corpora 70/30, then pack the mixed stream.
    def build():
        a = dfn.from_arrays(token_rows(50, seed=1), shuffle=True, seed=1)
        b = dfn.from_arrays(token_rows(30, seed=2))
        return dfn.mix([a, b], [0.7, 0.3], seed=4, window=10)

    lengths = {"inputs": 32, "targets": 16}
    _, records = take(build(), 10, 40)  # 400 mixed records, more than one epoch of the mixture
    _, packed = take(dfn.pack(build(), lengths, num_bins=4), 20, 3)
    theirs = grain_rows(records, lengths, 4, 60, repeat=False)
    for k in theirs:
        assert np.array_equal(packed[k], theirs[k]), k
    state, _ = dfn.get_batch(dfn.pack(build(), lengths, num_bins=4), 7)
    resumed = dfn.restore_cursor(dfn.pack(build(), lengths, num_bins=4), json.loads(json.dumps(dfn.cursor(state))))
    _, a = take(state, 9, 3)
    _, b = take(resumed, 9, 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(packed["inputs"][7:34], a["inputs"])


@settings(max_examples=3, deadline=None)  # each example runs grain's packer, about 7 s
@given(lens=st.lists(st.integers(1, 12), min_size=1, max_size=40), bins=st.integers(1, 6), row=st.integers(12, 30),
       two=st.booleans())
def test_first_fit_equals_grain_for_any_lengths(lens, bins, row, two):
    # One field takes the single-field fast path, two the general one; a finite stream ends each run.
    n = len(lens)
    lens = np.asarray(lens, np.int32)
    rows = {"inputs": np.where(np.arange(WIDTH)[None] < lens[:, None], 1 + np.arange(n)[:, None], 0).astype(np.int32),
            "inputs_length": lens}
    lengths = {"inputs": row}
    if two:
        rows["targets_length"] = lens[::-1].copy()
        rows["targets"] = np.where(np.arange(WIDTH)[None] < rows["targets_length"][:, None], 7, 0).astype(np.int32)
        lengths["targets"] = row // 2 + 6
    source = dfn.from_backend(Records(rows), num_epochs=1)
    ours = [b for _, b in dfn.iterate(dfn.pack(source, lengths, num_bins=bins), 1, epochs=3)]
    theirs = grain_rows(rows, lengths, bins, None, repeat=False)
    assert len(ours) == len(theirs["inputs"])
    for k in theirs:
        assert np.array_equal(np.concatenate([b[k] for b in ours]), theirs[k]), k


class Records:
    """A stream over in-memory records (no compile per batch size, unlike an eager source)."""

    def __init__(self, rows):
        self.rows = rows

    def open(self, epoch, seed, start):
        n = len(self.rows["inputs"])
        for lo in range(start, n, 8):
            yield {k: v[lo:lo + 8] for k, v in self.rows.items()}

    def num_records(self):
        return len(self.rows["inputs"])

    def element_spec(self):
        return {k: jax.ShapeDtypeStruct(v.shape[1:], v.dtype) for k, v in self.rows.items()}

    def fingerprint(self):
        return "records-" + str(hash(tuple(self.rows["inputs_length"].tolist())))


def test_a_partitioned_stream_packs_each_partition_as_that_partition_alone(token_parquet):
    # With partitions=4 every partition packs on its own: rows [4c, 4c + 4) of each batch of 16 are
    # partition c's records, in the order the partitioned stream itself reads them, packed alone.
    lengths = {"inputs": 32, "targets": 16}

    def load():
        return dfn.from_hf(str(token_parquet), split="train", streaming=True, max_length=WIDTH, shuffle=True, seed=3,
                           partitions=4, chunk_size=16)

    stream = load()
    _, records = take(stream, 4 * 150, 1)  # two epochs of each partition of 75, partition-major
    stream.close()
    state = dfn.pack(load(), lengths, num_bins=8)
    assert isinstance(state, dfn.Partitioned) and len(state.parts) == 4
    saved = None
    parts = []
    for step in range(5):
        state, batch = dfn.get_batch(state, 16)
        parts.append(batch)
        if step == 1:
            saved = json.loads(json.dumps(dfn.cursor(state)))
    got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for c in range(4):
        alone = dfn.from_backend(Records({k: v[150 * c: 150 * (c + 1)] for k, v in records.items()}))
        _, want = take(dfn.pack(alone, lengths, num_bins=8), 20, 1)  # about 90 records: into the second epoch
        for k in want:
            assert np.array_equal(got[k].reshape(5, 4, 4, -1)[:, c].reshape(want[k].shape), want[k]), (c, k)
    # A fresh state resumes the cursor saved after two batches with the same rows.
    resumed = dfn.restore_cursor(dfn.pack(load(), lengths, num_bins=8), saved)
    _, rest = take(resumed, 16, 3)
    assert all(np.array_equal(rest[k], got[k][32:]) for k in rest)
    assert dfn.element_spec(resumed) == dfn.element_spec(dfn.pack(dfn.from_arrays(token_rows(4)), lengths))
    state.close()
    resumed.close()
    with pytest.raises(ValueError, match="not a multiple of partitions=4"):
        dfn.get_batch(dfn.pack(load(), lengths), 6)
    with pytest.raises(ValueError, match="composed over 4 partitions"):
        dfn.restore_cursor(dfn.pack(load(), lengths), {**saved, "parts": saved["parts"][:2]})


def short_inputs(chunk):
    """Keeps the records with at most 6 inputs (a filter: the stream's length is unknown)."""
    return np.array([len(x) <= 6 for x in chunk["inputs"]])


@pytest.mark.parametrize("sizes, read, chunk", [([3, 1, 7, 2, 5], 3, 5), ([20, 13, 17], 256, 64)])
def test_a_filtered_stream_packs_as_its_kept_records_and_resumes_from_any_cursor(token_parquet, sizes, read, chunk):
    lengths = {"inputs": 16, "targets": 8}
    load = lambda shuffle, **kw: dfn.from_hf(str(token_parquet), split="train", streaming=True, max_length=WIDTH,
                                             filter=short_inputs, shuffle=shuffle, seed=4, chunk_size=chunk, **kw)
    # In order, the packed rows are those of the kept records packed eagerly (into the next epoch too).
    rows = token_rows()
    kept = {k: v[rows["inputs_length"] <= 6] for k, v in rows.items()}
    _, plain = take(dfn.pack(load(False), lengths, num_bins=4, read=read), sum(sizes), 1)
    _, eager = take(dfn.pack(dfn.from_arrays(kept), lengths, num_bins=4), sum(sizes), 1)
    for k in eager:
        assert np.array_equal(plain[k], eager[k]), k
    # Shuffled: a fresh state restored from the JSON cursor at every step serves the uninterrupted rows.
    src = load(True)
    _, whole = take(dfn.pack(src, lengths, num_bins=4, read=read), sum(sizes), 1)
    state, got = dfn.pack(src, lengths, num_bins=4, read=read), []
    for size in sizes:
        cursor = json.loads(json.dumps(dfn.cursor(state)))
        state = dfn.restore_cursor(dfn.pack(load(True), lengths, num_bins=4, read=read), cursor)
        state, batch = dfn.get_batch(state, size)
        got.append(batch)
    for k in whole:
        assert np.array_equal(np.concatenate([b[k] for b in got]), whole[k]), k


def test_a_packed_cursor_of_a_filtered_stream_names_its_skip_and_is_refused_elsewhere(token_parquet):
    lengths = {"inputs": 16, "targets": 8}
    load = lambda **kw: dfn.from_hf(str(token_parquet), split="train", streaming=True, max_length=WIDTH, **kw)
    state, _ = dfn.get_batch(dfn.pack(load(filter=short_inputs), lengths, num_bins=2, read=5), 3)
    cursor = dfn.cursor(state)
    assert cursor["source"]["offset"] is not None and 0 <= cursor["skip"] < 5
    with pytest.raises(ValueError, match="'skip'.*filters or expands"):
        dfn.restore_cursor(dfn.pack(load(), lengths, num_bins=2), cursor)
    with pytest.raises(ValueError, match="holds 'skip'"):
        dfn.restore_cursor(state, {**cursor, "skip": -1})


def test_a_partitioned_filtered_stream_packs_each_partition_alone_and_resumes(token_parquet):
    lengths = {"inputs": 16, "targets": 8}

    def load():
        return dfn.from_hf(str(token_parquet), split="train", streaming=True, max_length=WIDTH, shuffle=True, seed=3,
                           partitions=2, chunk_size=8, filter=short_inputs)

    stream = load()
    _, records = take(stream, 2 * 60, 1)  # 60 kept records of each partition, partition-major
    state, parts, saved = dfn.pack(load(), lengths, num_bins=4, read=5), [], None
    for step in range(4):
        state, batch = dfn.get_batch(state, 4)
        parts.append(batch)
        saved = json.loads(json.dumps(dfn.cursor(state))) if step == 1 else saved
    got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for c in range(2):
        _, want = take(dfn.pack(dfn.from_arrays({k: v[60 * c: 60 * (c + 1)] for k, v in records.items()}), lengths,
                                num_bins=4), 8, 1)
        for k in want:
            assert np.array_equal(got[k].reshape(4, 2, 2, -1)[:, c].reshape(want[k].shape), want[k]), (c, k)
    _, rest = take(dfn.restore_cursor(dfn.pack(load(), lengths, num_bins=4, read=5), saved), 4, 2)
    assert all(np.array_equal(rest[k], got[k][8:]) for k in rest)


def test_a_too_long_record_of_a_filtered_stream_names_its_place_and_the_fix_works(token_parquet):
    load = lambda: dfn.from_hf(str(token_parquet), split="train", streaming=True, max_length=WIDTH,
                               filter=short_inputs, chunk_size=16)
    with pytest.raises(ValueError, match=r"field 'inputs' of the record at \d+ records past the source position "
                                         r"epoch 0, chunk index 0, offset 0 holds \d values, more than "
                                         r"lengths\['inputs'\]=3\. Raise lengths\['inputs'\]"):
        dfn.get_batch(dfn.pack(load(), {"inputs": 3, "targets": 8}), 4)
    _, rows = dfn.get_batch(dfn.pack(load(), {"inputs": 6, "targets": 8}), 4)
    assert rows["inputs_segment_ids"].shape == (4, 6)
