"""Image codecs: maintained decoder libraries where they give PIL's pixels exactly, else PIL.

PNG: libspng (``pyspng``) for 8/16-bit grey, RGB and RGBA without palette, ``tRNS`` or
``eXIf`` (libspng has no 8-bit grey+alpha output). JPEG: libjpeg-turbo through OpenCV
(``cv2.imdecode``) for 8-bit grey or YCbCr files without an Adobe or Exif segment. PIL decodes
everything else and is the reference: HF's own reader (including its EXIF orientation).
``tests/test_convert_images.py`` checks the libraries against PIL bit for bit.

Damaged files: a library may only answer where PIL would not refuse. libspng checks every
chunk CRC and the zlib adler32 (PIL checks the header CRCs and the adler32); a JPEG whose
marker structure is broken goes to PIL, which reads on to the end-of-image marker. Every PNG
also has its chunk CRCs checked here up to its end chunk, as libpng does (TensorFlow's and
OpenCV's decoder, so TFDS's readers): neither libspng nor PIL checks the image data's last
CRC or the end chunk, so a file cut there, or a flipped bit there, would give pixels that the
TFDS readers refuse.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import re
import struct
import warnings
import zlib
from typing import Any

import numpy as np

PNG_SIG = b"\x89PNG\r\n\x1a\n"
_CHUNK = struct.Struct(">I4s")  # a PNG chunk header: data length, type
_EXIF_ORIENTATION = 0x0112


# libspng's C API (spng.h, 0.7): the values and calls used below.
_SPNG_CRC_ERROR = 0  # a chunk CRC or the zlib adler32 that does not match is an error
_SPNG_FMT = {(8, 0): (64, 1, 1), (8, 2): (4, 3, 1), (8, 6): (1, 4, 1),  # (depth, colour type) -> (format, channels, bytes)
             (16, 0): (32, 2, 2), (16, 2): (2, 4, 2), (16, 4): (32, 2, 2), (16, 6): (2, 4, 2)}


@functools.cache
def _libspng() -> Any:
    """Returns libspng's ``(ctx_new, ctx_free, set_crc_action, set_png_buffer, decode_image)``
    from pyspng's extension module, or None where it cannot be loaded (PIL then decodes).

    pyspng's own ``spng_decode_image_bytes`` sets ``SPNG_CRC_USE``: it skips every chunk CRC and
    the zlib adler32, so a PNG with a flipped bit decodes to other pixels where PIL refuses it.
    libspng itself is linked into that module with its symbols exported; calling it through
    ctypes lets us ask for ``SPNG_CRC_ERROR`` (and releases the GIL while it decodes).
    ``tests/test_convert_images.py`` fails if these symbols move.
    """
    try:
        import pyspng._pyspng_c as ext  # optional fast PNG decoder; PIL is the fallback
    except ImportError:
        return None
    try:
        lib = ctypes.CDLL(ext.__file__)
        fns = lib.spng_ctx_new, lib.spng_ctx_free, lib.spng_set_crc_action, lib.spng_set_png_buffer, lib.spng_decode_image
    except (OSError, AttributeError):
        return None
    ptr, size, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
    signatures = [([i], ptr), ([ptr], None), ([ptr, i, i], i), ([ptr, ctypes.c_char_p, size], i), ([ptr, ptr, size, i, i], i)]
    for fn, (args, res) in zip(fns, signatures):
        fn.argtypes, fn.restype = args, res
    return fns


class ImageTooLarge(ValueError):
    """An image declaring more than ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels (PIL's
    ``DecompressionBombError``); ``pixels`` is its declared size."""

    def __init__(self, pixels: int, limit: int):
        super().__init__(f"{pixels} pixels declared, over PIL's limit of {limit} (2 * PIL.Image.MAX_IMAGE_PIXELS)")
        self.pixels, self.limit = pixels, limit


class DamagedImage(ValueError):
    """An image file that fails an integrity check (a chunk CRC, a missing end chunk)."""


def check_png_chunks(d: bytes) -> None:
    """Raises :class:`DamagedImage` unless every chunk of the PNG ``d`` (signature checked) has
    its CRC and the file reaches its IEND chunk, as libpng checks."""
    view, pos, n = memoryview(d), 8, len(d)
    while True:
        if pos + 12 > n:
            raise DamagedImage(f"the PNG ends at byte {n}, before its IEND chunk: the file is cut short")
        length, kind = _CHUNK.unpack_from(d, pos)
        end = pos + 12 + length
        if end > n:
            raise DamagedImage(f"the PNG's {kind!r} chunk at byte {pos} runs past the end of the file ({n} bytes): "
                               "the file is cut short or the chunk's length is damaged")
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            raise DamagedImage(f"the PNG's {kind!r} chunk at byte {pos} fails its CRC: the file is damaged")
        if kind == b"IEND":
            return
        pos = end


def too_large(err: Exception) -> ImageTooLarge | None:
    """Returns PIL's ``DecompressionBombError`` as an :class:`ImageTooLarge`, else None."""
    found = re.match(r"Image size \((\d+) pixels\) exceeds limit of (\d+)", str(err))
    return ImageTooLarge(int(found[1]), int(found[2])) if found else None


def check_pixels(width: int, height: int) -> None:
    """Raises :class:`ImageTooLarge` where ``PIL.Image.open`` raises ``DecompressionBombError``,
    so that no decoder allocates a declared size PIL refuses (a few KB of PNG can declare 10^10)."""
    from PIL import Image as PILImage  # heavy; only images need it

    limit = PILImage.MAX_IMAGE_PIXELS
    pixels = max(1, width) * max(1, height)
    if limit is not None and pixels > 2 * limit:
        raise ImageTooLarge(pixels, 2 * limit)
    if limit is not None and pixels > limit:  # PIL warns between the limit and twice it
        warnings.warn(f"Image size ({pixels} pixels) exceeds limit of {limit} pixels, could be decompression bomb "
                      "DOS attack.", PILImage.DecompressionBombWarning, stacklevel=2)


