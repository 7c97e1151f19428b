"""collect_to_array and prefetch_to_device: values, bounded buffer, thread lifetime, errors."""

from __future__ import annotations

import threading
import time

import jax
import numpy as np
import pytest

import datarax_fn as dfn


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "datarax_fn-prefetch_to_device"]


def wait_no_threads(timeout=5.0):
    deadline = time.monotonic() + timeout
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not prefetch_threads()


def test_collect_eager_returns_the_data_without_copy():
    source = dfn.from_arrays({"x": np.arange(6, dtype=np.int32)}, shuffle=True)
    arrays = dfn.collect_to_array(source)
    assert arrays["x"] is source.data["x"]
    pipe = dfn.Pipeline(source, (), 2)
    assert dfn.collect_to_array(pipe)["x"] is source.data["x"]


def test_collect_streaming_reads_one_epoch_in_stream_order():
    hd = pytest.importorskip("datasets")
    ds = hd.Dataset.from_dict({"x": list(range(11))}, features=hd.Features({"x": hd.Value("int32")}))
    stream = dfn.from_hf(ds, streaming=True)
    arrays = dfn.collect_to_array(stream, chunk_size=4)
    assert isinstance(arrays["x"], jax.Array) and arrays["x"].tolist() == list(range(11))
    with pytest.raises(ValueError, match="chunk_size"):
        dfn.collect_to_array(stream, chunk_size=0)


def test_prefetch_yields_every_item_on_device_in_order():
    items = [{"x": np.full((3,), i, np.float32), "y": np.int32(i)} for i in range(7)]
    out = list(dfn.prefetch_to_device(iter(items), size=2))
    assert len(out) == 7
    for i, b in enumerate(out):
        assert isinstance(b["x"], jax.Array) and b["x"].tolist() == [i] * 3 and int(b["y"]) == i
    assert wait_no_threads()


def test_prefetch_buffer_is_bounded():
    pulled = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield np.int32(i)

    it = dfn.prefetch_to_device(source(), size=3)
    assert int(next(it)) == 0
    time.sleep(0.3)  # give the producer every chance to run ahead
    # consumed 1, at most 3 queued, at most 1 more held by the blocked producer
    assert len(pulled) <= 1 + 3 + 1
    it.close()
    assert wait_no_threads()


def test_prefetch_thread_ends_on_break_and_on_garbage_collection():
    it = dfn.prefetch_to_device((np.int32(i) for i in range(10**6)), size=2)
    for i, _ in enumerate(it):
        if i == 3:
            break
    it.close()
    assert wait_no_threads()
    it = dfn.prefetch_to_device((np.int32(i) for i in range(10**6)), size=2)
    next(it)
    del it
    assert wait_no_threads()


def test_prefetch_reraises_the_iterators_error():
    def bad():
        yield np.int32(1)
        raise RuntimeError("reader failed")

    it = dfn.prefetch_to_device(bad())
    assert int(next(it)) == 1
    with pytest.raises(RuntimeError, match="reader failed"):
        next(it)
    assert wait_no_threads()
    with pytest.raises(ValueError, match="size"):
        dfn.prefetch_to_device([], size=0)


def test_prefetch_of_a_pipeline_iterator():
    pipe = dfn.Pipeline(dfn.from_arrays({"x": np.arange(10, dtype=np.int32)}), (), 3)
    got = [b["x"].tolist() for _, b in dfn.prefetch_to_device(dfn.iterate(pipe, remainder="partial"))]
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert wait_no_threads()
