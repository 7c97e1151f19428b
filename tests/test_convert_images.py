"""Images: declared dtype and channels, order-independent promotion, one decoder for every backend."""

from __future__ import annotations

import io
import struct
import zlib

import datasets as hd
import numpy as np
import PIL.Image
import pytest
from convert_helpers import arrow_columns, convert, hf_convert, hf_dataset
from hf_fixtures import png
from hypothesis import given, settings
from hypothesis import strategies as st

from datarax_fn import _convert as cv
from datarax_fn._convert import decoders, images

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
LA = RNG.integers(0, 256, (6, 5, 2), dtype=np.uint8)


def raw_png(a: np.ndarray) -> bytes:
    """Returns a PNG of a uint8/uint16 (H, W, C) array, written by hand (PIL cannot write RGB16)."""
    h, w, c = a.shape
    depth = a.dtype.itemsize * 8
    rows = a.astype(a.dtype.newbyteorder(">")).reshape(h, -1).view(np.uint8)
    data = b"".join(b"\x00" + r.tobytes() for r in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def pil_pixels(data: bytes, mode: str | None = None) -> np.ndarray:
    img = PIL.Image.open(io.BytesIO(data))
    a = np.asarray(img.convert(mode) if mode else img)
    return a[:, :, None] if a.ndim == 2 else a


def test_modes_keep_their_channels_and_equal_hf_numpy_format():
    rows = {"g": [png(GREY)], "c": [png(RGB)], "a": [png(RGBA)], "la": [png(LA)]}
    feats = {k: hd.Image() for k in rows}
    out = hf_convert(rows, feats)
    ref = hf_dataset(rows, feats).with_format("numpy")[:]
    for k in rows:
        want = ref[k][0] if ref[k][0].ndim == 3 else ref[k][0][:, :, None]
        assert out[k].dtype == np.uint8 and np.array_equal(out[k][0], want)
    assert out["g"].shape == (1, 6, 5, 1) and out["la"].shape == (1, 6, 5, 2)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_undeclared_channels_are_promoted_whatever_the_row_order(order):
    col = [[png(GREY), png(RGB)][i] for i in order]
    out = hf_convert({"im": col}, {"im": hd.Image()})["im"]
    grey_row, rgb_row = order.index(0), order.index(1)
    assert out.shape == (2, 6, 5, 3)
    assert np.array_equal(out[rgb_row], RGB) and np.array_equal(out[grey_row], pil_pixels(png(GREY), "RGB"))


def test_promotion_keeps_alpha_and_colour_losslessly():
    out = convert({"im": [png(LA), png(RGB), png(GREY)]}, {"im": cv.Image()})["im"]
    assert out.shape == (3, 6, 5, 4)
    assert np.array_equal(out[0], pil_pixels(png(LA), "RGBA")) and np.array_equal(out[1], pil_pixels(png(RGB), "RGBA"))
    assert np.array_equal(out[2], pil_pixels(png(GREY), "RGBA"))


def test_declared_mode_converts_like_hf_decode():
    rows = {"im": [png(RGB), png(RGBA)]}
    for mode in ("L", "RGB", "LA"):
        feats = {"im": hd.Image(mode=mode)}
        out = hf_convert(rows, feats)["im"]
        ref = np.stack(hf_dataset(rows, feats).with_format("numpy")["im"])
        assert np.array_equal(out, ref if ref.ndim == 4 else ref[..., None]), mode


def test_image_mode_option_and_streaming_needs_it():
    fields = {"im": cv.Image()}
    with pytest.raises(ValueError, match=r"'im': the feature declares no channel count.*image_mode=\{'im': 'RGB'\}"):
        cv.Converter(fields, static=True)
    with pytest.raises(ValueError, match="image_mode must be one of"):
        cv.Converter(fields, image_mode="RGBX")
    cols = {"im": [png(GREY), png(GREY)]}
    conv = cv.Converter(fields, static=True, image_mode={"im": "RGB"}, probe=cols)
    assert conv.element_spec["im"].shape == (6, 5, 3)
    assert np.array_equal(conv(cols)["im"][0], pil_pixels(png(GREY), "RGB"))
    assert convert(cols, fields, image_mode="L")["im"].shape == (2, 6, 5, 1)


def test_tfds_uint16_images_keep_their_dtype():
    deep = RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    grey = RNG.integers(0, 65536, (6, 5, 1), dtype=np.uint16)
    out = convert({"d": [raw_png(deep)], "g": [raw_png(grey)]},
                  {"d": cv.Image((None, None, 3), "uint16"), "g": cv.Image((6, 5, 1), "uint16")})
    assert out["d"].dtype == np.uint16 and np.array_equal(out["d"][0], deep)
    assert out["g"].dtype == np.uint16 and np.array_equal(out["g"][0], grey)
    spec = cv.Converter({"g": cv.Image((6, 5, 1), "uint16")}, static=True).element_spec
    assert spec["g"].dtype == np.uint16 and spec["g"].shape == (6, 5, 1)


def test_hf_16_bit_grey_needs_a_declared_mode_and_the_fix_works():
    grey = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
    rows = {"im": [raw_png(grey[:, :, None])]}
    with pytest.raises(ValueError, match=r"'im': row 0 is a uint16 image.*image_mode=\{'im': 'I;16'\}"):
        hf_convert(rows, {"im": hd.Image()})
    out = hf_convert(rows, {"im": hd.Image()}, image_mode={"im": "I;16"})
    assert out["im"].dtype == np.uint16 and np.array_equal(out["im"][0, :, :, 0], grey)


def test_tfds_float32_images_are_bitcast_back():
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    data = png(x[:, :, None].view(np.uint8).reshape(4, 3, 4))
    out = convert({"f": [data]}, {"f": cv.Image((4, 3, 1), "float32")})
    assert out["f"].dtype == np.float32 and np.array_equal(out["f"][0, :, :, 0], x)


def test_images_of_different_sizes_raise_naming_rows_and_the_resizing_fix_works():
    col = [png(np.zeros((4, 4), np.uint8)), png(np.ones((5, 3), np.uint8))]
    with pytest.raises(ValueError, match=r"'im': row 8 has shape \(5, 3, 1\), other images have \(4, 4, 1\).*resize"):
        cv.Converter({"im": cv.Image()})({"im": col}, row0=7)
    with pytest.raises(ValueError, match="max_length does not apply to images"):
        cv.Converter({"im": cv.Image()}, max_length={"im": 4})

    def resize(batch):
        ims = [np.asarray(PIL.Image.fromarray(x[..., 0]).resize((4, 4))) for x in batch["im"]]
        return {"im": np.stack(ims)[..., None]}

    out = cv.Converter({"im": cv.Image()}, transform=resize, probe={"im": col})({"im": col})
    assert out["im"].shape == (2, 4, 4, 1) and out["im"].dtype == np.uint8
    assert out["im"][0].max() == 0 and out["im"][1].min() == 1


def test_palette_paths_pil_images_and_dicts(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png(GREY))
    pal = PIL.Image.fromarray(RGB).convert("P")
    col = [GREY, PIL.Image.fromarray(GREY), {"bytes": png(GREY), "path": None}, {"bytes": None, "path": str(path)}]
    out = convert({"im": col}, {"im": cv.Image()}, num_threads=2)["im"]
    assert out.shape == (4, 6, 5, 1) and all(np.array_equal(o[..., 0], GREY) for o in out)
    out = convert({"p": [pal]}, {"p": cv.Image()})["p"]
    assert np.array_equal(out[0], np.asarray(pal.convert("RGB")))


@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("kind", ["rgb", "grey", "progressive"])
def test_jpeg_pixels_equal_pil_decoding_of_the_same_bytes(subsampling, kind):
    h, w = (17, 23) if subsampling else (64, 48)
    smooth = np.linspace(0, 255, h * w * 3).reshape(h, w, 3).astype(np.uint8)
    arr = smooth[:, :, 0] if kind == "grey" else smooth
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, "JPEG", quality=85, subsampling=subsampling, progressive=kind == "progressive")
    data = buf.getvalue()
    out = hf_convert({"im": [data, data]}, {"im": hd.Image()})["im"]
    assert np.array_equal(out[1], pil_pixels(data))


