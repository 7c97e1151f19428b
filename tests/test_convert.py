"""The conversion layer: every feature type, the dtype rules, errors, and a round-trip property."""

from __future__ import annotations

import datasets as hd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn import _convert as cv
from datarax_fn._hf import fields_from_hf
from hf_fixtures import png, wav


def arrow_cols(ds):
    t = ds.with_format("arrow")[:]
    return {k: t.column(k) for k in t.column_names}


def hf_convert(rows, features, **kw):
    ds = hd.Dataset.from_dict(rows, features=hd.Features(features))
    return cv.convert(arrow_cols(ds), fields_from_hf(ds.features), **kw)


# ----------------------------------------------------------------------------- numbers


def test_int64_narrows_when_values_fit():
    out = hf_convert({"x": [0, -5, 2**31 - 1]}, {"x": hd.Value("int64")})
    assert out["x"].dtype == np.int32 and out["x"].tolist() == [0, -5, 2**31 - 1]


def test_int64_overflow_names_field_and_x64():
    with pytest.raises(ValueError, match=r"'x'.*jax_enable_x64"):
        hf_convert({"x": [0, 2**40]}, {"x": hd.Value("int64")})


def test_float64_becomes_float32_and_small_dtypes_stay():
    out = hf_convert(
        {"f": [0.5, 1.25], "u": [1, 255], "b": [True, False], "h": [1.5, 2.0]},
        {"f": hd.Value("float64"), "u": hd.Value("uint8"), "b": hd.Value("bool"), "h": hd.Value("float16")},
    )
    assert {k: v.dtype for k, v in out.items()} == {
        "f": np.float32, "u": np.uint8, "b": np.bool_, "h": np.float16}
    assert out["f"].tolist() == [0.5, 1.25]


def test_array2d_uint8_keeps_dtype_unlike_numpy_format():
    rows = {"a": [np.full((2, 3), 200, np.uint8), np.zeros((2, 3), np.uint8)]}
    ds = hd.Dataset.from_dict(rows, features=hd.Features({"a": hd.Array2D((2, 3), "uint8")}))
    assert ds.with_format("numpy")[:]["a"].dtype == np.int64  # the HF widening we avoid
    out = cv.convert(arrow_cols(ds), fields_from_hf(ds.features))
    assert out["a"].dtype == np.uint8 and out["a"].shape == (2, 2, 3) and out["a"][0, 1, 2] == 200


def test_array3d_and_fixed_list_stack():
    out = hf_convert(
        {"a": [np.arange(24, dtype=np.float32).reshape(2, 3, 4)] * 2, "f": [[1, 2], [3, 4]]},
        {"a": hd.Array3D((2, 3, 4), "float32"), "f": hd.List(hd.Value("int16"), length=2)},
    )
    assert out["a"].shape == (2, 2, 3, 4) and out["a"][1, 1, 2, 3] == 23
    assert out["f"].dtype == np.int16 and out["f"].tolist() == [[1, 2], [3, 4]]


# ----------------------------------------------------------------------------- ragged


RAGGED = {"l": [[1], [2, 3, 4], []]}
RAGGED_F = {"l": hd.List(hd.Value("int64"))}


def test_ragged_without_max_length_names_field_and_options():
    with pytest.raises(ValueError, match=r"'l'.*max_length.*transform.*exclude"):
        hf_convert(RAGGED, RAGGED_F)


def test_ragged_pads_with_length_leaf():
    out = hf_convert(RAGGED, RAGGED_F, max_length={"l": 4})
    assert out["l"].tolist() == [[1, 0, 0, 0], [2, 3, 4, 0], [0, 0, 0, 0]]
    assert out["l"].dtype == np.int32 and out["l_length"].tolist() == [1, 3, 0]


def test_ragged_never_truncates_silently():
    with pytest.raises(ValueError, match=r"'l'.*row 1.*length 3.*truncate=True"):
        hf_convert(RAGGED, RAGGED_F, max_length=2)
    out = hf_convert(RAGGED, RAGGED_F, max_length=2, truncate=True)
    assert out["l"].tolist() == [[1, 0], [2, 3], [0, 0]] and out["l_length"].tolist() == [1, 2, 0]


