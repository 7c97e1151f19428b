"""Replay backends on real files seek by their shards: HF parquet row groups and TFDS tfrecord files.

Parquet files are written with several row groups and read through ``load_dataset("parquet",
streaming=True)``; the TFDS builder is prepared in four tfrecord shards. Orders are checked
against the written-out definition (``replay_oracle``), resumes against the uninterrupted
partition, values against HF's own reader.
"""

from __future__ import annotations

import json
import re

import chex
import datasets as hd
import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from conftest import run_fresh
from datarax_fn._layout.partitions import partition_offsets, partition_seed
from replay_oracle import replay_order

tfds = pytest.importorskip("tensorflow_datasets")
import tfds_fixtures as fx  # noqa: E402

# Three files of 23, 17 and 20 rows; row groups of 10, 6 and 20: group bounds below.
FILES = ((0, 23, 10), (23, 40, 6), (40, 60, 20))
GROUP_BOUNDS = [0, 10, 20, 23, 29, 35, 40, 60]
FEATURES = hd.Features({"id": hd.Value("int64"), "tag": hd.Value("string"), "v": hd.Value("float32")})


def write_parquet(folder, v=lambda i: i * 3 - 7):
    folder.mkdir(exist_ok=True)
    for f, (lo, hi, group) in enumerate(FILES):
        rows = range(lo, hi)
        table = pa.table({"id": pa.array(rows, pa.int64()), "tag": [f"r{i}" for i in rows],
                          "v": pa.array([v(i) for i in rows], pa.int32())})  # int32 on disk, float32 declared
        pq.write_table(table, str(folder / f"part-{f}.parquet"), row_group_size=group)
    return sorted(str(p) for p in folder.glob("*.parquet"))


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory):
    return write_parquet(tmp_path_factory.mktemp("groups") / "data")


def hf_stream(files, **kw):
    kw = {"chunk_size": 4, "max_length": {"tag": 4}, "download_kwargs": {"features": FEATURES}, **kw}
    return dfn.from_hf("parquet", "train", data_files={"train": files}, streaming=True, **kw)


def ids(chunks) -> list[int]:
    return [int(v) for c in chunks for v in c["id"]]


def take_all(state, n):
    state, batch = dfn.get_batch(state, n)
    state.close()
    return batch


def test_parquet_values_equal_hfs_own_reader_and_the_length_is_known(parquet_files):
    state = hf_stream(parquet_files)
    assert len(state) == 60
    batch = take_all(state, 60)
    own = hd.load_dataset("parquet", data_files={"train": parquet_files}, split="train", streaming=True,
                          features=FEATURES).with_format("numpy")
    rows = list(own)
    assert batch["id"].tolist() == [int(r["id"]) for r in rows] == list(range(60))
    np.testing.assert_array_equal(batch["v"], np.array([r["v"] for r in rows]))
    assert batch["v"].dtype == np.float32 == rows[0]["v"].dtype
    assert dfn.decode_text(batch, "tag") == [str(r["tag"]) for r in rows]


def test_parquet_shuffle_visits_row_groups_in_a_keyed_order(parquet_files):
    state = hf_stream(parquet_files, shuffle=True, seed=4, shuffle_buffer_size=8)
    for epoch in range(2):
        state, batch = dfn.get_batch(state, 60)
        assert batch["id"].tolist() == replay_order(GROUP_BOUNDS, 0, 60, 8, 4, epoch)
    state.close()