def _spng_decode(d: bytes) -> np.ndarray | None:
    """Returns the (H, W, C) pixels libspng decodes with every CRC and the adler32 checked, or
    None where it refuses the file or is missing (PIL then decides, and names the error)."""
    lib = _libspng()
    if lib is None:
        return None
    new, free, crc_action, set_buffer, decode = lib
    if zlib.crc32(d[12:29]) != struct.unpack_from(">I", d, 29)[0]:
        return None  # a damaged header: its size must not size the buffer below
    w, h = struct.unpack_from(">II", d, 16)
    check_pixels(w, h)
    fmt, channels, itemsize = _SPNG_FMT[(d[24], d[25])]
    out = np.empty((h, w, channels), np.uint16 if itemsize == 2 else np.uint8)
    ctx = new(0)
    if not ctx:
        return None
    try:
        crc_action(ctx, _SPNG_CRC_ERROR, _SPNG_CRC_ERROR)
        set_buffer(ctx, d, len(d))
        err = decode(ctx, out.__array_interface__["data"][0], out.nbytes, fmt, 0)
    finally:
        free(ctx)
    return None if err else out


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


def _jpeg_plain(d: bytes) -> tuple[int, int] | None:
    """Returns the frame's ``(width, height)`` where OpenCV decodes this JPEG as PIL does, else
    None. That is: one 8-bit grey or YCbCr frame, no
    Adobe or Exif segment, and every marker where libjpeg looks for it (segments chain by their
    lengths, each scan's entropy-coded data holds only stuffed bytes and, with a restart
    interval, RST0..7 in turn, and an end-of-image marker ends the last scan).

    JPEG carries no checksum. OpenCV stops reading after the last pixel row, so a damaged scan
    or a lost end marker still gives it pixels, where PIL reads on to the end and refuses the
    file (HF's reader is PIL). Files failing the structure check are left to PIL, which decides.
    """
    if d[:2] != b"\xff\xd8":
        return None
    a = np.frombuffer(d, np.uint8)
    ff = np.flatnonzero(a[:-1] == 0xFF)
    after = a[ff + 1]
    rst = (after >= 0xD0) & (after <= 0xD7)
    ends = np.flatnonzero((after != 0) & (after != 0xFF) & ~rst)  # real markers (not stuffing, fill, RSTn)
    pos, n, restart, frame = 2, len(d), False, None
    while pos + 2 <= n:
        if d[pos] != 0xFF:
            return None
        marker = d[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return frame
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            return None  # parameterless markers have no place between segments
        length = int.from_bytes(d[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > n:
            return None
        if marker == 0xEE or (marker == 0xE1 and d[pos + 4 : pos + 8] == b"Exif"):
            return None  # Adobe colour transforms and EXIF orientation: PIL's handling is the reference
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if frame or length < 8 or marker not in (0xC0, 0xC1, 0xC2) or d[pos + 4] != 8 or d[pos + 9] not in (1, 3):
                return None
            height, width = struct.unpack_from(">HH", d, pos + 5)
            frame = (width, height)
        if marker == 0xDD:  # DRI: the restart interval
            restart = int.from_bytes(d[pos + 4 : pos + 6], "big") > 0
        pos += 2 + length
        if marker != 0xDA:
            continue
        first = int(np.searchsorted(ff, pos))  # the scan's data runs to the next real marker
        k = int(np.searchsorted(ends, first))
        if k == len(ends):
            return None  # no marker ends the scan: the file is cut
        seq = after[first : ends[k]][rst[first : ends[k]]].astype(np.int64) - 0xD0
        if seq.size and (not restart or np.any(seq != np.arange(seq.size) % 8)):
            return None
        pos = int(ff[ends[k]])
    return None


def decode_fast(d: bytes) -> np.ndarray | None:
    """Returns the image decoded by a library that matches PIL, or None where PIL must decode;
    raises DamagedImage for a PNG whose chunks fail their CRCs or that lacks its end chunk."""
    if d[:8] == PNG_SIG:
        check_png_chunks(d)  # for PIL's path too: decode() tries this function first
        if not _png_plain(d):
            return None
        a = _spng_decode(d)
        if a is not None and a.dtype == np.uint16 and d[25] in (0, 2):  # 16-bit grey/RGB come with an added opaque alpha
            a = a[:, :, : 1 if d[25] == 0 else 3]
        return a
    cv2 = _cv2()
    size = _jpeg_plain(d) if cv2 is not None else None
    if size is None:
        return None
    check_pixels(*size)
    a = cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None:
        return None
    return cv2.cvtColor(a, cv2.COLOR_BGR2RGB) if a.ndim == 3 else a


def decode_pil(obj: Any) -> np.ndarray:
    """Returns an image (bytes, path or PIL image) decoded by PIL, as HF's reader does, with
    modes PIL cannot hold as plain channels converted: 1 -> L, P -> RGB(A), CMYK & co -> RGB."""
    from PIL import Image as PILImage  # heavy; only images need it
    from PIL import ImageOps  # lazy: PIL is optional (the hf/tfds extras)

    if isinstance(obj, PILImage.Image):
        img = obj
    else:
        try:
            img = PILImage.open(obj if isinstance(obj, (str, os.PathLike)) else io.BytesIO(obj))
        except PILImage.DecompressionBombError as err:  # one error type for both decoders
            raise (too_large(err) or err) from err
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