def test_equal_length_variable_list_stacks_losslessly():
    out = hf_convert({"l": [[1, 2], [3, 4]]}, RAGGED_F)
    assert out["l"].tolist() == [[1, 2], [3, 4]] and "l_length" not in out


# ----------------------------------------------------------------------------- text


def test_text_is_padded_utf8_and_decodes():
    strings = ["", "héllo", "日本語", "a"]
    out = hf_convert({"s": strings}, {"s": hd.Value("string")})
    assert out["s"].dtype == np.uint8 and out["s"].shape == (4, 9)
    assert out["s_length"].tolist() == [0, 6, 9, 1]
    assert dfn.decode_text(out, "s") == strings


def test_text_max_length_pads_and_truncates_only_when_asked():
    out = hf_convert({"s": ["ab", "c"]}, {"s": hd.Value("string")}, max_length=5)
    assert out["s"].shape == (2, 5)
    with pytest.raises(ValueError, match=r"'s'.*row 0"):
        hf_convert({"s": ["abc", "c"]}, {"s": hd.Value("string")}, max_length=2)
    out = hf_convert({"s": ["abc", "c"]}, {"s": hd.Value("string")}, max_length=2, truncate=True)
    assert dfn.decode_text(out, "s") == ["ab", "c"]


def test_decode_text_errors_name_missing_keys():
    with pytest.raises(KeyError, match="s_length"):
        dfn.decode_text({"s": np.zeros((1, 2), np.uint8)}, "s")


# ----------------------------------------------------------------------------- structs, labels, nulls


def test_nested_struct_and_list_of_structs():
    out = hf_convert(
        {"st": [{"u": 1, "v": "a"}, {"u": 2, "v": "bc"}], "ls": [[{"p": 1.0}], [{"p": 2.0}, {"p": 3.0}]]},
        {"st": {"u": hd.Value("int32"), "v": hd.Value("string")}, "ls": hd.List({"p": hd.Value("float32")})},
        max_length={"ls": 3},
    )
    assert out["st"]["u"].tolist() == [1, 2]
    assert dfn.decode_text(out["st"], "v") == ["a", "bc"] and dfn.decode_text(out, "st.v") == ["a", "bc"]
    assert out["ls"]["p"].tolist() == [[1, 0, 0], [2, 3, 0]] and out["ls"]["p_length"].tolist() == [1, 2]


def test_class_label_is_int32_and_checked():
    out = hf_convert({"c": [0, 2, -1]}, {"c": hd.ClassLabel(names=["a", "b", "c"])})
    assert out["c"].dtype == np.int32 and out["c"].tolist() == [0, 2, -1]
    with pytest.raises(ValueError, match="'c'"):
        cv.convert({"c": np.array([5])}, {"c": cv.Label(("a", "b"))})
    assert cv.convert({"c": ["b", "a"]}, {"c": cv.Label(("a", "b"))})["c"].tolist() == [1, 0]


@pytest.mark.parametrize(
    "rows,features",
    [
        ({"x": [1, None, 3]}, {"x": hd.Value("int32")}),
        ({"x": ["a", None, "c"]}, {"x": hd.Value("string")}),
        ({"x": [[1], None, [2]]}, {"x": hd.List(hd.Value("int32"))}),
    ],
)
def test_none_names_field_and_row(rows, features):
    with pytest.raises(ValueError, match=r"'x'.*row 1"):
        hf_convert(rows, features, max_length=2)


def test_none_in_python_columns_names_field_and_row():
    with pytest.raises(ValueError, match=r"'y'.*row 2"):
        cv.convert({"y": [1.0, 2.0, None]}, {"y": cv.Tensor((), "float32")})


def test_unsupported_dtype_names_field():
    with pytest.raises(TypeError, match="'o'"):
        cv.jax_dtype(np.array(["a"], object), "o")


