"""Chunks prepared by worker threads: the same records for every worker count, exact resume,
errors that name the chunk, no worker left after close, the cores a process may use."""

from __future__ import annotations

import numpy as np
import pytest

import datarax_fn as dfn
from conftest import live_threads, take_n, wait_threads_gone
from datarax_fn._streaming import workers
from hf_fixtures import hf_dataset, parquet_folder  # noqa: F401


def _flip(batch):
    # A transform with real work (NumPy releases the GIL) whose output depends on each record.
    return {"image": batch["image"][:, ::-1] ^ np.uint8(7), "label": batch["label"], "id": batch["id"] * 3}


def _stream(folder, workers_, **kw):
    opts = dict(split="train", streaming=True, shuffle=True, seed=3, shuffle_buffer_size=16, chunk_size=4,
                include_keys=("id", "image", "label"), image_mode="L", transform=_flip)
    opts.update(kw)
    return dfn.from_hf(str(folder), num_workers=workers_, **opts)


@pytest.mark.parametrize("partitions", [1, 2])
def test_same_batches_for_every_worker_count(parquet_folder, partitions):
    got = {}
    for w in (1, 2, 4):
        s = _stream(parquet_folder, w, partitions=partitions)
        s, got[w] = take_n(s, 9, 8)  # 72 records: past the end of the 60-record epoch
        s.close()
    for w in (2, 4):
        for key in got[1]:
            np.testing.assert_array_equal(got[w][key], got[1][key])
    ids = got[1]["id"].reshape(-1)
    assert len(set(ids[:56].tolist())) == 56 and set(ids.tolist()) == {3 * i for i in range(60)}


def test_resume_with_workers_is_exact(parquet_folder):
    s = _stream(parquet_folder, 4, partitions=2)
    _, whole = take_n(s, 8, 8)
    s.close()
    s = _stream(parquet_folder, 4, partitions=2)
    s, _ = take_n(s, 3, 8)
    saved = dfn.cursor(s)
    s.close()
    r = dfn.restore_cursor(_stream(parquet_folder, 2, partitions=2), saved)  # another worker count
    r, rest = take_n(r, 5, 8)
    r.close()
    for key in whole:
        np.testing.assert_array_equal(rest[key], whole[key][3:])


def test_a_worker_error_names_the_chunk_and_no_worker_outlives_close(parquet_folder):
    def broken(batch):
        if (batch["id"] == 37).any():
            raise RuntimeError("cannot prepare record 37")
        return batch

    before = live_threads("datarax_fn-worker")  # pools of streams other tests left open are not ours
    s = _stream(parquet_folder, 3, transform=broken, shuffle=False)
    s, _ = take_n(s, 4, 8)  # records 0..31 are fine
    with pytest.raises(RuntimeError, match="cannot prepare record 37") as info:
        take_n(s, 2, 8)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "partition 0 of 1, epoch 0, positions 36..39" in notes, notes
    s.close()
    assert wait_threads_gone("datarax_fn-worker", exclude=before) == []


def test_workers_stop_with_the_stream(parquet_folder):
    before = live_threads("datarax_fn-worker") + live_threads("datarax_fn-prefetch")
    s = _stream(parquet_folder, 4)
    s, _ = take_n(s, 2, 8)
    s.close()
    assert wait_threads_gone("datarax_fn-worker", exclude=before) == []
    assert wait_threads_gone("datarax_fn-prefetch", exclude=before) == []


@pytest.mark.parametrize("bad, err", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError),
                                      (True, TypeError)])
def test_num_workers_must_be_a_positive_int(bad, err):
    from conftest import RangeBackend

    with pytest.raises(err, match=f"num_workers={bad!r}"):
        dfn.from_backend(RangeBackend(), num_workers=bad)
    s = dfn.from_backend(RangeBackend(), num_workers=np.int64(2))  # NumPy ints work like ints
    assert s.backend.num_workers == 2


@pytest.mark.parametrize("text, quota", [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000", 2),
                                         ("50000 100000", 1)])
def test_cgroup_cpu_max_caps_the_default(text, quota):
    assert workers.quota_from_cpu_max(text) == quota


def test_default_workers_follow_the_cpu_affinity():
    import os

    mask = os.sched_getaffinity(0)  # of this thread (pid 0): restored below
    try:
        os.sched_setaffinity(0, {sorted(mask)[0]})
        assert workers.available_cores() == 1
    finally:
        os.sched_setaffinity(0, mask)
    assert workers.available_cores() == min(len(mask), workers._cgroup_quota() or len(mask))
