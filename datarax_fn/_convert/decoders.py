"""Image codecs: maintained decoder libraries where they give PIL's pixels exactly, else PIL.

PNG: libspng (``pyspng``) for 8/16-bit grey, RGB and RGBA without palette, ``tRNS`` or
``eXIf`` (libspng has no 8-bit grey+alpha output). JPEG: libjpeg-turbo through OpenCV
(``cv2.imdecode``) for 8-bit grey or YCbCr files without an Adobe or Exif segment. PIL decodes
everything else and is the reference: HF's own reader (including its EXIF orientation).
``tests/test_convert_images.py`` checks the libraries against PIL bit for bit.
"""

from __future__ import annotations

import functools
import io
import os
import struct
from typing import Any

import numpy as np

PNG_SIG = b"\x89PNG\r\n\x1a\n"
_CHUNK = struct.Struct(">I4s")  # a PNG chunk header: data length, type
_EXIF_ORIENTATION = 0x0112


@functools.cache
def _spng() -> Any:
    """Returns libspng's decode call ``(bytes, format) -> (H, W, C) array``, or None without pyspng."""
    try:
        import pyspng  # optional fast PNG decoder; PIL is the fallback
    except ImportError:
        return None
    # pyspng.load builds a format table and drops the channel axis of grey images on every
    # call; the binding underneath returns (H, W, C) directly, which is what we keep.
    c = getattr(pyspng, "_pyspng_c", None)
    if c is not None and hasattr(c, "spng_decode_image_bytes") and hasattr(c, "SPNG_FMT_AUTO"):
        decode, auto = c.spng_decode_image_bytes, c.SPNG_FMT_AUTO
        return lambda d: decode(d, auto)
    return lambda d: pyspng.load(d)


@functools.cache
def _cv2() -> Any:
    try:
        import cv2  # optional fast JPEG decoder (opencv-python-headless); PIL is the fallback
    except ImportError:
        return None
    return cv2


def _png_plain(d: bytes) -> bool:
    """Returns whether libspng decodes this PNG (signature already checked) exactly as PIL does."""
    if len(d) < 33:
        return False
    depth, ctype = d[24], d[25]
    # 8-bit grey, RGB, RGBA (libspng has no 8-bit grey+alpha output); 16-bit any of the four.
    if not ((depth == 8 and ctype in (0, 2, 6)) or (depth == 16 and ctype in (0, 2, 4, 6))):
        return False
    # Walk the chunk headers (a few per file) rather than search the whole file: tRNS
    # precedes the image data, eXIf may follow it, and neither can hide in compressed bytes.
    pos, end, data = 8, len(d) - 8, False
    while pos <= end:
        length, kind = _CHUNK.unpack_from(d, pos)
        if kind == b"IDAT":
            data = True
        elif kind == b"eXIf" or (kind == b"tRNS" and not data):
            return False
        elif kind == b"IEND":
            break
        pos += 12 + length
    return True


def _jpeg_plain(d: bytes) -> bool:
    """Returns whether this is an 8-bit grey or YCbCr JPEG without Adobe or Exif segments."""
    if d[:2] != b"\xff\xd8":
        return False
    pos, n = 2, len(d)
    while pos + 10 <= n:
        if d[pos] != 0xFF:
            return False
        marker = d[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xEE or (marker == 0xE1 and d[pos + 4 : pos + 8] == b"Exif"):
            return False  # Adobe colour transforms and EXIF orientation: PIL's handling is the reference
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker in (0xC0, 0xC1, 0xC2) and d[pos + 4] == 8 and d[pos + 9] in (1, 3)
        pos += 2 + int.from_bytes(d[pos + 2 : pos + 4], "big")
    return False


def decode_fast(d: bytes) -> np.ndarray | None:
    """Returns the image decoded by a library that matches PIL, or None where PIL must decode."""
    if d[:8] == PNG_SIG:
        spng = _spng()
        if spng is None or not _png_plain(d):
            return None
        try:
            a = spng(d)
        except RuntimeError:  # a file libspng refuses: PIL decides (and names the error)
            return None
        if a.dtype == np.uint16 and d[25] in (0, 2):  # 16-bit grey/RGB come with an added opaque alpha
            a = a[:, :, : 1 if d[25] == 0 else 3]
        return a
    cv2 = _cv2()
    if cv2 is None or not _jpeg_plain(d):
        return None
    a = cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None:
        return None
    return cv2.cvtColor(a, cv2.COLOR_BGR2RGB) if a.ndim == 3 else a


def decode_pil(obj: Any) -> np.ndarray:
    """Returns an image (bytes, path or PIL image) decoded by PIL, as HF's reader does, with
    modes PIL cannot hold as plain channels converted: 1 -> L, P -> RGB(A), CMYK & co -> RGB."""
    from PIL import Image as PILImage  # heavy; only images need it
    from PIL import ImageOps  # lazy: PIL is optional (the hf/tfds extras)

    img = obj if isinstance(obj, PILImage.Image) else PILImage.open(
        obj if isinstance(obj, (str, os.PathLike)) else io.BytesIO(obj)
    )
    img.load()
    if img.getexif().get(_EXIF_ORIENTATION) is not None:
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "1":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    a = np.asarray(img)
    return a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder == ">" else a