# ----------------------------------------------------------------------------- images


def test_images_grey_keeps_channel_and_rgb_rgba_palette():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (3, 7, 5), dtype=np.uint8)
    rgb = rng.integers(0, 256, (3, 7, 5, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (3, 4, 4, 4), dtype=np.uint8)
    feats = {"g": hd.Image(), "c": hd.Image(), "a": hd.Image()}
    out = hf_convert({"g": [png(x) for x in grey], "c": [png(x) for x in rgb], "a": [png(x) for x in rgba]}, feats)
    assert out["g"].shape == (3, 7, 5, 1) and np.array_equal(out["g"][..., 0], grey)
    assert out["c"].shape == (3, 7, 5, 3) and np.array_equal(out["c"], rgb)
    assert out["a"].shape == (3, 4, 4, 4) and np.array_equal(out["a"], rgba)
    import PIL.Image

    pal = PIL.Image.fromarray(rgb[0]).convert("P")
    out = cv.convert({"p": [pal, pal]}, {"p": cv.Image()})
    assert out["p"].shape == (2, 7, 5, 3)


def test_images_from_arrays_pil_dicts_and_paths(tmp_path):
    import PIL.Image

    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "a.png"
    path.write_bytes(png(x))
    col = [x, PIL.Image.fromarray(x), {"bytes": png(x), "path": None}, {"bytes": None, "path": str(path)}]
    out = cv.convert({"im": col}, {"im": cv.Image()}, num_threads=2)
    assert out["im"].shape == (4, 3, 4, 1) and all(np.array_equal(o[..., 0], x) for o in out["im"])


def test_image_decoding_in_threads_matches_serial():
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (300, 9, 8), dtype=np.uint8)
    col = [png(x) for x in imgs]
    a = cv.convert({"im": col}, {"im": cv.Image()}, num_threads=4)["im"]
    b = cv.convert({"im": col}, {"im": cv.Image()}, num_threads=1)["im"]
    assert np.array_equal(a, b) and np.array_equal(a[..., 0], imgs)


def test_images_of_different_sizes_need_a_resizing_transform():
    col = [png(np.zeros((4, 4), np.uint8)), png(np.ones((5, 3), np.uint8))]
    with pytest.raises(ValueError, match=r"'im'.*different shapes.*transform"):
        cv.convert({"im": col}, {"im": cv.Image()})

    def resize(batch):
        import PIL.Image

        ims = [np.asarray(PIL.Image.fromarray(x[..., 0]).resize((4, 4))) for x in batch["im"]]
        return {"im": np.stack(ims)[..., None]}

    out = cv.convert({"im": col}, {"im": cv.Image()}, transform=resize)
    assert out["im"].shape == (2, 4, 4, 1) and out["im"][1].min() == 1


def test_jpeg_decodes():
    x = np.full((8, 8, 3), 128, np.uint8)
    out = cv.convert({"im": [png(x, "JPEG")]}, {"im": cv.Image()})
    assert out["im"].shape == (1, 8, 8, 3) and abs(int(out["im"].mean()) - 128) <= 2


# ----------------------------------------------------------------------------- audio


def test_audio_wav_to_float32_with_sampling_rate():
    a, b = np.linspace(-0.5, 0.5, 100), np.linspace(0, 0.25, 60)
    ds = hd.Dataset.from_dict({"au": [{"bytes": wav(a), "path": None}, {"bytes": wav(b), "path": None}]})
    ds = ds.cast_column("au", hd.Audio(decode=False))
    with pytest.raises(ValueError, match="'au'.*max_length"):
        cv.convert(arrow_cols(ds), fields_from_hf(ds.features))
    out, meta = cv.convert_with_meta(arrow_cols(ds), fields_from_hf(ds.features), max_length=128)
    assert out["au"].dtype == np.float32 and out["au"].shape == (2, 128)
    assert out["au_length"].tolist() == [100, 60] and meta["au"]["sampling_rate"] == 8000
    np.testing.assert_allclose(out["au"][0, :100], a, atol=1e-4)
    assert not out["au"][1, 60:].any()