@settings(max_examples=12)
@given(parts=st.integers(1, 4), epoch=st.integers(0, 2), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_parquet_partitions_follow_the_definition_and_resume_exactly(parquet_files, parts, epoch, seed, data):
    backend = hf_stream(parquet_files, shuffle=True, shuffle_buffer_size=6).backend.backend
    c = data.draw(st.integers(0, parts - 1))
    off, s = partition_offsets(60, parts), partition_seed(seed, c, parts)
    full = ids(backend.open_partition(c, parts, epoch, s, 0))
    assert full == replay_order(GROUP_BOUNDS, int(off[c]), int(off[c + 1]), 6, s, epoch)
    start = data.draw(st.integers(0, len(full) - 1))
    assert ids(backend.open_partition(c, parts, epoch, s, start)) == full[start:]


def test_conversion_errors_name_the_files_row_on_shuffled_streams(tmp_path):
    files = write_parquet(tmp_path / "nulls", v=lambda i: None if i == 37 else i)
    for kind in ("replay", "random access"):
        if kind == "replay":
            state = hf_stream(files, shuffle=True, seed=1, shuffle_buffer_size=16)
        else:
            ds = hd.load_dataset("parquet", data_files={"train": files}, split="train", features=FEATURES,
                                 cache_dir=str(tmp_path / "cache"))
            state = dfn.from_hf(ds, streaming=True, shuffle=True, seed=1, chunk_size=4, max_length={"tag": 4})
        with pytest.raises(ValueError, match=r"field 'v': missing value \(None\) at row 37\. "):
            dfn.get_batch(state, 60)
        state.close()


def test_json_streams_replay_with_fixed_windows(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(30)))
    state = dfn.from_hf("json", "train", data_files={"train": str(path)}, streaming=True, shuffle=True, seed=2,
                        shuffle_buffer_size=8, cache_dir=str(tmp_path / "c"))
    with pytest.raises(TypeError, match="length is unknown"):
        len(state)
    from datarax_fn._state.shuffle import epoch_seed

    want = [lo + int(i) for k, lo in enumerate(range(0, 30, 8))
            for i in dfn.permute(np.arange(min(8, 30 - lo)), min(8, 30 - lo), epoch_seed(2, k), 0)]
    assert take_all(state, 30)["id"].tolist() == want


# ----------------------------------------------------------------------------- TFDS tfrecord


@pytest.fixture(scope="module")
def sharded_toy(tmp_path_factory):
    """dfn_toy's tfrecord files, four per split."""
    root = str(tmp_path_factory.mktemp("toy4"))
    builder = fx.DfnToy(data_dir=root, file_format="tfrecord")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False, num_shards=4))
    return root


def toy(data_dir, split="train", **kw):
    cfg = dfn.TFDSStreamingConfig(name="dfn_toy", data_dir=data_dir, split=split, include_keys=["idx"], chunk_size=6, **kw)
    return dfn.TFDSStreamingSource(cfg)


def file_order(data_dir: str) -> list[int]:
    """Returns dfn_toy's train ids as its tfrecord files hold them, read file by file with tf.data."""
    import tensorflow as tf

    builder = tfds.builder("dfn_toy", data_dir=data_dir)
    paths = sorted(str(p) for p in builder.data_path.glob("dfn_toy-train.tfrecord-*"))
    records = tf.data.TFRecordDataset(paths)
    return [int(builder.info.features.deserialize_example(r)["idx"]) for r in records]


def test_tfrecord_reads_its_files_in_order_and_shuffle_follows_the_shards(sharded_toy):
    assert tfds.builder("dfn_toy", data_dir=sharded_toy).info.splits["train"].shard_lengths == [10] * 4
    files = file_order(sharded_toy)
    assert take_all(toy(sharded_toy), 40)["idx"].tolist() == files
    # A slice keeps its rows' shards: train[5:35] is 5 + 10 + 10 + 5 rows of four files.
    sliced = toy(sharded_toy, "train[5:35]", shuffle=True, seed=3, shuffle_buffer_size=4)
    got = take_all(sliced, 30)["idx"].tolist()
    assert got == [files[5 + r] for r in replay_order([0, 5, 15, 25, 30], 0, 30, 4, 3, 0)]


