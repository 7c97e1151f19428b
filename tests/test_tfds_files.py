"""Tests for datarax_fn._loaders.tfds_files: damaged and rewritten TFDS files are named, never read on.

The data is ``dfn_toy`` prepared in 4 files per split, in both file formats; each test damages
or rewrites a copy of one file and checks the error names that file and, for damage, the record
the format's own reader fails on.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import datarax_fn as dfn
from datarax_fn._loaders.backends import DamagedFileError

tfds = pytest.importorskip("tensorflow_datasets")
import tfds_fixtures as fx  # noqa: E402

TOY_MAX = {"seq": 4, "text": 24}
SHARDS = 4


@pytest.fixture(scope="session")
def sharded_toy(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tfds_toy_sharded")
    return {fmt: fx.prepare(fx.DfnToy, str(root / fmt), fmt, num_shards=SHARDS) for fmt in ("tfrecord", "array_record")}


def copy_of(sharded_toy, fmt, tmp_path):
    """Returns ``(data_dir, train files in order)`` of a fresh copy of the sharded toy."""
    root = tmp_path / fmt
    shutil.copytree(sharded_toy[fmt], root)
    return str(root), sorted(root.glob(f"dfn_toy/*/dfn_toy-train.{fmt}-*"))


def read_all(data_dir, streaming, **kw):
    """Reads two epochs of the train split in batches of 10 (streaming) or loads it (eager)."""
    state = dfn.from_tfds("dfn_toy", "train", data_dir=data_dir, streaming=streaming, max_length=TOY_MAX, **kw)
    if streaming:
        try:
            for _ in range(8):
                state, _ = dfn.get_batch(state, 10)
        finally:
            state.close()
    return state


# ----------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("damage, streaming", [("flip", True), ("cut inside a frame", False),
                                               ("cut between frames", True), ("cut between frames", False)])
def test_damaged_tfrecord_error_names_the_file_and_record(sharded_toy, tmp_path, streaming, damage):
    data_dir, files = copy_of(sharded_toy, "tfrecord", tmp_path)
    bad = files[2]
    data = bytearray(bad.read_bytes())
    frames = fx.tfrecord_frames(bytes(data))
    if damage == "flip":  # inside record 6: TensorFlow says only "corrupted record at <byte>"
        data[frames[6] + 20] ^= 1
    elif damage == "cut inside a frame":
        data = data[: frames[6] + 20]
    else:  # TensorFlow reads a shorter file without complaint; TFDS's count check names no file
        data = data[: frames[6]]
    bad.write_bytes(bytes(data))
    where = "record 6 (the file ends there; its metadata says 10 records)" if damage == "cut between frames" else "record 6"
    with pytest.raises(ValueError, match=re.escape(f"{bad}: reading the data file failed at {where} ")) as err:
        read_all(data_dir, streaming, chunk_size=8)
    assert isinstance(err.value, DamagedFileError)
    assert type(err.value.__cause__).__module__.startswith("tensorflow")  # TensorFlow's own error stays the cause


def _first_unreadable(path) -> int:
    """Returns the first record that array_record's own reader refuses to read alone."""
    from array_record.python import array_record_module

    reader = array_record_module.ArrayRecordReader(str(path))
    try:
        for i in range(reader.num_records()):
            try:
                reader.read([i])
            except Exception:  # noqa: BLE001 (any refusal of the reference reader)
                return i
    finally:
        reader.close()
    raise AssertionError(f"{path}: every record reads")


@pytest.mark.parametrize("streaming, shuffle", [(True, True), (False, False)])
def test_damaged_array_record_error_names_the_file_and_record(sharded_toy, tmp_path, streaming, shuffle):
    data_dir, files = copy_of(sharded_toy, "array_record", tmp_path)
    bad = files[1]
    good = bad.read_bytes()
    data = bytearray(good)
    data[1500] ^= 4  # inside a record's chunk: riegeli's hash check fails, naming neither file nor record
    bad.write_bytes(bytes(data))
    record = _first_unreadable(bad)
    assert record > 0  # the reader opens the file: the damage is in one record, not the footer
    with pytest.raises(ValueError, match=re.escape(f"{bad}: reading the data file failed at record {record} ")) as err:
        read_all(data_dir, streaming, shuffle=shuffle, chunk_size=8)
    assert isinstance(err.value, DamagedFileError)
    assert "Corrupted Riegeli/records file" in str(err.value.__cause__)  # the reader's own error stays the cause
    bad.write_bytes(good)  # the fix the message names: replace the file
    read_all(data_dir, streaming, shuffle=shuffle, chunk_size=8)


def test_cut_array_record_names_the_file(sharded_toy, tmp_path):
    data_dir, files = copy_of(sharded_toy, "array_record", tmp_path)
    files[3].write_bytes(files[3].read_bytes()[:5000])  # array_record's footer is gone: no record opens
    with pytest.raises(ValueError, match=re.escape(f"{files[3]}: reading the data file failed at record 0 ")):
        read_all(data_dir, False)


# ----------------------------------------------------------------------------- rewritten files


@pytest.mark.parametrize("how", ["same size", "other size"])
@pytest.mark.parametrize("fmt", ["tfrecord", "array_record"])
def test_file_rewritten_during_a_stream_is_refused_naming_it(sharded_toy, tmp_path, fmt, how):
    data_dir, files = copy_of(sharded_toy, fmt, tmp_path)
    state = dfn.from_tfds("dfn_toy", "train", data_dir=data_dir, streaming=True, max_length=TOY_MAX, chunk_size=5,
                          prefetch=1)
    want = dfn.from_tfds("dfn_toy", "train", data_dir=sharded_toy[fmt], streaming=False, max_length=TOY_MAX)
    order = np.asarray(want.data["idx"])
    state, first = dfn.get_batch(state, 10)
    np.testing.assert_array_equal(first["idx"], order[:10])
    fx.rewrite_file(str(files[3]), how)  # the last file: records 30..39, not read yet
    seen = [np.asarray(first["idx"])]
    with pytest.raises(RuntimeError, match=re.escape(f"{files[3]}: the data file changed since the source was built")):
        try:
            for _ in range(7):  # into the second epoch: every file is opened again
                state, b = dfn.get_batch(state, 10)
                seen.append(np.asarray(b["idx"]))
        finally:
            state.close()
    got = np.concatenate(seen)  # whatever was served before the error is the old data, in order
    np.testing.assert_array_equal(got, np.tile(order, 2)[: len(got)])
    if how == "same size":  # the fix the message names, where the metadata still fits the file: rebuild
        read_all(data_dir, True, chunk_size=5)


def test_eager_load_refuses_a_file_changed_since_the_build_started(sharded_toy, tmp_path, monkeypatch):
    import datarax_fn._loaders.tfds as loader

    data_dir, files = copy_of(sharded_toy, "array_record", tmp_path)
    real = loader._data_source

    def rewrite_then_open(*args):  # the file changes between reading the metadata and the records
        fx.rewrite_file(str(files[0]), "same size")
        return real(*args)

    monkeypatch.setattr(loader, "_data_source", rewrite_then_open)
    with pytest.raises(RuntimeError, match=re.escape(f"{files[0]}: the data file changed")):
        read_all(data_dir, False)
