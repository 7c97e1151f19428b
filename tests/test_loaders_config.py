"""The shared loader configs: one vocabulary for HF and TFDS, and one TypeError / ValueError rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn._loaders.config import LoaderConfig, StreamingOptions

CONFIGS = [
    (dfn.HFEagerConfig, dfn.HFStreamingConfig),
    (dfn.TFDSEagerConfig, dfn.TFDSStreamingConfig),
]


def test_the_same_knob_has_the_same_name_and_default_in_hf_and_tfds():
    shared = {f.name for f in dataclasses.fields(LoaderConfig)} | {f.name for f in dataclasses.fields(StreamingOptions)}
    hf, tf = dfn.HFStreamingConfig(name="x"), dfn.TFDSStreamingConfig(name="x")
    assert {k: getattr(hf, k) for k in shared} == {k: getattr(tf, k) for k in shared}
    assert (hf.shuffle_buffer_size, hf.prefetch, hf.chunk_size, hf.split) == (1000, 2, 512, "train")


@pytest.mark.parametrize("eager, stream", CONFIGS)
def test_streaming_argument_is_accepted_and_checked(eager, stream):
    cfg = stream(name="x", streaming=True, shuffle_buffer_size=64)
    assert cfg.streaming is True and cfg.shuffle_buffer_size == 64
    with pytest.raises(ValueError, match="streaming=False.*Eager"):
        stream(name="x", streaming=False)
    with pytest.raises(ValueError, match="streaming=True.*Streaming"):
        eager(name="x", streaming=True)


@pytest.mark.parametrize("eager, stream", CONFIGS)
@pytest.mark.parametrize(
    "option, value, error",
    [
        ("truncate", "false", TypeError),
        ("shuffle", "no", TypeError),
        ("shuffle", 1, TypeError),
        ("seed", -1, ValueError),
        ("seed", 2**32, ValueError),
        ("seed", 1.0, TypeError),
        ("seed", True, TypeError),
        ("max_length", 0, ValueError),
        ("max_length", "8", TypeError),
        ("max_length", {"text": 0}, ValueError),
        ("image_mode", "CMYK", ValueError),
        ("image_mode", 3, TypeError),
        ("include_keys", "image", TypeError),
        ("exclude_keys", [1], TypeError),
        ("num_threads", 0, ValueError),
        ("transform", 3, TypeError),
        ("progress", "yes", TypeError),
        ("local_files_only", None, TypeError),
        ("name", "", ValueError),
        ("name", 3, TypeError),
        ("split", "", ValueError),
        ("chunk_size", 0, ValueError),
        ("prefetch", 2.5, TypeError),
        ("shuffle_buffer_size", -3, ValueError),
        ("num_epochs", 0, ValueError),
        ("partitions", 0, ValueError),
        ("partitions", True, TypeError),
        ("partitions", "2", TypeError),
    ],
)
def test_wrong_type_is_type_error_wrong_value_is_value_error(eager, stream, option, value, error):
    kwargs = {"name": "x", option: value}
    with pytest.raises(error, match=option):
        stream(**kwargs)
    if option in {f.name for f in dataclasses.fields(eager)}:
        with pytest.raises(error, match=option):
            eager(**kwargs)


@given(
    seed=st.integers(0, 2**32 - 1),
    ml=st.integers(1, 2**20),
    chunk=st.integers(1, 4096),
    dtype=st.sampled_from([np.int32, np.int64, np.uint32, np.uint64, np.int16]),
)
def test_numpy_integers_work_like_ints(seed, ml, chunk, dtype):
    if ml > np.iinfo(dtype).max or seed > np.iinfo(dtype).max or chunk > np.iinfo(dtype).max:
        return
    for _, stream in CONFIGS:
        cfg = stream(name="x", seed=dtype(seed), max_length={"a": dtype(ml)}, chunk_size=dtype(chunk))
        assert (cfg.seed, cfg.max_length, cfg.chunk_size) == (seed, {"a": ml}, chunk)
        assert type(cfg.seed) is int and type(cfg.chunk_size) is int


def test_options_are_checked_by_from_functions_too(tmp_path):
    with pytest.raises(TypeError, match="truncate"):
        dfn.from_hf("parquet", "train", data_files=str(tmp_path / "x.parquet"), truncate="false")
    with pytest.raises(TypeError, match="streaming"):
        dfn.from_tfds("dfn_toy", streaming="yes")
    with pytest.raises(TypeError, match="eager.*streaming=None"):
        dfn.from_tfds("dfn_toy", eager=True)
    with pytest.raises(ValueError, match="memory_budget"):
        dfn.from_tfds("dfn_toy", memory_budget=-1)


def test_tfds_cross_option_rules():
    with pytest.raises(ValueError, match="try_gcs.*data_dir"):
        dfn.TFDSEagerConfig(name="x", try_gcs=True, data_dir="/d")
    with pytest.raises(ValueError, match="local_files_only.*download"):
        dfn.TFDSStreamingConfig(name="x", local_files_only=True, download=True)
    with pytest.raises(ValueError, match="include_keys and exclude_keys"):
        dfn.HFEagerConfig(name="x", include_keys=["a"], exclude_keys=["b"])


def test_partitions_are_checked_against_the_split_and_give_one_order_eager_and_streamed(tmp_path):
    import datasets as hd

    ds = hd.Dataset.from_dict({"x": list(range(6))})
    assert dfn.HFStreamingConfig(name="x", partitions=np.int64(3)).partitions == 3
    with pytest.raises(ValueError, match=r"partitions=7 is more than the 6 records; use partitions <= 6"):
        dfn.from_hf(ds, streaming=True, partitions=7)
    with pytest.raises(ValueError, match=r"partitions=7 is more than the 6 records"):
        dfn.from_hf(ds, streaming=False, partitions=7)
    # Random access follows the canonical partition order in both modes: the same batches.
    eager = dfn.from_hf(ds, streaming=False, partitions=2, shuffle=True, seed=3)
    stream = dfn.from_hf(ds, streaming=True, partitions=2, shuffle=True, seed=3)
    seen = []
    for _ in range(4):  # two epochs
        eager, a = dfn.get_batch(eager, 4)
        stream, b = dfn.get_batch(stream, 4)
        assert np.asarray(a["x"]).tolist() == b["x"].tolist()
        seen += b["x"].tolist()
    # Partition-major batches: rows 0-1 come from records 0-2, rows 2-3 from records 3-5.
    first, second = [seen[i] for i in range(16) if i % 4 < 2], [seen[i] for i in range(16) if i % 4 >= 2]
    assert sorted(first[:3]) == sorted(first[3:6]) == [0, 1, 2] and sorted(second[:3]) == [3, 4, 5]
    assert first[:3] != first[3:6]  # each epoch has its own order
    stream.close()
    backend = dfn.from_hf(ds, streaming=True).backend.backend  # six partitions of one record each
    assert [int(c["x"][0]) for p in range(6) for c in backend.open_partition(p, 6, 0, 0, 0)] == list(range(6))


@pytest.mark.parametrize("cls", [dfn.HFEagerConfig, dfn.TFDSStreamingConfig])
@pytest.mark.parametrize("option", ["include_keys", "exclude_keys"])
def test_configs_from_equal_sets_are_equal(cls, option):
    names = [f"feature_{i}" for i in range(12)]
    grown = set(names) | {f"tmp_{i}" for i in range(500)}  # a larger table: another iteration order
    grown -= {f"tmp_{i}" for i in range(500)}
    small = set(reversed(names))
    assert small == grown and list(small) != list(grown)  # equal sets, iterated in two orders
    a, b = cls(name="x", **{option: small}), cls(name="x", **{option: grown})
    assert a == b and hash(a) == hash(b)
    assert getattr(a, option) == tuple(sorted(names))