@settings(max_examples=4)
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_tfrecord_partitions_resume_exactly(sharded_toy, seed, data):
    backend = toy(sharded_toy, shuffle=True, shuffle_buffer_size=7).backend.backend
    parts = data.draw(st.integers(1, 3))
    c = data.draw(st.integers(0, parts - 1))
    full = [int(v) for ch in backend.open_partition(c, parts, 1, seed, 0) for v in ch["idx"]]
    start = data.draw(st.integers(0, len(full) - 1))
    assert [int(v) for ch in backend.open_partition(c, parts, 1, seed, start) for v in ch["idx"]] == full[start:]
    union = sorted(int(v) for p in range(parts) for ch in backend.open_partition(p, parts, 0, seed, 0) for v in ch["idx"])
    assert union == list(range(40))


RESUME = """
import json
import datarax_fn as dfn
files, cursor = json.loads({args!r})
state = dfn.from_hf("parquet", "train", data_files={{"train": files}}, streaming=True, chunk_size=4,
                    max_length={{"tag": 4}}, shuffle=True, seed=5, shuffle_buffer_size=8)
state, batch = dfn.get_batch(dfn.restore_cursor(state, cursor), 50)
print(json.dumps(batch["id"].tolist()))
"""


def test_exact_resume_over_row_groups_in_a_fresh_process(parquet_files):
    state = hf_stream(parquet_files, shuffle=True, seed=5, shuffle_buffer_size=8, download_kwargs=None)
    state, _ = dfn.get_batch(state, 27)  # mid-window, mid-row-group
    cursor = dfn.cursor(state)
    state, batch = dfn.get_batch(state, 50)  # on into the next epoch
    state.close()
    res = run_fresh(RESUME.format(args=json.dumps([parquet_files, cursor])), timeout=120)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == batch["id"].tolist()


# ----------------------------------------------------------------------------- row groups read a batch at a time

N_ROWS = 300
LAYOUTS = {"one row group": N_ROWS, "groups of 7": 7, "groups of 64": 64}
ROWS_FEATURES = hd.Features({"id": hd.Value("int64"), "vec": hd.List(hd.Value("float32"), length=3),
                             "word": hd.Value("string")})


def write_rows(folder, group: int) -> str:
    """Writes rows 0..N_ROWS-1 (an id, a 3-vector and a word of 0-5 letters) in row groups of ``group``."""
    folder.mkdir()
    ids_ = np.arange(N_ROWS)
    table = pa.table({"id": ids_, "vec": pa.FixedSizeListArray.from_arrays(
                          pa.array((ids_[:, None] * 10 + np.arange(3)).ravel(), pa.float32()), 3),
                      "word": [("abcde"[: i % 6]) for i in range(N_ROWS)]})
    pq.write_table(table, str(folder / "rows.parquet"), row_group_size=group)
    return str(folder / "rows.parquet")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {name: write_rows(root / str(group), group) for name, group in LAYOUTS.items()}


def rows_stream(path, **kw):
    kw = {"max_length": {"word": 5}, "download_kwargs": {"features": ROWS_FEATURES}, **kw}
    return dfn.from_hf("parquet", "train", data_files={"train": path}, streaming=True, **kw)


def check_rows(batch) -> list[int]:
    """Returns the batch's ids after checking every other field is the one written for that id."""
    got = batch["id"].tolist()
    np.testing.assert_array_equal(batch["vec"], np.array([[i * 10, i * 10 + 1, i * 10 + 2] for i in got], np.float32))
    assert dfn.decode_text(batch, "word") == ["abcde"[: i % 6] for i in got]
    return got


def test_one_huge_row_group_and_small_ones_give_the_same_batches_over_8_partitions(layouts):
    batches = {}
    for name, path in layouts.items():
        state = rows_stream(path, partitions=8, chunk_size=16)
        out = []
        for _ in range(3):  # on into the second epoch
            state, b = dfn.get_batch(state, 128)
            out.append(jax.device_get(b))
        state.close()
        batches[name] = out
    for name, out in batches.items():
        chex.assert_trees_all_equal(out, batches["one row group"])
    # Unshuffled, every batch takes 16 records from each partition, in file order.
    off = partition_offsets(N_ROWS, 8)
    assert check_rows(batches["one row group"][0]) == [int(off[c]) + i for c in range(8) for i in range(16)]