def test_audio_sampling_rate_mismatch_is_an_error():
    with pytest.raises(ValueError, match="'au'.*resample"):
        cv.convert({"au": [wav(np.zeros(4), 8000)]}, {"au": cv.Audio(16000)})


# ----------------------------------------------------------------------------- transform, keys


def test_transform_output_follows_the_same_rules():
    def tok(batch):
        ids = [np.frombuffer(s.encode(), np.uint8).astype(np.int64) for s in batch["s"]]
        return {"ids": ids, "n": np.array([len(s) for s in batch["s"]], np.int64), "s": batch["s"]}

    out = cv.convert({"s": ["ab", "xyz"]}, {"s": cv.Text()}, transform=tok, max_length={"ids": 4}, chunk_size=1)
    assert out["ids"].dtype == np.int32 and out["ids"].tolist() == [[97, 98, 0, 0], [120, 121, 122, 0]]
    assert out["n"].dtype == np.int32 and dfn.decode_text(out, "s") == ["ab", "xyz"]


def test_select_keys_errors_name_the_field_and_list_keys():
    fields = {"a": cv.Text(), "b": cv.Label(())}
    with pytest.raises(ValueError, match="include_keys and exclude_keys"):
        cv.select_keys(fields, ["a"], ["b"])
    with pytest.raises(ValueError, match=r"include_keys.*\['zz'\].*\['a', 'b'\]"):
        cv.select_keys(fields, ["zz"], None)
    with pytest.raises(ValueError, match="exclude_keys"):
        cv.select_keys(fields, None, ["q"])
    assert list(cv.select_keys(fields, None, ["a"])) == ["b"]


# ----------------------------------------------------------------------------- round trip


_ints = st.integers(-(2**31), 2**31 - 1)
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
_row = st.fixed_dictionaries(
    {
        "i": _ints,
        "f": st.floats(width=32, allow_nan=False),
        "b": st.booleans(),
        "s": _text,
        "c": st.integers(0, 2),
        "l": st.lists(st.integers(-100, 100), max_size=4),
        "a": st.lists(st.lists(st.integers(0, 255), min_size=3, max_size=3), min_size=2, max_size=2),
        "st": st.fixed_dictionaries({"u": _ints, "w": _text}),
    }
)
_FEATS = {
    "i": hd.Value("int64"),
    "f": hd.Value("float32"),
    "b": hd.Value("bool"),
    "s": hd.Value("string"),
    "c": hd.ClassLabel(names=["x", "y", "z"]),
    "l": hd.List(hd.Value("int32")),
    "a": hd.Array2D((2, 3), "uint8"),
    "st": {"u": hd.Value("int64"), "w": hd.Value("string")},
}


@settings(max_examples=15)
@given(st.lists(_row, min_size=1, max_size=6))
def test_eager_arrays_decode_back_to_the_rows(rows):
    ds = hd.Dataset.from_list(rows, features=hd.Features(_FEATS))
    state = dfn.from_hf(ds, streaming=False, max_length={"l": 4}, progress=False)
    d = {k: np.asarray(v) if not isinstance(v, dict) else {kk: np.asarray(vv) for kk, vv in v.items()}
         for k, v in state.data.items()}
    texts, wtexts = dfn.decode_text(d, "s"), dfn.decode_text(d["st"], "w")
    for r, row in enumerate(rows):
        got = {
            "i": int(d["i"][r]), "f": float(d["f"][r]), "b": bool(d["b"][r]), "s": texts[r], "c": int(d["c"][r]),
            "l": d["l"][r, : d["l_length"][r]].tolist(), "a": d["a"][r].tolist(),
            "st": {"u": int(d["st"]["u"][r]), "w": wtexts[r]},
        }
        assert got == row


