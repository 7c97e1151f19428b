"""Tests for datarax_fn._tfds: TFDS eager / streaming sources and from_tfds, on real local data.

Every dataset is a real ``tensorflow_datasets`` builder prepared into a temporary data_dir
(both tfrecord and array_record), or a catalog dataset under ``tfds.testing.mock_data``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn

tfds = pytest.importorskip("tensorflow_datasets")
import tfds_fixtures as fx  # noqa: E402

FORMATS = ("tfrecord", "array_record")
TOY_MAX = {"seq": 4, "text": 24}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def toy_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tfds_toy")
    return {fmt: fx.prepare(fx.DfnToy, str(root / fmt), fmt) for fmt in FORMATS}


@pytest.fixture(scope="session")
def digits_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tfds_digits")
    return {fmt: fx.prepare(fx.DfnDigits, str(root / fmt), fmt) for fmt in FORMATS}


def toy_eager(data_dir: str, **kw) -> dfn.EagerSource:
    kw.setdefault("max_length", TOY_MAX)
    return dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="dfn_toy", data_dir=data_dir, **kw))


def toy_stream(data_dir: str, **kw):
    kw.setdefault("max_length", TOY_MAX)
    return dfn.TFDSStreamingSource(dfn.TFDSStreamingConfig(name="dfn_toy", data_dir=data_dir, **kw))


def host(tree):
    return jax.tree.map(np.asarray, tree)


def check_toy_rows(data: dict, n: int) -> None:
    """Asserts every converted leaf equals the record its ``idx`` names."""
    data = host(data)
    assert len(data["idx"]) == n and data["idx"].dtype == np.int32
    texts = dfn.decode_text(data, "text")
    for row, i in enumerate(data["idx"].tolist()):
        want = fx.toy_record(i)
        np.testing.assert_array_equal(data["image"][row], want["image"])
        assert data["label"][row] == want["label"]
        assert texts[row] == want["text"]
        assert data["nested"]["x"][row] == want["nested"]["x"]
        np.testing.assert_array_equal(data["nested"]["y"][row], want["nested"]["y"])
        k = len(want["seq"])
        assert data["seq_length"][row] == k
        np.testing.assert_array_equal(data["seq"][row][:k], want["seq"])
        assert not data["seq"][row][k:].any()
    assert data["image"].dtype == np.uint8 and data["label"].dtype == np.int32
    assert data["nested"]["y"].dtype == np.int32 and data["nested"]["x"].dtype == np.float32


# ----------------------------------------------------------------------------- import / configs


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"try_gcs": True, "data_dir": "/x"}, ["try_gcs", "data_dir"]),
        ({"include_keys": ["a"], "exclude_keys": ["b"]}, ["include_keys", "exclude_keys"]),
        ({"beam_num_workers": 0}, ["beam_num_workers"]),
        ({"local_files_only": True, "download": True}, ["local_files_only", "download"]),
        ({"split": ""}, ["split"]),
        ({"seed": -1}, ["seed"]),
    ],
)
def test_config_errors_name_the_fields(kwargs, words):
    with pytest.raises(ValueError) as err:
        dfn.TFDSEagerConfig(**{"name": "mnist", **kwargs})
    assert all(w in str(err.value) for w in words)


@pytest.mark.parametrize("value, err", [(0, ValueError), (-1, ValueError), (2.5, TypeError)])  # -1 is AUTOTUNE
def test_prefetch_is_a_fixed_positive_size(value, err):
    with pytest.raises(err, match="prefetch"):
        dfn.TFDSStreamingConfig(name="mnist", prefetch=value)


def test_config_defaults_and_frozen():
    cfg = dfn.TFDSStreamingConfig(name="mnist", include_keys=["image"])
    assert (cfg.download, cfg.try_gcs, cfg.prefetch, cfg.beam_num_workers) == (False, False, 2, 1)
    assert cfg.include_keys == ("image",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.split = "test"  # type: ignore[misc]


# ----------------------------------------------------------------------------- eager


@pytest.mark.parametrize("fmt", FORMATS)
def test_eager_every_feature_kind_exact(toy_dirs, fmt):
    state = toy_eager(toy_dirs[fmt])
    assert isinstance(state, dfn.EagerSource) and len(state) == fx.TOY_TRAIN
    assert sorted(np.asarray(state.data["idx"]).tolist()) == list(range(fx.TOY_TRAIN))
    check_toy_rows(state.data, fx.TOY_TRAIN)
    spec = dfn.element_spec(state)
    assert spec["image"] == jax.ShapeDtypeStruct((6, 5, 3), np.uint8)
    assert spec["seq"] == jax.ShapeDtypeStruct((4,), np.int32)
    assert spec["text"] == jax.ShapeDtypeStruct((24,), np.uint8)


def test_eager_formats_agree_exactly(toy_dirs):
    a, b = (host(toy_eager(toy_dirs[f]).data) for f in FORMATS)
    chex.assert_trees_all_equal(a, b)  # TFDS stores both formats in the same order


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "split, n", [("train[:10%]", 4), ("train[5:15]", 10), ("train+test", 48), ("test[-3:]", 3), ("train[:25%]+test[:1]", 11)]
)
def test_sliced_split_lengths(toy_dirs, fmt, split, n):
    state = toy_eager(toy_dirs[fmt], split=split)
    assert len(state) == dfn.num_records(state) == n
    check_toy_rows(state.data, n)


def test_ragged_without_max_length_is_a_clear_error(toy_dirs):
    with pytest.raises(ValueError, match="'seq'.*max_length"):
        toy_eager(toy_dirs["tfrecord"], max_length=None)


def test_ragged_truncation_only_when_asked(toy_dirs):
    with pytest.raises(ValueError, match="max_length"):
        toy_eager(toy_dirs["array_record"], max_length={"seq": 2, "text": 24})
    state = toy_eager(toy_dirs["array_record"], max_length={"seq": 2, "text": 24}, truncate=True)
    data = host(state.data)
    assert data["seq"].shape == (40, 2) and data["seq_length"].max() == 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_dataset_info_is_the_tfds_info(toy_dirs, fmt):
    info = dfn.dataset_info(toy_eager(toy_dirs[fmt], split="train[:10%]"))
    assert isinstance(info, tfds.core.DatasetInfo)
    assert info.splits["train"].num_examples == 40 and info.splits["test"].num_examples == 8
    assert info.splits["train[:10%]"].num_examples == 4
    assert "dfn_toy" in info.citation and info.features["label"].names == list(fx.TOY_LABELS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_as_supervised_keeps_the_datasets_own_key_names(toy_dirs, fmt):
    state = toy_eager(toy_dirs[fmt], as_supervised=True)
    assert sorted(state.data) == ["label", "text", "text_length"]  # not image/label


@pytest.mark.parametrize("fmt", FORMATS)
def test_include_exclude_keys(toy_dirs, fmt):
    assert sorted(toy_eager(toy_dirs[fmt], include_keys=["idx", "nested"]).data) == ["idx", "nested"]
    kept = toy_eager(toy_dirs[fmt], exclude_keys=["seq", "text"], max_length=None).data
    assert sorted(kept) == ["idx", "image", "label", "nested"]
    with pytest.raises(ValueError, match="unknown keys.*available keys"):
        toy_eager(toy_dirs[fmt], include_keys=["nope"])


def test_transform_runs_on_host_columns(toy_dirs):
    def tf_(cols):
        return {"idx": cols["idx"], "mean": cols["image"].reshape(len(cols["image"]), -1).mean(1)}

    state = toy_eager(toy_dirs["tfrecord"], include_keys=["idx", "image"], transform=tf_)
    data = host(state.data)
    want = [fx.toy_record(i)["image"].mean() for i in data["idx"]]
    np.testing.assert_allclose(data["mean"], want, rtol=1e-6)
    assert data["mean"].dtype == np.float32


def test_eager_shuffle_and_jit_batches(toy_dirs):
    state = toy_eager(toy_dirs["array_record"], shuffle=True, seed=5, include_keys=["idx"], max_length=None)
    step = jax.jit(lambda s: dfn.get_batch(s, 16))
    seen = []
    for _ in range(5):
        state, batch = step(state)
        seen += np.asarray(batch["idx"]).tolist()
    assert sorted(seen[:40]) == list(range(40)) and seen[:40] != sorted(seen[:40])


def test_digits_real_data(digits_dirs):
    images, labels = fx.digits_arrays()
    for fmt in FORMATS:
        state = dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="dfn_digits", split="train+test", data_dir=digits_dirs[fmt]))
        data = host(state.data)
        assert data["image"].shape == (1797, 8, 8, 1) and data["label"].dtype == np.int32
        key = lambda im, lb: sorted(zip([r.tobytes() for r in im], lb.tolist()))  # noqa: E731
        assert key(data["image"], data["label"]) == key(images, labels)  # TFDS stores records shuffled


def test_missing_dataset_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="mnist", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="name='mnsit'"):
        dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="mnsit", data_dir=str(tmp_path)))


# ----------------------------------------------------------------------------- HF and TFDS agree


def test_same_records_load_identically_through_hf_and_tfds(toy_dirs):
    datasets = pytest.importorskip("datasets")
    rows = [fx.toy_record(i) for i in range(fx.TOY_TRAIN)]
    features = datasets.Features(
        {
            "idx": datasets.Value("int64"),
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(fx.TOY_LABELS)),
            "text": datasets.Value("string"),
            "nested": {"x": datasets.Value("float32"), "y": datasets.Sequence(datasets.Value("int64"), length=2)},
            "seq": datasets.Sequence(datasets.Value("int32")),
        }
    )
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["nested"] = [{"x": float(r["nested"]["x"]), "y": r["nested"]["y"].tolist()} for r in rows]
    cols["seq"] = [r["seq"].tolist() for r in rows]
    hf_state = dfn.from_hf(datasets.Dataset.from_dict(cols, features=features), streaming=False, max_length=TOY_MAX)
    tf_state = toy_eager(toy_dirs["tfrecord"])
    order = lambda d: np.argsort(np.asarray(d["idx"]))  # noqa: E731  TFDS stores records shuffled
    hf_data, tf_data = host(hf_state.data), host(tf_state.data)
    hf_data = jax.tree.map(lambda x: x[order(hf_data)], hf_data)
    tf_data = jax.tree.map(lambda x: x[order(tf_data)], tf_data)
    chex.assert_trees_all_equal(hf_data, tf_data)
    chex.assert_trees_all_equal(dfn.element_spec(hf_state), dfn.element_spec(tf_state))


def test_digits_load_identically_through_hf_and_tfds(digits_dirs):
    datasets = pytest.importorskip("datasets")
    images, labels = fx.digits_arrays()
    ds = datasets.Dataset.from_dict(
        {"image": list(images[:1500, :, :, 0]), "label": labels[:1500].tolist()},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}),
    )
    hf = host(dfn.from_hf(ds, streaming=False).data)
    tf = host(dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="dfn_digits", data_dir=digits_dirs["array_record"])).data)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), hf) == jax.tree.map(lambda x: (x.shape, x.dtype), tf)
    key = lambda d: sorted(zip([r.tobytes() for r in d["image"]], d["label"].tolist()))  # noqa: E731
    assert key(hf) == key(tf)


# ----------------------------------------------------------------------------- streaming


def take_ids(state, sizes):
    ids = []
    for size in sizes:
        state, batch = dfn.get_batch(state, size)
        ids += np.asarray(batch["idx"]).tolist()
    return state, ids


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_epochs_straddle_and_reshuffle(toy_dirs, fmt):
    state = toy_stream(toy_dirs[fmt], shuffle=True, seed=7, shuffle_buffer_size=16, chunk_size=6)
    assert isinstance(state, dfn.StreamingSource) and len(state) == 40
    spec = dfn.element_spec(state)
    assert spec["text"] == jax.ShapeDtypeStruct((24,), np.uint8) and spec["seq_length"].dtype == np.int32
    state, ids = take_ids(state, [13] * 10)  # 130 records: straddles three epoch boundaries
    epochs = [ids[i : i + 40] for i in range(0, 120, 40)]
    assert all(sorted(e) == list(range(40)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != sorted(epochs[0])
    assert int(state.epoch) == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_values_and_unshuffled_order_match_eager(toy_dirs, fmt):
    eager = host(toy_eager(toy_dirs[fmt]).data)
    state, batch = dfn.get_batch(toy_stream(toy_dirs[fmt], chunk_size=7), 40)
    chex.assert_trees_all_equal(host(batch), eager)


def test_array_record_stream_follows_the_eager_permutation(toy_dirs):
    eager = toy_eager(toy_dirs["array_record"], shuffle=True, seed=11, include_keys=["idx"], max_length=None)
    stream = toy_stream(toy_dirs["array_record"], shuffle=True, seed=11, include_keys=["idx"], max_length=None)
    _, a = take_ids(eager, [30, 30])
    _, b = take_ids(stream, [30, 30])
    assert a == b


@settings(max_examples=8)
@given(cuts=st.lists(st.integers(1, 45), min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1))
def test_streaming_output_does_not_depend_on_call_split(toy_dirs, cuts, seed):
    make = lambda: toy_stream(toy_dirs["array_record"], shuffle=True, seed=seed, include_keys=["idx"], max_length=None)  # noqa: E731
    _, split_ids = take_ids(make(), cuts)
    _, whole = take_ids(make(), [sum(cuts)])
    assert split_ids == whole


def test_streaming_needs_static_shapes(toy_dirs):
    with pytest.raises(ValueError, match=r"'text'.*max_length"):
        toy_stream(toy_dirs["tfrecord"], max_length=None)


def test_streaming_num_epochs_and_jit(toy_dirs):
    state = toy_stream(toy_dirs["tfrecord"], num_epochs=1, include_keys=["idx"], max_length=None)
    state, _ = dfn.get_batch(state, 32)
    with pytest.raises(dfn.EndOfStream):
        dfn.get_batch(state, 16)
    with pytest.raises(TypeError, match="jit"):
        jax.jit(lambda s: dfn.get_batch(s, 4)[1])(state)


RESUME = textwrap.dedent(
    """
    import json, sys
    import numpy as np, datarax_fn as dfn
    dirs, cursors = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    for fmt in ("array_record", "tfrecord"):
        if fmt == "tfrecord":  # the order must not depend on TensorFlow's global seed
            print("TF_IMPORTED" + json.dumps("tensorflow" in sys.modules))
            import tensorflow as tf
            tf.random.set_seed(1234)
        cfg = dfn.TFDSStreamingConfig(name="dfn_toy", data_dir=dirs[fmt], shuffle=True, seed=9, shuffle_buffer_size=16,
                                      chunk_size=5, max_length={"seq": 4, "text": 24})
        state = dfn.restore_cursor(dfn.TFDSStreamingSource(cfg), cursors[fmt])
        out = []
        for _ in range(4):
            state, batch = dfn.get_batch(state, 11)
            out.append({k: np.asarray(v).tolist() for k, v in batch.items() if k != "nested"})
        print(fmt + json.dumps(out))
    """
)


def test_exact_resume_in_a_fresh_process_with_shuffle(toy_dirs):
    cursors, want = {}, {}
    for fmt in FORMATS:
        state = toy_stream(toy_dirs[fmt], shuffle=True, seed=9, shuffle_buffer_size=16, chunk_size=5)
        for _ in range(3):  # 33 records: mid-epoch, mid-chunk, in the third shuffle window
            state, _ = dfn.get_batch(state, 11)
        cursors[fmt] = dfn.cursor(state)
        want[fmt] = []
        for _ in range(4):  # continues across the epoch boundary
            state, batch = dfn.get_batch(state, 11)
            want[fmt].append({k: np.asarray(v).tolist() for k, v in batch.items() if k != "nested"})
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", RESUME, json.dumps(toy_dirs), json.dumps(cursors)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for fmt in FORMATS:
        assert json.loads(next(x for x in lines if x.startswith(fmt))[len(fmt):]) == want[fmt]
    # array_record reads through tfds.data_source: resuming it never imports TensorFlow.
    assert json.loads(next(x for x in lines if x.startswith("TF_IMPORTED"))[11:]) is False


# ----------------------------------------------------------------------------- from_tfds


def test_from_tfds_chooses_by_budget_and_logs_why(toy_dirs, caplog):
    with caplog.at_level(logging.INFO, logger="datarax_fn"):
        eager = dfn.from_tfds("dfn_toy", "train", data_dir=toy_dirs["tfrecord"], max_length=TOY_MAX, memory_budget=2**30)
        stream = dfn.from_tfds("dfn_toy", "train", data_dir=toy_dirs["tfrecord"], max_length=TOY_MAX, memory_budget=10)
    assert isinstance(eager, dfn.EagerSource) and isinstance(stream, dfn.StreamingSource)
    text = caplog.text
    assert "eager, because" in text and "streaming, because" in text and "memory budget" in text
    with pytest.raises(TypeError, match="unknown options"):
        dfn.from_tfds("dfn_toy", "train", data_dir=toy_dirs["tfrecord"], shuffle_buffer=3)


def test_from_tfds_forced_modes(digits_dirs):
    d = digits_dirs["array_record"]
    assert isinstance(dfn.from_tfds("dfn_digits", "test", data_dir=d, streaming=False), dfn.EagerSource)
    state = dfn.from_tfds("dfn_digits", "test", data_dir=d, streaming=True, shuffle_buffer_size=8)
    assert isinstance(state, dfn.StreamingSource) and len(state) == 297


# ----------------------------------------------------------------------------- offline and side effects


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("fmt", FORMATS)
def test_local_files_only_makes_zero_network_attempts(toy_dirs, tmp_path, fmt, no_network):
    toy_eager(toy_dirs[fmt], local_files_only=True)
    dfn.get_batch(toy_stream(toy_dirs[fmt], local_files_only=True, shuffle=True), 8)
    dfn.from_tfds("dfn_toy", "train[:5]", data_dir=toy_dirs[fmt], max_length=TOY_MAX)
    with pytest.raises(FileNotFoundError):  # missing data fails at once: no download, no GCS, no retries
        dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="mnist", data_dir=str(tmp_path), local_files_only=True))
    assert "mnist" in tfds.list_builders(with_community_datasets=False)


def test_no_global_side_effects(toy_dirs):
    env = dict(os.environ)
    toy_eager(toy_dirs["tfrecord"])
    assert dict(os.environ) == env  # e.g. PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION untouched


# ----------------------------------------------------------------------------- catalog datasets (mock_data)


@pytest.mark.parametrize(
    "name, spec",
    [
        ("mnist", {"image": ((28, 28, 1), np.uint8), "label": ((), np.int32)}),
        ("cifar10", {"image": ((32, 32, 3), np.uint8), "label": ((), np.int32)}),
    ],
)
def test_mock_catalog_image_datasets(name, spec):
    with tfds.testing.mock_data(num_examples=12):
        state = dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name=name, split="train", as_supervised=True))
        stream = dfn.TFDSStreamingSource(dfn.TFDSStreamingConfig(name=name, split="train", as_supervised=True, shuffle=True))
        _, batch = dfn.get_batch(stream, 20)
    assert len(state) == 12
    assert {k: (v.shape, v.dtype) for k, v in dfn.element_spec(state).items()} == spec
    assert batch["image"].shape == (20, *spec["image"][0])
    assert dfn.dataset_info(state).supervised_keys == ("image", "label")


def test_mock_imdb_reviews_text():
    with tfds.testing.mock_data(num_examples=6):
        state = dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="imdb_reviews", split="train", as_supervised=True))
        raw = list(tfds.as_numpy(tfds.load("imdb_reviews", split="train", download=False)))
    assert sorted(state.data) == ["label", "text", "text_length"]  # imdb's own supervised names
    assert dfn.decode_text(host(state.data), "text") == [r["text"].decode("utf-8") for r in raw]
    np.testing.assert_array_equal(np.asarray(state.data["label"]), [r["label"] for r in raw])


# ----------------------------------------------------------------------------- splits and parity


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("split", ["train[5:5]", "train[20:5]"])
def test_empty_and_reversed_slices_are_clear_errors(toy_dirs, fmt, split):
    with pytest.raises(ValueError, match=rf"split='{re.escape(split)}'.*no records"):
        toy_eager(toy_dirs[fmt], split=split)
    with pytest.raises(ValueError, match=rf"split='{re.escape(split)}'.*no records"):
        toy_stream(toy_dirs[fmt], split=split)


def test_read_instruction_as_split(toy_dirs):
    ri = tfds.core.ReadInstruction("train", from_=2, to=7, unit="abs")
    state = toy_eager(toy_dirs["array_record"], split=ri, include_keys=["idx"], max_length=None)
    assert len(state) == 5


def test_excluded_features_are_not_read(toy_dirs):
    stream = toy_stream(toy_dirs["tfrecord"], exclude_keys=["text", "seq", "nested.y"], max_length=None)
    _, batch = dfn.get_batch(stream, 4)
    assert sorted(batch) == ["idx", "image", "label", "nested"] and sorted(batch["nested"]) == ["x"]


@pytest.fixture(scope="session")
def parity_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tfds_parity")
    return {fmt: fx.prepare(fx.DfnParity, str(root / fmt), fmt) for fmt in FORMATS}


def test_hf_and_both_tfds_formats_give_the_same_arrays_jpeg_included(parity_dirs):
    datasets = pytest.importorskip("datasets")
    rows = [fx.parity_record(i) for i in range(fx.PARITY_N)]
    features = datasets.Features({"idx": datasets.Value("int64"), "image": datasets.Image(mode="RGB"),
                                  "label": datasets.ClassLabel(names=list(fx.PARITY_LABELS)),
                                  "text": datasets.Value("string")})
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["image"] = [{"bytes": b, "path": None} for b in cols["image"]]
    opts = dict(max_length={"text": 24})
    got = {"hf": dfn.from_hf(datasets.Dataset.from_dict(cols, features=features), streaming=False, **opts)}
    for fmt in FORMATS:  # a string Tensor feature can always be excluded, never read
        got[fmt] = dfn.from_tfds("dfn_parity", data_dir=parity_dirs[fmt], streaming=False, exclude_keys=["tags"], **opts)
    order = lambda d: np.argsort(np.asarray(d["idx"]))  # noqa: E731  TFDS stores records shuffled
    arrays = {k: jax.tree.map(lambda x, o=order(host(s.data)): x[o], host(s.data)) for k, s in got.items()}
    chex.assert_trees_all_equal(arrays["hf"], arrays["tfrecord"])
    chex.assert_trees_all_equal(arrays["hf"], arrays["array_record"])
    import io

    import PIL.Image

    pil = np.stack([np.asarray(PIL.Image.open(io.BytesIO(r["image"])).convert("RGB")) for r in rows])
    np.testing.assert_array_equal(arrays["hf"]["image"], pil)  # PIL's decode of the same bytes


@pytest.fixture(scope="session")
def nested_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tfds_nested")
    return {fmt: fx.prepare(fx.DfnNested, str(root / fmt), fmt) for fmt in FORMATS}


NESTED_MAX = {"x": (2, 2), "t": (2, 2, 2), "b": (2, 2, 3), "lb": (3, 2), "seq": 2}


def load_nested(data_dir: str, streaming: bool, **kw) -> dict:
    """Returns all of ``dfn_nested`` as host arrays, read eagerly or in chunks of 2 records."""
    kw = {"max_length": NESTED_MAX, **kw, **({"chunk_size": 2} if streaming else {})}
    state = dfn.from_tfds("dfn_nested", data_dir=data_dir, streaming=streaming, **kw)
    return host(dfn.get_batch(state, 3)[1] if streaming else state.data)


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_lists_of_lists_pad_per_level_in_both_formats(nested_dirs, fmt, streaming):
    got = load_nested(nested_dirs[fmt], streaming, include_keys=["x", "t", "b", "seq"])
    z2, z3 = [[0, 0], [0, 0]], [[0, 0, 0], [0, 0, 0]]
    want = {
        "x": np.array([[[1, 2], [0, 0]], z2, [[3, 0], [0, 0]]], np.int16),
        "x_length": np.array([2, 0, 1], np.int32), "x_length_1": np.array([[2, 0], [0, 0], [1, 0]], np.int32),
        "t": np.array([[[[97, 98], [195, 169]], z2], [z2, z2], [z2, z2]], np.uint8),
        "t_length": np.array([2, 0, 1], np.int32), "t_length_1": np.array([[2, 0], [0, 0], [1, 0]], np.int32),
        "t_length_2": np.array([[[2, 2], [0, 0]], z2, z2], np.int32),
        "b": np.array([[[[97, 0, 0], [0, 0, 0]], z3], [z3, z3], [[[0, 0, 0], [120, 121, 0]], z3]], np.uint8),
        "b_length": np.array([2, 0, 1], np.int32), "b_length_1": np.array([[1, 0], [0, 0], [2, 0]], np.int32),
        "b_length_2": np.array([[[2, 0], [0, 0]], z2, [[1, 2], [0, 0]]], np.int32),
        "seq": np.array([[5, 0], [0, 0], [6, 7]], np.int32), "seq_length": np.array([1, 0, 2], np.int32),
    }
    chex.assert_trees_all_equal(got, want)


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_lists_of_bytes_keep_trailing_nul_bytes(nested_dirs, fmt, streaming):
    got = load_nested(nested_dirs[fmt], streaming, include_keys=["lb"])
    want = {  # records [b"a\x00", b"\x00"], [], [b"\x00\x00"]
        "lb": np.array([[[97, 0], [0, 0], [0, 0]], [[0, 0]] * 3, [[0, 0]] * 3], np.uint8),
        "lb_length": np.array([2, 0, 1], np.int32),
        "lb_length_1": np.array([[2, 1, 0], [0, 0, 0], [2, 0, 0]], np.int32),
    }
    chex.assert_trees_all_equal(got, want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_default_mode_decides_from_metadata_and_a_sample(digits_dirs, fmt, monkeypatch, caplog):
    import datarax_fn._loaders.tfds as loader

    read = []
    for name in ("tf_columns", "rows_to_columns"):  # every record a TFDS source reads passes one of these
        real = getattr(loader, name)
        monkeypatch.setattr(loader, name, lambda *a, real=real: read.append(len(a[0]) if isinstance(a[0], list)
                                                                          else int(next(iter(a[0].values())).shape[0]))
                            or real(*a))
    with caplog.at_level(logging.INFO, logger="datarax_fn"):
        state = dfn.from_tfds("dfn_digits", "train", data_dir=digits_dirs[fmt], memory_budget=0, chunk_size=64)
    assert isinstance(state, dfn.StreamingSource)
    assert sum(read) <= 256 + 64  # the sample and the stream's first chunk, not the 1,500 records
    assert "1,500 records from the metadata, sized from the first 256; nothing else was read" in caplog.text
    state.close()
