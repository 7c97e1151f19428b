"""Replay backends on real files seek by their shards: HF parquet row groups and TFDS tfrecord files.

Parquet files are written with several row groups and read through ``load_dataset("parquet",
streaming=True)``; the TFDS builder is prepared in four tfrecord shards. Orders are checked
against the written-out definition (``replay_oracle``), resumes against the uninterrupted
partition, values against HF's own reader.
"""

from __future__ import annotations

import json

import datasets as hd
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