def test_declared_ragged_list_rows_of_equal_length_are_still_padded():
    # A chunk whose ragged rows happen to share a length must get the same padded shape and
    # length leaf as any other chunk, or streamed batch shapes would change mid-stream.
    fields = {"seq": cv.Tensor(shape=(None,), dtype="int32")}
    out = cv.convert({"seq": [[1, 2], [3, 4]]}, fields, max_length=4)
    np.testing.assert_array_equal(out["seq"], [[1, 2, 0, 0], [3, 4, 0, 0]])
    np.testing.assert_array_equal(out["seq_length"], [2, 2])
    out = cv.convert({"seq": np.array([[1, 2], [3, 4]], np.int32)}, fields, max_length=3)
    np.testing.assert_array_equal(out["seq"], [[1, 2, 0], [3, 4, 0]])
    np.testing.assert_array_equal(out["seq_length"], [2, 2])
    # Without max_length, equal rows stack losslessly and unequal rows raise.
    out = cv.convert({"seq": [[1, 2], [3, 4]]}, fields)
    np.testing.assert_array_equal(out["seq"], [[1, 2], [3, 4]])
    assert "seq_length" not in out


# ----------------------------------------------------------------------------- PNG fast path
# PNGs are built by hand (filter bytes + zlib + chunks) because PIL's encoder picks the
# filters itself. Every result is compared with PIL's own decode, bit for bit, and the fast
# path must have decoded the images itself (no silent fallback to PIL).

_CTYPES = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> channels


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _filter_row(x: np.ndarray, prev: np.ndarray, kind: int, bpp: int) -> np.ndarray:
    """The PNG encoder side: filtered bytes of one scanline (int arrays, results mod 256)."""
    a = np.concatenate([np.zeros(bpp, int), x[:-bpp]])
    c = np.concatenate([np.zeros(bpp, int), prev[:-bpp]])
    b = prev
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    pred = {0: 0, 1: a, 2: b, 3: (a + b) // 2, 4: paeth}[kind]
    return (x - pred) % 256


def craft_png(img: np.ndarray, filters, ctype: int, idat_parts: int = 1, extra: bytes = b"",
              depth: int = 8, interlace: bool = False) -> bytes:
    """Returns a PNG of ``img`` (h, w, c) using ``filters[r]`` on row r, IDAT split in parts."""
    import struct
    import zlib

    h, w, c = img.shape
    bpp = c * depth // 8
    if interlace:  # Adam7, every pass unfiltered
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        subs = [img[y0::dy, x0::dx] for x0, y0, dx, dy in passes]
        raw = b"".join(b"\0" + row.tobytes() for s in subs if s.size for row in s)
    else:
        lines, prev = [], np.zeros(w * bpp, int)
        for r in range(h):
            x = (img[r].astype(">u2").view(np.uint8) if depth == 16 else img[r]).reshape(-1).astype(int)
            lines.append(bytes([filters[r]]) + _filter_row(x, prev, filters[r], bpp).astype(np.uint8).tobytes())
            prev = x
        raw = b"".join(lines)
    z = zlib.compress(raw)
    cut = np.linspace(0, len(z), idat_parts + 1).astype(int)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, int(interlace))
    idats = b"".join(_chunk(b"IDAT", z[lo:hi]) for lo, hi in zip(cut[:-1], cut[1:]))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + idats + _chunk(b"IEND", b"")


def pil_decode(data: bytes) -> np.ndarray:
    import io

    import PIL.Image

    a = np.asarray(PIL.Image.open(io.BytesIO(data)))
    return a[:, :, None] if a.ndim == 2 else a


def fast_decode(col: list) -> tuple[np.ndarray, list[int]]:
    res = cv._png_fast(len(col), col.__getitem__, None)
    assert res is not None, "the fast path did not apply"
    return res


def _filter_plan(n: int, h: int, rng) -> np.ndarray:
    """Row filters: image k row r uses (k + r) % 5, so every row sees every filter; some random rows."""
    plan = (np.arange(n)[:, None] + np.arange(h)[None, :]) % 5
    return np.where(rng.random((n, h)) < 0.3, rng.integers(0, 5, (n, h)), plan)