def jpeg(a: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(a).save(buf, "JPEG", **options)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (17, 23), (64, 48), (255, 129)])
def test_jpeg_library_decoder_is_bit_exact_with_pil_on_a_varied_set(size):
    rng = np.random.default_rng(size[0])
    h, w = size
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 256, (h, w), dtype=np.uint8),
              np.linspace(0, 255, h * w * 3).reshape(h, w, 3).astype(np.uint8)]
    checked = 0
    for a in arrays:
        for subsampling in (0, 1, 2):
            for quality in (30, 90, 100):
                for progressive in (False, True):
                    try:
                        data = jpeg(a, quality=quality, subsampling=subsampling, progressive=progressive)
                    except OSError:  # libjpeg cannot write some tiny progressive files
                        continue
                    fast = decoders.decode_fast(data)
                    assert fast is not None and np.array_equal(fast, decoders.decode_pil(data))
                    checked += 1
    assert checked >= 36


def test_jpeg_with_exif_orientation_or_cmyk_is_decoded_like_hf():
    a = np.zeros((4, 6, 3), np.uint8)
    a[0, 0] = 255
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    PIL.Image.fromarray(a).save(buf, "JPEG", quality=100, exif=exif)
    rows = {"im": [buf.getvalue()]}
    out = hf_convert(rows, {"im": hd.Image()})["im"]
    ref = hf_dataset(rows, {"im": hd.Image()}).with_format("numpy")["im"][0]
    assert out.shape == (1, 6, 4, 3) and np.array_equal(out[0], ref)
    cmyk = io.BytesIO()
    PIL.Image.fromarray(RGBA, "CMYK").save(cmyk, "JPEG")
    assert decoders.decode_fast(cmyk.getvalue()) is None
    out = convert({"im": [cmyk.getvalue()]}, {"im": cv.Image()})["im"]
    assert np.array_equal(out[0], np.asarray(PIL.Image.open(io.BytesIO(cmyk.getvalue())).convert("RGB")))