@settings(max_examples=20, deadline=None)
@given(layout=st.sampled_from(sorted(LAYOUTS)), chunk=st.sampled_from([5, 64]), parts=st.integers(1, 8),
       epoch=st.integers(0, 2), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_bounded_reads_keep_the_order_and_values_of_any_row_group_layout(layouts, backends, layout, chunk, parts,
                                                                          epoch, seed, data):
    backend = backends(layouts[layout], chunk)
    bounds = list(range(0, N_ROWS, LAYOUTS[layout])) + [N_ROWS]
    c = data.draw(st.integers(0, parts - 1))
    off, s = partition_offsets(N_ROWS, parts), partition_seed(seed, c, parts)
    full = [i for ch in backend.open_partition(c, parts, epoch, s, 0) for i in check_rows(ch)]
    assert full == replay_order(bounds, int(off[c]), int(off[c + 1]), 20, s, epoch)
    start = data.draw(st.integers(0, len(full) - 1))
    assert [i for ch in backend.open_partition(c, parts, epoch, s, start) for i in check_rows(ch)] == full[start:]


@pytest.fixture(scope="module")
def backends():
    """Returns ``backend(path, chunk)``: one shuffled replay backend per file and chunk size, built once;
    examples share them, so a reader one partition left behind is taken over by the next in any order."""
    built = {}

    def backend(path, chunk):
        if (path, chunk) not in built:
            built[path, chunk] = rows_stream(path, shuffle=True, shuffle_buffer_size=20, chunk_size=chunk).backend.backend
        return built[path, chunk]

    return backend


def test_partitions_of_one_row_group_decode_it_once(layouts, monkeypatch):
    import datarax_fn._loaders.hf_parquet as hp

    backend = rows_stream(layouts["one row group"], chunk_size=8).backend.backend
    opened, init = [], hp.GroupReader.__init__
    monkeypatch.setattr(hp.GroupReader, "__init__", lambda self, *a: opened.append(a[1]) or init(self, *a))
    firsts = [next(backend.open_partition(c, 8, 0, 0, 0))["id"].tolist() for c in range(8)]
    off = partition_offsets(N_ROWS, 8)
    assert firsts == [list(range(int(off[c]), int(off[c]) + len(f))) for c, f in enumerate(firsts)]
    assert opened == [0]  # each partition's piece is read whole and its reader handed to the next one


def test_a_stream_reads_no_further_than_it_needs_and_names_a_damaged_page(tmp_path, caplog, monkeypatch):
    import logging

    import datarax_fn._loaders.hf_parquet as hp

    monkeypatch.setattr(hp, "READ_AHEAD", 0)  # stream every piece a batch at a time, small as this file is

    (tmp_path / "pq").mkdir()
    f = tmp_path / "pq" / "train.parquet"
    pq.write_table(pa.table({"id": np.arange(4000, dtype=np.int64)}), str(f), compression="NONE",
                   write_page_checksum=True, data_page_size=2048, use_dictionary=False)  # one row group, many pages
    col = pq.ParquetFile(str(f)).metadata.row_group(0).column(0)
    b = bytearray(f.read_bytes())
    b[col.data_page_offset + col.total_compressed_size - 8] ^= 0xFF  # a value of the last page
    f.write_bytes(bytes(b))
    with caplog.at_level(logging.INFO, logger="datarax_fn"):  # the mode from the footer and the first rows
        state = dfn.from_hf(str(tmp_path / "pq"), "train", memory_budget=1, chunk_size=64, cache_dir=str(tmp_path / "c"))
    assert isinstance(state, dfn.StreamingSource) and "streaming, because" in caplog.text
    state, batch = dfn.get_batch(state, 1000)
    assert batch["id"].tolist() == list(range(1000))
    with pytest.raises(ValueError, match=re.escape(str(f)) + r": reading the data file failed at row group 0 .*CRC"):
        for _ in range(4):
            state, _ = dfn.get_batch(state, 1000)
    state.close()