@pytest.mark.parametrize("ctype", [0, 2, 4, 6])
def test_png_fast_path_every_filter_matches_pil(ctype):
    rng = np.random.default_rng(ctype)
    n, h, w, c = 70, 6, 7, _CTYPES[ctype]  # odd width
    imgs = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    imgs[::3, :, : w // 2] = 250  # smooth patches too, so Average/Paeth predictors take every branch
    plan = _filter_plan(n, h, rng)
    col = [craft_png(x, f, ctype, idat_parts=1 + k % 3) for k, (x, f) in enumerate(zip(imgs, plan))]
    want = np.stack([pil_decode(b) for b in col])
    assert np.array_equal(want, imgs)
    out, todo = fast_decode(col)
    assert todo == [] and out.dtype == np.uint8 and np.array_equal(out, want)
    conv = cv.convert({"im": col}, {"im": cv.Image()})["im"]
    assert conv.shape == (n, h, w, c) and np.array_equal(conv, want) and conv.ctypes.data % 64 == 0


def test_png_fast_path_on_pil_encoded_and_arrow_chunked_columns():
    import pyarrow as pa

    rng = np.random.default_rng(7)
    imgs = (rng.integers(0, 4, (150, 28, 28)) * 60).astype(np.uint8)  # PIL picks its own filters
    col = [png(x) for x in imgs]
    out, todo = fast_decode(col)
    assert todo == [] and np.array_equal(out[..., 0], imgs)
    chunked = pa.chunked_array([pa.array(col[:40], pa.binary()), pa.array([], pa.binary()), pa.array(col[40:], pa.binary())])
    assert np.array_equal(cv.convert({"im": chunked}, {"im": cv.Image()})["im"][..., 0], imgs)
    ds = hd.Dataset.from_dict({"im": col}, features=hd.Features({"im": hd.Image()}))
    assert np.array_equal(cv.convert(arrow_cols(ds), fields_from_hf(ds.features))["im"][..., 0], imgs)


def test_chunked_arrow_null_image_names_the_global_row():
    import pyarrow as pa

    good = png(np.zeros((3, 3), np.uint8))
    typ = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    chunks = [pa.array([{"bytes": good, "path": None}] * 70, typ), pa.array([{"bytes": good, "path": None}, None], typ)]
    with pytest.raises(ValueError, match=r"'im'.*row 71"):
        cv.convert({"im": pa.chunked_array(chunks)}, {"im": cv.Image()})


@settings(max_examples=20, deadline=None)
@given(
    st.integers(1, 9), st.integers(1, 11), st.sampled_from([0, 2, 4, 6]), st.integers(0, 2**32 - 1),
    st.sampled_from(["random", "smooth", "constant"]),
)
def test_png_fast_path_property_matches_pil(h, w, ctype, seed, kind):
    rng = np.random.default_rng(seed)
    n, c = 64, _CTYPES[ctype]
    if kind == "random":
        imgs = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    elif kind == "smooth":
        base = rng.integers(0, 256, (n, 1, 1, c))
        imgs = ((base + np.arange(h)[:, None, None] * 3 + np.arange(w)[None, :, None] * 5) % 256).astype(np.uint8)
    else:
        imgs = np.broadcast_to(rng.integers(0, 256, (n, 1, 1, c), dtype=np.uint8), (n, h, w, c)).copy()
    plan = rng.integers(0, 5, (n, h))
    col = [craft_png(x, f, ctype, idat_parts=1 + int(rng.integers(0, 3))) for x, f in zip(imgs, plan)]
    out, todo = fast_decode(col)
    assert todo == [] and np.array_equal(out, imgs)
    assert np.array_equal(out, np.stack([pil_decode(b) for b in col]))


def test_png_fast_path_leaves_unusual_files_to_pil():
    import PIL.Image
    import io

    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (80, 5, 6, 3), dtype=np.uint8)
    plan = _filter_plan(80, 5, rng)
    col = [craft_png(x, f, 2) for x, f in zip(imgs, plan)]
    buf = io.BytesIO()
    PIL.Image.fromarray(imgs[10]).convert("P").save(buf, format="PNG")
    col[10] = buf.getvalue()  # palette
    col[20] = craft_png(imgs[20], [0] * 5, 2, interlace=True)  # Adam7
    col[30] = craft_png(imgs[30], plan[30], 2, extra=_chunk(b"tRNS", b"\0\1\0\2\0\3"))  # tRNS
    col[40] = png(imgs[40], "JPEG")
    col[50] = png(imgs[50, :, :, 0])  # greyscale: PIL converts it to the column's RGB
    bad = bytearray(craft_png(imgs[60], plan[60], 2))
    bad[-13] ^= 1  # corrupt the IDAT CRC (PIL skips IDAT CRCs): the fast path must defer to PIL
    col[60] = bytes(bad)
    out, todo = fast_decode(col)
    assert todo == [10, 20, 30, 40, 50, 60]
    conv = cv.convert({"im": col}, {"im": cv.Image()})["im"]
    want = np.stack([np.asarray(PIL.Image.open(io.BytesIO(b)).convert("RGB")) for b in col])
    assert np.array_equal(conv, want)
    assert np.array_equal(pil_decode(col[20]), imgs[20])  # the crafted interlaced file is valid


