"""Every error that suggests a fix: trigger it through from_hf, apply exactly that fix, check the values."""

from __future__ import annotations

import decimal
import io
import wave

import datasets as hd
import jax
import numpy as np
import PIL.Image
import pytest
from hf_fixtures import png

import datarax_fn as dfn


def ds_of(rows: dict, features: dict) -> hd.Dataset:
    return hd.Dataset.from_dict(rows, features=hd.Features(features))


def load_all(state, n: int) -> dict:
    """Returns the first ``n`` records of an eager or streaming source as NumPy, in order."""
    _, batch = dfn.get_batch(state, n)
    return jax.tree.map(np.asarray, batch)


@pytest.fixture
def x64():
    """Applies the fix the 64-bit errors name, and undoes it after the test."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


BIG = {"x": [1, 2**40, 3], "y": [10, 20, 30]}
BIG_F = {"x": hd.Value("int64"), "y": hd.Value("int8")}


def test_int64_beyond_int32_names_row_and_both_fixes_work(x64):
    jax.config.update("jax_enable_x64", False)
    with pytest.raises(ValueError, match=r"field 'x': value 1099511627776 at row 1 does not fit int32.*"
                                         r"jax\.config\.update\('jax_enable_x64', True\).*exclude_keys=\['x'\]"):
        dfn.from_hf(ds_of(BIG, BIG_F), streaming=False, shuffle=False)
    out = load_all(dfn.from_hf(ds_of(BIG, BIG_F), streaming=False, shuffle=False, exclude_keys=["x"]), 3)
    assert list(out) == ["y"] and out["y"].tolist() == [10, 20, 30]
    jax.config.update("jax_enable_x64", True)
    out = load_all(dfn.from_hf(ds_of(BIG, BIG_F), streaming=False, shuffle=False), 3)
    assert out["x"].dtype == np.int64 and out["x"].tolist() == [1, 2**40, 3]


def test_float64_beyond_float32_names_row_and_x64_keeps_it(x64):
    rows, feats = {"f": [0.5, 1e300]}, {"f": hd.Value("float64")}
    jax.config.update("jax_enable_x64", False)
    with pytest.raises(ValueError, match=r"field 'f': value 1e\+300 at row 1 is beyond the range of float32.*jax_enable_x64"):
        dfn.from_hf(ds_of(rows, feats), streaming=False, shuffle=False)
    jax.config.update("jax_enable_x64", True)
    out = load_all(dfn.from_hf(ds_of(rows, feats), streaming=False, shuffle=False), 2)
    assert out["f"].dtype == np.float64 and out["f"].tolist() == [0.5, 1e300]


def test_unreadable_image_names_row_and_exclude_keys_works():
    ds = ds_of({"im": [{"bytes": png(np.zeros((2, 2), np.uint8)), "path": None}, {"bytes": b"not an image", "path": None}],
                "y": [1, 2]}, {"im": hd.Image(), "y": hd.Value("int32")})
    with pytest.raises(ValueError, match=r"field 'im': row 1 is not a readable image.*exclude_keys=\['im'\]"):
        dfn.from_hf(ds, streaming=False, shuffle=False)
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, exclude_keys=["im"]), 2)
    assert list(out) == ["y"] and out["y"].tolist() == [1, 2]


def test_images_of_different_sizes_the_messages_own_transform_works():
    a, b = np.full((4, 4), 9, np.uint8), np.full((5, 3), 200, np.uint8)
    ds = ds_of({"im": [png(a), png(b)]}, {"im": hd.Image()})
    with pytest.raises(ValueError, match=r"field 'im': row 1 has shape \(5, 3, 1\), other images have \(4, 4, 1\)") as err:
        dfn.from_hf(ds, streaming=False, shuffle=False)
    # The fix exactly as the message writes it, with W, H chosen.
    fix = str(err.value).split("e.g. transform=", 1)[1].rstrip(".")
    transform = eval(fix, {"np": np, "PIL": PIL, "W": 4, "H": 4})  # noqa: S307 (the message's own code)
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, transform=transform), 2)
    assert out["im"].shape == (2, 4, 4, 1) and out["im"].dtype == np.uint8
    assert (out["im"][0] == 9).all() and (out["im"][1] == 200).all()


RAGGED = {"l": [[1], [2, 3, 4], []]}
RAGGED_F = {"l": hd.List(hd.Value("int32"))}


def test_eager_ragged_without_max_length_the_named_option_works():
    with pytest.raises(ValueError, match=r"field 'l': rows have different lengths.*max_length=\{'l': L\}"):
        dfn.from_hf(ds_of(RAGGED, RAGGED_F), streaming=False, shuffle=False)
    out = load_all(dfn.from_hf(ds_of(RAGGED, RAGGED_F), streaming=False, shuffle=False, max_length={"l": 3}), 3)
    assert out["l"].tolist() == [[1, 0, 0], [2, 3, 4], [0, 0, 0]] and out["l_length"].tolist() == [1, 3, 0]


def test_streaming_ragged_without_max_length_the_named_option_works():
    with pytest.raises(ValueError, match=r"field 'l' is ragged.*max_length=\{'l': L\}.*exclude_keys=\['l'\]"):
        dfn.from_hf(ds_of(RAGGED, RAGGED_F), streaming=True, shuffle=False)
    out = load_all(dfn.from_hf(ds_of(RAGGED, RAGGED_F), streaming=True, shuffle=False, max_length={"l": 3}), 3)
    assert out["l"].tolist() == [[1, 0, 0], [2, 3, 4], [0, 0, 0]] and out["l_length"].tolist() == [1, 3, 0]


def test_row_longer_than_max_length_both_fixes_work():
    with pytest.raises(ValueError, match=r"field 'l': row 1 has length 3 > max_length 2.*Raise max_length.*truncate=True"):
        dfn.from_hf(ds_of(RAGGED, RAGGED_F), streaming=False, shuffle=False, max_length=2)
    out = load_all(dfn.from_hf(ds_of(RAGGED, RAGGED_F), streaming=False, shuffle=False, max_length=3), 3)
    assert out["l"].tolist() == [[1, 0, 0], [2, 3, 4], [0, 0, 0]]
    out = load_all(dfn.from_hf(ds_of(RAGGED, RAGGED_F), streaming=False, shuffle=False, max_length=2, truncate=True), 3)
    assert out["l"].tolist() == [[1, 0], [2, 3], [0, 0]] and out["l_length"].tolist() == [1, 2, 0]


def test_max_length_with_the_wrong_number_of_levels_the_example_works():
    ds = ds_of({"ll": [[[1], [2, 3]], [[4, 5, 6]]]}, {"ll": hd.List(hd.List(hd.Value("int32")))})
    with pytest.raises(ValueError, match=r"max_length for 'll' has 1 values, but the field has 2 ragged level\(s\).*e\.g\. \(8, 8\)"):
        dfn.from_hf(ds, streaming=False, shuffle=False, max_length={"ll": (3,)})
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, max_length={"ll": (8, 8)}), 2)
    assert out["ll"].shape == (2, 8, 8) and out["ll_length"].tolist() == [2, 1]
    assert out["ll"][0, :2, :2].tolist() == [[1, 0], [2, 3]] and out["ll"][1, 0, :3].tolist() == [4, 5, 6]
    assert int(out["ll"].sum()) == 21


def test_streaming_image_without_mode_a_colour_image_after_the_probe_names_image_mode(monkeypatch):
    from datarax_fn._convert import images

    monkeypatch.setattr(images, "PROBE_IMAGES", 1)  # the mode is decided from row 0 (grey)
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    colour = np.stack([grey, grey + 1, grey + 2], -1)
    ds = ds_of({"im": [png(grey), png(colour)]}, {"im": hd.Image()})
    with pytest.raises(ValueError, match=r"field 'im': row 1 .* would lose its colour. Pass image_mode=\{'im': 'RGB'\}"):
        load_all(dfn.from_hf(ds, streaming=True, shuffle=False), 2)
    out = load_all(dfn.from_hf(ds, streaming=True, shuffle=False, image_mode={"im": "RGB"}), 2)
    np.testing.assert_array_equal(out["im"], np.stack([np.repeat(grey[..., None], 3, -1), colour]))


def test_list_of_images_exclude_keys_works():
    ds = ds_of({"frames": [[png(np.zeros((2, 2), np.uint8))]], "y": [7]}, {"frames": hd.List(hd.Image()), "y": hd.Value("int32")})
    with pytest.raises(ValueError, match=r"field 'frames': a list of images has no array form.*exclude_keys=\['frames'\]"):
        dfn.from_hf(ds, streaming=False, shuffle=False)
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, exclude_keys=["frames"]), 1)
    assert out == {"y": out["y"]} and out["y"].tolist() == [7]


def test_unsupported_field_exclude_keys_and_transform_both_work():
    d = [decimal.Decimal("1.50"), decimal.Decimal("2.25")]
    ds = ds_of({"price": d, "y": [1, 2]}, {"price": hd.Value("decimal128(5, 2)"), "y": hd.Value("int32")})
    with pytest.raises(ValueError, match=r"'price'.*exclude_keys=\['price'\].*transform"):
        dfn.from_hf(ds, streaming=False, shuffle=False)
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, exclude_keys=["price"]), 2)
    assert list(out) == ["y"] and out["y"].tolist() == [1, 2]

    def cents(b):
        return {"cents": np.array([int(v * 100) for v in b["price"]], np.int32), "y": b["y"]}

    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, transform=cents), 2)
    assert out["cents"].tolist() == [150, 225] and out["y"].tolist() == [1, 2]


def test_length_leaf_clash_exclude_keys_and_renaming_transform_both_work():
    ds = ds_of({"s": ["ab", "c"], "s_length": [5, 6]}, {"s": hd.Value("string"), "s_length": hd.Value("int32")})
    with pytest.raises(ValueError, match=r"field 's': its length leaf 's_length' clashes.*exclude one with exclude_keys"):
        dfn.from_hf(ds, streaming=False, shuffle=False)
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, exclude_keys=["s_length"]), 2)
    assert dfn.decode_text(out, "s") == ["ab", "c"] and out["s_length"].tolist() == [2, 1]
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False,
                               transform=lambda b: {"s": b["s"], "declared_length": b["s_length"]}), 2)
    assert dfn.decode_text(out, "s") == ["ab", "c"] and out["declared_length"].tolist() == [5, 6]


def test_set_transform_formatting_both_fixes_work():
    ds = ds_of({"x": [1, 2]}, {"x": hd.Value("int32")})

    def double(b):
        return {"x": np.asarray(b["x"]) * 2}

    with pytest.raises(ValueError, match=r"with_transform/set_transform.*Pass the function as transform=.*reset_format\(\)"):
        dfn.from_hf(ds.with_transform(double), streaming=False, shuffle=False)
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, transform=double), 2)
    assert out["x"].tolist() == [2, 4]
    fmt = ds.with_transform(double)
    fmt.reset_format()
    assert load_all(dfn.from_hf(fmt, streaming=False, shuffle=False), 2)["x"].tolist() == [1, 2]


def test_iterable_dataset_eager_streaming_true_works():
    it = ds_of({"x": [4, 5, 6]}, {"x": hd.Value("int32")}).to_iterable_dataset()
    with pytest.raises(ValueError, match=r"an IterableDataset cannot load eagerly.*streaming=True"):
        dfn.from_hf(it, streaming=False)
    assert load_all(dfn.from_hf(it, streaming=True, shuffle=False), 3)["x"].tolist() == [4, 5, 6]


def test_streaming_transform_that_filters_works_in_both_modes():
    ds = ds_of({"x": [1, 2, 3, 4]}, {"x": hd.Value("int32")})

    def evens(b):
        x = np.asarray(b["x"])
        return {"x": x[x % 2 == 0]}

    assert dfn.get_batch(dfn.from_hf(ds, streaming=True, shuffle=False, transform=evens), 2)[1]["x"].tolist() == [2, 4]
    assert load_all(dfn.from_hf(ds, streaming=False, shuffle=False, transform=evens), 2)["x"].tolist() == [2, 4]
    kept = dfn.from_hf(ds, streaming=True, shuffle=False, filter=lambda b: b["x"] % 2 == 0)
    assert dfn.get_batch(kept, 2)[1]["x"].tolist() == [2, 4]


def test_key_option_given_as_a_string_the_list_form_works():
    ds = ds_of({"x": [1, 2], "y": [3, 4]}, {"x": hd.Value("int32"), "y": hd.Value("int32")})
    with pytest.raises(TypeError, match=r"include_keys must be a list of \(dotted\) feature names, e\.g\. \[.*got include_keys='x'"):
        dfn.from_hf(ds, streaming=False, include_keys="x")
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, include_keys=["x"]), 2)
    assert list(out) == ["x"] and out["x"].tolist() == [1, 2]


def pcm(samples: np.ndarray, sr: int) -> bytes:
    """Returns a 16-bit WAV of the integer ``samples`` (T,) or (T, C)."""
    x = samples.reshape(len(samples), -1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(x.astype("<i2").tobytes())
    return buf.getvalue()


def audio_ds(clips: list[bytes], sampling_rate=None) -> hd.Dataset:
    ds = hd.Dataset.from_dict({"au": [{"bytes": c, "path": None} for c in clips], "y": list(range(len(clips)))})
    return ds.cast_column("au", hd.Audio(sampling_rate=sampling_rate, decode=False))


MONO = np.array([0, 16384, -16384, 8192], np.int16)


def test_audio_of_different_channel_counts_a_mixing_transform_works():
    stereo = np.stack([MONO, MONO // 2], 1)
    ds = audio_ds([pcm(MONO, 8000), pcm(stereo, 8000)])
    with pytest.raises(ValueError, match=r"field 'au': clips have different channel counts.*transform that mixes"):
        dfn.from_hf(ds, streaming=False, shuffle=False)

    def mono(b):
        return {"au": [c.mean(axis=1) if c.ndim == 2 else c for c in b["au"]]}

    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, transform=mono), 2)
    np.testing.assert_array_equal(out["au"], np.stack([MONO / 32768, (MONO + MONO // 2) / 2 / 32768]).astype(np.float32))


def test_audio_of_different_sampling_rates_the_named_fix_works():
    ds = audio_ds([pcm(MONO, 8000), pcm(MONO, 16000)])
    with pytest.raises(ValueError, match=r"field 'au': clips have different sampling rates \[8000, 16000\]") as err:
        dfn.from_hf(ds, streaming=False, shuffle=False)
    assert "exclude_keys=['au']" in str(err.value)
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, exclude_keys=["au"]), 2)
    assert list(out) == ["y"] and out["y"].tolist() == [0, 1]


def test_audio_at_another_rate_than_declared_the_named_fix_works():
    ds = audio_ds([pcm(MONO, 8000)], sampling_rate=16000)
    with pytest.raises(ValueError, match=r"field 'au': row 0 has sampling rate 8000, the feature declares 16000") as err:
        dfn.from_hf(ds, streaming=False, shuffle=False)
    assert "ds.cast_column('au', datasets.Audio(sampling_rate=8000))" in str(err.value)
    fixed = ds.cast_column("au", hd.Audio(sampling_rate=8000))
    state = dfn.from_hf(fixed, streaming=False, shuffle=False)
    np.testing.assert_array_equal(load_all(state, 1)["au"], [MONO / 32768])


def test_unreadable_audio_names_row_and_exclude_keys_works():
    ds = audio_ds([pcm(MONO, 8000), b"not audio at all"])
    with pytest.raises(ValueError, match=r"field 'au': row 1 is not a.*exclude_keys=\['au'\]"):
        dfn.from_hf(ds, streaming=False, shuffle=False)
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, exclude_keys=["au"]), 2)
    assert list(out) == ["y"] and out["y"].tolist() == [0, 1]



DEEP = np.array([[0, 300], [65535, 7]], np.uint16)


def test_16bit_image_in_a_declared_8bit_feature_the_named_fixes_work():
    ds = ds_of({"im": [png(DEEP)]}, {"im": hd.Image(mode="L")})
    with pytest.raises(ValueError, match=r"field 'im': row 0 is a uint16 image with 1 channels.*image_mode=\{'im': <its mode>\}"):
        dfn.from_hf(ds, streaming=False, shuffle=False)
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, image_mode={"im": "I;16"}), 1)
    assert out["im"].dtype == np.uint16 and out["im"][0, :, :, 0].tolist() == DEEP.tolist()

    def to_8bit(b):
        return {"im": np.stack([(x >> 8).astype(np.uint8) for x in b["im"]])}

    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, transform=to_8bit), 1)
    assert out["im"][0, :, :, 0].tolist() == (DEEP >> 8).tolist()


def test_streaming_stereo_audio_in_a_mono_feature_a_mixing_transform_works():
    stereo = np.stack([MONO, MONO // 2], 1)
    ds = audio_ds([pcm(stereo, 8000), pcm(stereo, 8000)])
    with pytest.raises(ValueError, match=r"field 'au': clips at rows 0\.\. have 2 channels, the feature declares 1.*transform that mixes them to 1"):
        dfn.get_batch(dfn.from_hf(ds, streaming=True, shuffle=False, max_length=4), 2)

    def mono(b):
        return {"au": [c.mean(axis=1) for c in b["au"]]}

    out = load_all(dfn.from_hf(ds, streaming=True, shuffle=False, max_length=4, transform=mono), 2)
    want = ((MONO.astype(np.float32) + MONO // 2) / 2 / 32768).astype(np.float32)
    np.testing.assert_array_equal(out["au"], [want, want])
    assert out["au_length"].tolist() == [4, 4]


def test_percent_split_of_streamed_files_both_fixes_work(tmp_path):
    # JSON lines carry no row counts (parquet streams read theirs from the file metadata).
    ds_of({"x": [0, 1, 2, 3]}, {"x": hd.Value("int32")}).to_json(str(tmp_path / "train.jsonl"))
    with pytest.raises(ValueError, match=r"split='train\[:50%\]' needs the split's size.*'train\[:1000\]', or streaming=False"):
        dfn.from_hf(str(tmp_path), "train[:50%]", streaming=True, shuffle=False)
    out = load_all(dfn.from_hf(str(tmp_path), "train[:2]", streaming=True, shuffle=False), 2)
    assert out["x"].tolist() == [0, 1]
    state = dfn.from_hf(str(tmp_path), "train[:50%]", streaming=False, shuffle=False)
    assert len(state) == 2 and load_all(state, 2)["x"].tolist() == [0, 1]


@pytest.fixture(scope="module")
def no_keys_dir(tmp_path_factory) -> str:
    """Returns a data_dir holding a prepared TFDS dataset that declares no supervised_keys."""
    import tensorflow_datasets as tfds  # heavy; only the TFDS-only errors need it
    from tfds_fixtures import prepare

    class DfnNoKeys(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"a": np.int32, "b": tfds.features.ClassLabel(names=["n", "y"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(4):
                yield i, {"a": 10 * i, "b": i % 2}

    return prepare(DfnNoKeys, str(tmp_path_factory.mktemp("dfn_no_keys")))


def test_tfds_as_supervised_without_supervised_keys_the_named_fix_works(no_keys_dir):
    with pytest.raises(ValueError, match=r"declares no supervised_keys None; set as_supervised=False and pick features with "
                                         r"include_keys \(available: \['a', 'b'\]\)"):
        dfn.from_tfds("dfn_no_keys", data_dir=no_keys_dir, streaming=False, as_supervised=True)
    out = load_all(dfn.from_tfds("dfn_no_keys", data_dir=no_keys_dir, streaming=False, shuffle=False, as_supervised=False,
                                 include_keys=["a", "b"]), 4)
    assert sorted(zip(out["a"].tolist(), out["b"].tolist())) == [(0, 0), (10, 1), (20, 0), (30, 1)]


def test_tfds_local_files_only_with_download_the_named_fix_works(no_keys_dir):
    with pytest.raises(ValueError, match=r"local_files_only=True forbids network access.*Set those to False"):
        dfn.from_tfds("dfn_no_keys", data_dir=no_keys_dir, streaming=False, local_files_only=True, download=True)
    out = load_all(dfn.from_tfds("dfn_no_keys", data_dir=no_keys_dir, streaming=False, shuffle=False, local_files_only=True,
                                 download=False), 4)
    assert sorted(out["a"].tolist()) == [0, 10, 20, 30]


def test_transform_whose_shape_changes_by_chunk_the_named_fix_works():
    ds = ds_of({"s": ["a", "bb", "ccc", "d"]}, {"s": hd.Value("string")})

    def stacked(b):  # one array per chunk: its width is the chunk's longest string
        ids = [np.frombuffer(s.encode(), np.uint8).astype(np.int32) for s in b["s"]]
        return {"ids": np.stack([np.pad(x, (0, max(map(len, ids)) - len(x))) for x in ids])}

    with pytest.raises(ValueError, match=r"transform output field\(s\) \['ids'\] at rows 2\.\.3 differ from the probe's.*"
                                         r"a list of arrays for ragged rows, with max_length"):
        dfn.get_batch(dfn.from_hf(ds, streaming=True, shuffle=False, chunk_size=2, transform=stacked), 4)

    def listed(b):
        return {"ids": [np.frombuffer(s.encode(), np.uint8).astype(np.int32) for s in b["s"]]}

    out = load_all(dfn.from_hf(ds, streaming=True, shuffle=False, chunk_size=2, transform=listed, max_length=3), 4)
    assert out["ids"].tolist() == [[97, 0, 0], [98, 98, 0], [99, 99, 99], [100, 0, 0]]
    assert out["ids_length"].tolist() == [1, 2, 3, 1]


def test_max_length_naming_an_image_dropping_the_entry_works():
    ds = ds_of({"im": [png(np.full((2, 2), 3, np.uint8))], "l": [[1, 2]]}, {"im": hd.Image(mode="L"), "l": hd.List(hd.Value("int32"))})
    with pytest.raises(ValueError, match=r"max_length does not apply to images \('im'\).*Drop 'im' from max_length"):
        dfn.from_hf(ds, streaming=False, shuffle=False, max_length={"im": 4, "l": 3})
    out = load_all(dfn.from_hf(ds, streaming=False, shuffle=False, max_length={"l": 3}), 1)
    assert out["im"].tolist() == [[[[3], [3]], [[3], [3]]]] and out["l"].tolist() == [[1, 2, 0]]


def test_config_contradicting_streaming_the_named_config_works():
    with pytest.raises(ValueError, match=r"HFEagerConfig: streaming=True contradicts the config; use HFStreamingConfig instead"):
        dfn.HFEagerConfig(name="x", streaming=True)
    assert dfn.HFStreamingConfig(name="x", streaming=True).streaming is True