def test_plain_png_and_jpeg_take_the_library_decoders():
    assert decoders.decode_fast(png(RGB)) is not None and decoders.decode_fast(jpeg(RGB)) is not None
    assert decoders.decode_fast(png(LA)) is None  # libspng has no 8-bit grey+alpha output
    assert decoders._libspng() is not None  # libspng's symbols inside pyspng's extension (ctypes) moved


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_with_transparency_or_exif_anywhere_is_left_to_pil():
    grey = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(grey).save(buf, "PNG", transparency=7)  # a tRNS chunk before the image data
    with_trns = buf.getvalue()
    plain = png(RGB)
    iend = plain.rindex(b"IEND") - 4
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    # eXIf after the image data (allowed by the PNG spec): PIL applies it, libspng would not.
    late_exif = plain[:iend] + _chunk(b"eXIf", exif.tobytes()[6:]) + plain[iend:]
    assert decoders.decode_fast(plain) is not None
    for data in (with_trns, late_exif):
        assert decoders.decode_fast(data) is None
        ref = decoders.decode_pil(data)
        assert np.array_equal(images.decode(data, "im", 0).reshape(ref.shape), ref)
    assert decoders.decode_pil(late_exif).shape == (5, 6, 3)  # PIL applied the rotation


def test_threads_and_the_pil_fallback_give_the_same_pixels(monkeypatch):
    imgs = RNG.integers(0, 256, (300, 9, 8, 3), dtype=np.uint8)
    col = [png(x) for x in imgs]
    a = convert({"im": col}, {"im": cv.Image()}, num_threads=4)["im"]
    b = convert({"im": col}, {"im": cv.Image()}, num_threads=1)["im"]
    monkeypatch.setattr(decoders, "decode_fast", lambda data: None)
    c = convert({"im": col}, {"im": cv.Image()}, num_threads=1)["im"]
    assert np.array_equal(a, imgs) and np.array_equal(b, imgs) and np.array_equal(c, imgs)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 3, 4]), st.sampled_from(["u8", "u16"]),
       st.integers(0, 2**31))
def test_png_decoder_is_bit_exact_with_pil_and_with_the_pixels(h, w, c, depth, seed):
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if depth == "u8" else np.uint16
    if (c, depth) == (2, "u16"):  # libspng has no 16-bit grey+alpha output: PIL reads 8 bits (documented)
        c = 1
    a = rng.integers(0, np.iinfo(dtype).max + 1, (h, w, c), dtype=dtype)
    data = raw_png(a)
    got = images.decode(data, "im", 0)
    assert got.dtype == dtype and np.array_equal(got, a)
    if dtype == np.uint8:
        assert np.array_equal(got, pil_pixels(data))
    elif c == 1:
        assert np.array_equal(got, pil_pixels(data).astype(np.uint16))