def test_png_fast_path_declines_whole_columns_it_cannot_decode():
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 256, (70, 4, 5, 1), dtype=np.uint8)
    col = [craft_png(x, [1] * 4, 0) for x in grey]
    assert cv._png_fast(len(col), col.__getitem__, "RGB") is None  # a mode conversion: PIL's job
    rgb = cv.convert({"im": col}, {"im": cv.Image(mode="RGB")})["im"]
    assert rgb.shape == (70, 4, 5, 3) and np.array_equal(rgb, np.repeat(grey, 3, axis=3))
    assert cv._png_fast(10, col.__getitem__, None) is None  # too few images to pay off
    wide = [craft_png(np.zeros((80, 80, 1), np.uint8), [0] * 80, 0)] * 70
    assert cv._png_fast(70, wide.__getitem__, None) is None  # large images: PIL is faster
    sixteen = [craft_png(np.full((4, 5, 1), 300, np.uint16), [2] * 4, 0, depth=16)] * 70
    assert cv._png_fast(70, sixteen.__getitem__, None) is None


def test_png_fast_path_errors_and_fallbacks_match_the_pil_path(monkeypatch):
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, (70, 4, 5, 1), dtype=np.uint8)
    col = [craft_png(x, [4] * 4, 0) for x in imgs]
    mixed = col[:33] + [craft_png(np.zeros((5, 4, 1), np.uint8), [0] * 5, 0)] + col[34:]
    with pytest.raises(ValueError, match=r"'im'.*different shapes"):
        cv.convert({"im": mixed}, {"im": cv.Image()})
    deep = col[:33] + [craft_png(np.full((4, 5, 1), 300, np.uint16), [2] * 4, 0, depth=16)] + col[34:]
    fast = cv.convert({"im": deep}, {"im": cv.Image()})["im"]  # the 16-bit row goes through PIL
    monkeypatch.setattr(cv, "_PNG_FAST_MIN_IMAGES", 10**9)
    assert np.array_equal(fast, cv.convert({"im": deep}, {"im": cv.Image()})["im"])
    with pytest.raises(ValueError, match=r"'im'.*different shapes"):
        cv.convert({"im": mixed}, {"im": cv.Image()})


def test_owned_arrays_copies_foreign_buffers_and_keeps_fresh_ones():
    import pyarrow as pa

    fresh = np.arange(10, dtype=np.int32)
    view = pa.array(np.arange(10, dtype=np.float32)).to_numpy()  # zero-copy, read-only
    out = cv.owned_arrays({"a": fresh, "b": {"c": view}})
    assert out["a"] is fresh
    c = out["b"]["c"]
    assert c is not view and not np.shares_memory(c, view) and np.array_equal(c, view)
    assert c.flags.writeable and c.ctypes.data % 64 == 0