def test_tfds_encoded_bytes_in_a_numpy_object_column():
    col = np.array([png(RGB), png(RGB)], object)
    out = convert({"im": col}, {"im": cv.Image((6, 5, 3))})
    assert np.array_equal(out["im"], np.stack([RGB, RGB]))


def test_null_image_names_the_global_row():
    ds = hf_dataset({"im": [png(GREY), None]}, {"im": hd.Image()})
    with pytest.raises(ValueError, match=r"'im': missing value \(None\) at row 41\b"):
        cv.Converter(cv.fields_from_hf(ds.features))(arrow_columns(ds), row0=40)


def test_memory_estimate_reads_image_headers_exactly():
    col = [png(GREY), png(RGB), png(GREY)]
    conv = cv.Converter({"im": cv.Image()})
    assert cv.estimate_nbytes(conv, {"im": col}) == conv({"im": col})["im"].nbytes == 3 * 6 * 5 * 3
    assert cv.estimate_nbytes({"im": cv.Image((6, 5, 1))}, {"im": col}) == 3 * 6 * 5


# ----------------------------------------------------------------------------- damaged files

def flipped(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def pil_or_error(data: bytes) -> np.ndarray | None:
    """Returns PIL's pixels (as HF's reader decodes them), or None where PIL refuses the file."""
    try:
        a = decoders.decode_pil(data)
    except (OSError, ValueError, SyntaxError):
        return None
    return a[:, :, None] if a.ndim == 2 else a


def libpng_reads(data: bytes) -> bool:
    """Returns whether TensorFlow's libpng decoder (TFDS's tfrecord reader) decodes a PNG. It checks
    every chunk CRC up to the end chunk, where PIL and OpenCV check neither for the image data."""
    if data[:8] != decoders.PNG_SIG:
        return True
    from datarax_fn._loaders.tfds_columns import tf_module


    tf = tf_module()  # TensorFlow with GPUs hidden
    try:
        tf.io.decode_png(data)
    except tf.errors.OpError:
        return False
    return True


def assert_like_pil_on_every_bit_flip(data: bytes) -> int:
    """Checks that every single-bit flip of ``data`` decodes to PIL's pixels or raises naming
    the field and row where PIL or, for PNG, TensorFlow refuses it; returns how many flips were refused."""
    refused = 0
    for bit in range(len(data) * 8):
        bad = flipped(data, bit)
        want = pil_or_error(bad)
        want = want if want is None or libpng_reads(bad) else None
        if want is None:
            refused += 1
            with pytest.raises(ValueError, match=r"field 'im': row 3 is not a readable image"):
                images.decode(bad, "im", 3)
        else:
            assert np.array_equal(images.decode(bad, "im", 3), want), bit
    return refused


@pytest.mark.slow  # every flip TensorFlow is asked about (its import included): about 15 s
def test_png_bit_flips_are_refused_where_pil_refuses_them():
    smooth = np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3).astype(np.uint8)
    data = png(smooth)
    assert decoders.decode_fast(data) is not None  # the library path is the one under test
    assert assert_like_pil_on_every_bit_flip(data) > 500
    # One flipped bit inside the compressed pixels, its chunk CRC rewritten to match: only the
    # zlib adler32 can tell, and PIL checks it.
    start = data.index(b"IDAT") - 4
    length = struct.unpack_from(">I", data, start)[0]
    body = flipped(data, (start + 8 + length // 2) * 8)[start + 4 : start + 8 + length]
    forged = data[:start + 4] + body + struct.pack(">I", zlib.crc32(body)) + data[start + 12 + length:]
    assert pil_or_error(forged) is None
    with pytest.raises(ValueError, match="row 3 is not a readable image"):
        images.decode(forged, "im", 3)


def test_jpeg_bit_flips_are_refused_where_pil_refuses_them():
    import cv2

    a = np.linspace(0, 255, 16 * 24 * 3).reshape(16, 24, 3).astype(np.uint8)
    data = jpeg(a, quality=90)
    assert decoders.decode_fast(data) is not None
    assert assert_like_pil_on_every_bit_flip(data) > 300
    # OpenCV stops after the last pixel row: a lost end-of-image marker still gives it pixels.
    cut_eoi = flipped(data, (len(data) - 1) * 8)
    assert cv2.imdecode(np.frombuffer(cut_eoi, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    assert pil_or_error(cut_eoi) is None and decoders.decode_fast(cut_eoi) is None


def test_damaged_image_in_a_real_dataset_names_the_field_and_row():
    good = png(RGB)
    start = good.index(b"IDAT") + 4
    bad = flipped(good, (start + 10) * 8)
    assert pil_or_error(bad) is None
    with pytest.raises(ValueError, match=r"field 'im': row 42 is not a readable image.*exclude_keys=\['im'\]"):
        cv.Converter({"im": cv.Image()})({"im": [good, bad]}, row0=41)
    ds = hf_dataset({"im": [good, good, bad]}, {"im": hd.Image()})
    with pytest.raises(ValueError, match=r"field 'im': row 2 is not a readable image"):
        cv.Converter(cv.fields_from_hf(ds.features))(arrow_columns(ds))


def bomb_png(width: int, height: int) -> bytes:
    """Returns a valid-looking grey PNG of a few hundred bytes declaring ``width x height``."""
    rows = zlib.compress(b"\x00" * (width + 1) * 16)  # a few rows only: the rest is missing
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + (
        _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))


def test_a_png_bomb_is_refused_from_its_header_naming_the_row_and_the_limit():
    bomb = bomb_png(100_000, 100_000)  # 10^10 pixels declared in 2 KB
    assert len(bomb) < 2048
    with pytest.raises(PIL.Image.DecompressionBombError):
        PIL.Image.open(io.BytesIO(bomb))
    with pytest.raises(ValueError, match=r"field 'im': row 6 declares an image of 10000000000 pixels.*"
                                         r"PIL.Image.MAX_IMAGE_PIXELS = 5000000000 \(or None"):
        cv.Converter({"im": cv.Image()})({"im": [png(GREY), bomb]}, row0=5)
    with pytest.raises(ValueError, match=r"'im': row 1 declares an image of 10000000000 pixels"):
        cv.estimate_nbytes({"im": cv.Image()}, {"im": [png(GREY), bomb]})


@pytest.mark.parametrize("kind", ["png", "jpeg", "grey+alpha png"])
def test_pil_pixel_limit_holds_in_every_decoder_and_the_named_fix_works(kind, monkeypatch):
    data = {"png": png(RGB), "jpeg": jpeg(RGB), "grey+alpha png": png(LA)}[kind]  # fast, fast, PIL
    want = pil_pixels(data)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 14)  # 6x5 = 30 pixels > 2 * 14
    with pytest.raises(ValueError, match=r"'im': row 2 declares an image of 30 pixels, over PIL's limit of 28 .*"
                                         r"MAX_IMAGE_PIXELS = 15 "):
        cv.Converter({"im": cv.Image()})({"im": [data, data]}, row0=2)
    with pytest.raises(ValueError, match=r"'im': row 0 declares an image of 30 pixels"):
        images.decode(data, "im", 0)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 15)  # the fix the message names
    with pytest.warns(PIL.Image.DecompressionBombWarning, match="30 pixels"):  # as PIL warns, up to twice the limit
        assert np.array_equal(convert({"im": [data]}, {"im": cv.Image()})["im"][0], want)


def test_image_mode_naming_a_field_that_is_not_an_image_is_an_error_naming_the_key():
    import datarax_fn as dfn

    rows = {"im": [png(GREY)], "text": ["a"], "meta": [{"n": 1}], "s": [{"im": png(RGB)}]}
    feats = {"im": hd.Image(), "text": hd.Value("string"), "meta": {"n": hd.Value("int32")}, "s": {"im": hd.Image()}}
    ds = hf_dataset(rows, feats)
    fields = cv.fields_from_hf(ds.features)
    with pytest.raises(ValueError, match=r"image_mode: key 'text' is a text field, not an image; image_mode applies "
                                         r"only to images \(\['im', 's.im'\]\). Drop 'text'"):
        dfn.from_hf(ds, streaming=False, shuffle=False, image_mode={"text": "RGB"})
    with pytest.raises(ValueError, match=r"key 'meta' holds no image"):
        cv.Converter(fields, image_mode={"meta": "L"})
    with pytest.raises(ValueError, match=r"key 'meta.n' is a tensor field"):
        cv.Converter(fields, image_mode={"meta.n": "L"})
    with pytest.raises(ValueError, match=r"key 'nope' names no field"):
        cv.Converter(fields, image_mode={"nope": "L"})
    out = cv.Converter(fields, image_mode={"s": "L", "im": "RGB"})(arrow_columns(ds))  # a struct holding an image
    assert out["s"]["im"].shape == (1, 6, 5, 1) and out["im"].shape == (1, 6, 5, 3)
    assert np.array_equal(out["s"]["im"][0], pil_pixels(png(RGB), "L"))


# ----------------------------------------------------------------------------- undeclared modes in streams

def test_streaming_an_image_without_a_mode_takes_it_from_the_first_images(caplog):
    import logging

    import datarax_fn as dfn

    digits = RNG.integers(0, 256, (70, 6, 5), dtype=np.uint8)  # MNIST's shape on the hub: Image() of grey PNGs
    ds = hf_dataset({"im": [png(d) for d in digits]}, {"im": hd.Image()})
    with caplog.at_level(logging.INFO, logger="datarax_fn"):
        state = dfn.from_hf(ds, streaming=True, shuffle=False)
    assert "field 'im' declares no image mode; the stream holds its images as 'L', decided from its first 64" in caplog.text
    assert dfn.element_spec(state)["im"].shape == (6, 5, 1)
    _, batch = dfn.get_batch(state, 70)
    assert np.array_equal(np.asarray(batch["im"])[..., 0], np.stack(ds.with_format("numpy")["im"]))


def test_probed_mode_promotes_later_images_losslessly_and_refuses_loss(monkeypatch):
    monkeypatch.setattr(images, "PROBE_IMAGES", 2)
    grey_rgb = np.repeat(GREY[..., None], 3, -1)  # colour channels, grey pixels
    opaque = np.concatenate([RGB, np.full((6, 5, 1), 255, np.uint8)], -1)
    palette = PIL.Image.fromarray(RGB).convert("P")  # decoded as RGB
    fields = {"im": cv.Image()}

    def stream(first: list, later: list) -> dict:
        conv = cv.Converter(fields, static=True, probe={"im": first})
        return conv, conv({"im": later}, row0=10)

    conv, out = stream([png(GREY), png(GREY)], [png(grey_rgb), png(GREY)])
    assert conv.meta["im"] == {"image_mode": "L", "image_mode_probed_rows": 2}
    assert np.array_equal(out["im"][0, ..., 0], GREY) and conv.element_spec["im"].shape == (6, 5, 1)
    conv, out = stream([png(RGB), png(GREY)], [png(GREY), png(opaque), png(np.asarray(palette.convert("RGB")))])
    assert conv.meta["im"]["image_mode"] == "RGB"
    assert np.array_equal(out["im"][0], grey_rgb) and np.array_equal(out["im"][1], RGB)
    _, out = stream([png(RGB)], [palette])
    assert np.array_equal(out["im"][0], np.asarray(palette.convert("RGB")))
    _, out = stream([png(LA)], [png(GREY)])
    assert np.array_equal(out["im"][0], np.concatenate([GREY[..., None], np.full((6, 5, 1), 255, np.uint8)], -1))
    for first, later, lost, fix in [([png(GREY)], png(RGB), "colour", "RGB"), ([png(RGB)], png(RGBA), "transparency", "RGBA"),
                                    ([png(GREY)], png(LA), "transparency", "LA"), ([png(LA)], png(RGB), "colour", "RGBA")]:
        with pytest.raises(ValueError, match=rf"field 'im': row 11 .*decided from its first 1 images.*lose its {lost}\. "
                                             rf"Pass image_mode=\{{'im': '{fix}'\}}"):
            stream(first, [png(GREY), later])
        ref = cv.Converter(fields, static=True, probe={"im": first}, image_mode={"im": fix})({"im": [later]})["im"][0]
        assert np.array_equal(ref, pil_pixels(later, fix))  # the fix the message names


def test_probe_image_mode_is_the_smallest_lossless_mode():
    u16 = np.zeros((2, 2, 1), np.uint16)
    assert images.probe_image_mode([GREY[..., None], RGB]) == "RGB"
    assert images.probe_image_mode([LA, GREY[..., None]]) == "LA"
    with pytest.raises(ValueError, match=r"field 'x': .*a uint16 image with 1 channel\(s\).*image_mode=\{'x': 'I;16'\}"):
        images.probe_image_mode([RGB, u16], "x")  # as an eager load of 16-bit grey asks
