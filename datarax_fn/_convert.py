"""Feature conversion: backend columns (Arrow, NumPy, Python lists) to JAX-ready NumPy arrays.

Backend-neutral: the HF and TFDS sources describe their features with the small
``Field`` types below and call :func:`convert`. The rules, the same for every backend:

* ``Image``  -> uint8 ``(N, H, W, C)``; greyscale keeps ``C = 1``; decoded from the raw
  encoded bytes: small plain 8-bit PNGs by a vectorised zlib + NumPy path, everything else
  by PIL in parallel threads (bit-identical either way). Different sizes raise unless a
  ``transform`` resizes.
* ``Label``  -> int32 (``-1`` allowed for "no label"); names stay in the metadata.
* ``Tensor`` -> the dtype is kept where JAX allows it: int64 -> int32 when every value
  fits (else an error that says to enable ``jax_enable_x64``), float64 -> float32.
  With ``jax_enable_x64`` on, 64-bit dtypes are kept.
* ragged ``Tensor`` / ``Sequence`` / ``Audio`` -> stacked when every row has the same
  length; otherwise padded to ``max_length`` plus an int32 ``<key>_length`` leaf, or an
  error naming the field and the options.
* ``Text``   -> UTF-8 bytes padded with zeros to a uint8 ``(N, L)`` array plus int32
  ``<key>_length``; ``L`` is ``max_length`` or the longest row. Lossless; read back with
  :func:`decode_text`.
* ``Struct`` -> a nested dict; missing values (``None``) raise naming the field and row.

Nothing is ever truncated silently: a row longer than ``max_length`` raises unless
``truncate=True`` (then it is cut to ``max_length``; text is cut at a byte boundary).
"""

from __future__ import annotations

import bisect
import concurrent.futures as cf
import dataclasses
import io
import os
import struct
import wave
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- fields


@dataclasses.dataclass(frozen=True)
class Image:
    """An encoded image (PNG/JPEG bytes, ``{"bytes", "path"}`` dicts, PIL images or arrays)."""

    shape: tuple[int | None, int | None, int | None] = (None, None, None)
    mode: str | None = None  # PIL mode to convert to, e.g. "L" or "RGB"


@dataclasses.dataclass(frozen=True)
class Label:
    """A class label stored as an integer; ``names`` are kept for the metadata."""

    names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A scalar or array of ``dtype``; ``None`` in ``shape`` marks a ragged leading dim."""

    shape: tuple[int | None, ...] = ()
    dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class Text:
    """A string (or bytes) value, stored as UTF-8 bytes."""


@dataclasses.dataclass(frozen=True)
class Audio:
    """An audio clip: WAV bytes, ``{"bytes", "path"}`` or ``{"array", "sampling_rate"}``."""

    sampling_rate: int | None = None


@dataclasses.dataclass(frozen=True)
class Sequence:
    """A list of ``feature`` values; ``length`` is fixed, or ``None`` for variable."""

    feature: Any
    length: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Struct:
    """A nested record: a dict of fields."""

    fields: Mapping[str, Any]


Field = Image | Label | Tensor | Text | Audio | Sequence | Struct


# ----------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class _Ragged:
    """Rows of different leading length: row i is ``values[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray  # int64, (n + 1,), offsets[0] == 0
    values: np.ndarray  # (total, *inner)
    text: bool = False


def _is_arrow(col: Any) -> bool:
    return type(col).__module__.startswith("pyarrow")


def _arrow_array(col: Any) -> Any:
    """Returns a single (non-chunked, non-extension) pyarrow Array."""
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if isinstance(col, pa.ExtensionArray):
        col = col.storage
    return col


def _len(col: Any) -> int:
    return len(col)


def _null_error(name: str, row: int) -> ValueError:
    return ValueError(
        f"field {name!r}: missing value (None) at row {row}. JAX arrays cannot hold missing values; "
        "fill or drop those rows first (e.g. ds.filter(...)), or pass a transform that fills them, "
        "or leave the field out with exclude_keys."
    )


def _check_arrow_nulls(arr: Any, name: str, rows: np.ndarray | None = None) -> None:
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        if rows is not None:  # map an element index back to its row
            first = int(np.searchsorted(rows, first, side="right") - 1)
        raise _null_error(name, first)


def _check_py_nulls(col: Any, name: str) -> None:
    for i, v in enumerate(col):
        if v is None:
            raise _null_error(name, i)


def _x64() -> bool:
    import jax

    return bool(jax.config.jax_enable_x64)


def jax_dtype(arr: np.ndarray, name: str) -> np.ndarray:
    """Returns ``arr`` with a dtype JAX keeps: narrows 64-bit types, or raises naming the field."""
    dt = arr.dtype
    if dt.kind in "biuf" and dt.itemsize <= 4 or dt.kind == "b" or dt.name == "bfloat16":
        return arr
    if dt.kind == "c":
        return arr if (dt.itemsize <= 8 or _x64()) else arr.astype(np.complex64)
    if dt.kind == "f":  # float64 and wider
        return arr if _x64() and dt.itemsize == 8 else arr.astype(np.float32)
    if dt.kind in "iu":  # int64 / uint64
        if _x64():
            return arr
        small = np.int32 if dt.kind == "i" else np.uint32
        info = np.iinfo(small)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(
                f"field {name!r}: {dt} values in [{arr.min()}, {arr.max()}] do not fit {np.dtype(small)}. "
                "Enable 64-bit JAX with jax.config.update('jax_enable_x64', True) before loading, "
                "or exclude the field with exclude_keys, or map it with a transform."
            )
        return arr.astype(small)
    raise TypeError(
        f"field {name!r}: dtype {dt} has no JAX equivalent. Exclude it with exclude_keys, or pass a "
        "transform that turns it into numbers."
    )


def _numeric(col: Any, name: str, dtype: str | None = None) -> np.ndarray:
    """Returns a 1-D NumPy array from a scalar column, raising on missing values."""
    if _is_arrow(col):
        arr = _arrow_array(col)
        _check_arrow_nulls(arr, name)
        out = arr.to_numpy(zero_copy_only=False)
    elif isinstance(col, np.ndarray) and col.dtype != object:
        out = col
    else:
        _check_py_nulls(col, name)
        out = np.asarray(list(col) if not isinstance(col, np.ndarray) else col.tolist())
    if dtype is not None and out.dtype != np.dtype(dtype):
        out = out.astype(dtype)
    return out


# ----------------------------------------------------------------------------- ragged / text


def _list_levels(arr: Any, name: str) -> tuple[list[np.ndarray], Any]:
    """Returns the offsets of every list level of an Arrow list array, and the leaf values."""
    import pyarrow as pa

    levels = []
    while True:
        arr = _arrow_array(arr)
        if isinstance(arr, pa.FixedSizeListArray):
            _check_arrow_nulls(arr, name)
            n, size = len(arr), arr.type.list_size
            levels.append(np.arange(n + 1, dtype=np.int64) * size)
            arr = arr.flatten()
        elif isinstance(arr, (pa.ListArray, pa.LargeListArray)):
            _check_arrow_nulls(arr, name)
            off = arr.offsets.to_numpy().astype(np.int64)
            levels.append(off - off[0])
            arr = arr.flatten()
        else:
            return levels, arr


def _arrow_bytes(arr: Any, name: str) -> _Ragged:
    """Returns the bytes of an Arrow string/binary array as offsets + uint8 values, zero-copy."""
    import pyarrow as pa

    arr = _arrow_array(arr)
    _check_arrow_nulls(arr, name)
    if not (pa.types.is_large_binary(arr.type)):
        arr = arr.cast(pa.large_binary())
    n = len(arr)
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    data = data[off[0] : off[-1]]
    return _Ragged(off - off[0], data, text=True)


def _py_bytes(col: Any, name: str) -> _Ragged:
    _check_py_nulls(col, name)
    parts = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in col]
    lengths = np.fromiter((len(p) for p in parts), np.int64, len(parts))
    off = np.zeros(len(parts) + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    return _Ragged(off, np.frombuffer(b"".join(parts), np.uint8), text=True)


def _text(col: Any, name: str) -> _Ragged:
    if _is_arrow(col):
        return _arrow_bytes(col, name)
    return _py_bytes(col, name)


def _ragged_from_arrays(items: list[np.ndarray], name: str) -> _Ragged | np.ndarray:
    shapes = {a.shape for a in items}
    if len(shapes) == 1:
        return np.stack(items) if items else np.zeros((0,), np.float32)
    inner = {a.shape[1:] for a in items}
    if len(inner) != 1 or any(a.ndim == 0 for a in items):
        raise ValueError(
            f"field {name!r}: rows have shapes {sorted(shapes)[:4]}..., which differ beyond the first "
            "axis. Only the leading axis may be ragged; pass a transform that makes them equal "
            "(e.g. resize images), or exclude the field."
        )
    off = np.zeros(len(items) + 1, np.int64)
    np.cumsum([a.shape[0] for a in items], out=off[1:])
    return _Ragged(off, np.concatenate(items, axis=0))


def _tensor(col: Any, field: Tensor, name: str) -> np.ndarray | _Ragged:
    shape = tuple(field.shape)
    if not shape:
        return _numeric(col, name, field.dtype)
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"field {name!r}: shape {shape} is ragged beyond the first axis; only a ragged leading axis "
            "can be padded. Pass a transform that flattens or pads it, or exclude the field."
        )
    if _is_arrow(col):
        arr = _arrow_array(col)
        _check_arrow_nulls(arr, name)
        levels, leaf = _list_levels(arr, name)
        if len(levels) != len(shape):
            raise ValueError(f"field {name!r}: expected {len(shape)} list levels for shape {shape}, got {len(levels)}.")
        _check_arrow_nulls(leaf, name, rows=None)
        values = leaf.to_numpy(zero_copy_only=False).astype(field.dtype, copy=False)
        for depth in range(len(shape) - 1, 0, -1):  # inner levels must be regular
            d = np.diff(levels[depth])
            if d.size and not np.all(d == shape[depth]):
                raise ValueError(f"field {name!r}: inner axis {depth} has lengths {np.unique(d)[:5]}, expected {shape[depth]}.")
        inner = tuple(shape[1:])
        values = values.reshape((-1, *inner))
        lengths = np.diff(levels[0])
        if shape[0] is not None:
            if lengths.size and not np.all(lengths == shape[0]):
                bad = int(np.flatnonzero(lengths != shape[0])[0])
                raise ValueError(f"field {name!r}: row {bad} has length {lengths[bad]}, expected {shape[0]}.")
            return values.reshape((len(lengths), *shape))
        return _Ragged(levels[0], values)
    if isinstance(col, np.ndarray) and col.dtype != object and col.ndim == 1 + len(shape):
        arr = col.astype(field.dtype, copy=False)
        if shape[0] is None:  # declared ragged: keep it ragged so max_length pads every chunk alike
            return _Ragged(np.arange(len(arr) + 1, dtype=np.int64) * arr.shape[1], arr.reshape((-1, *arr.shape[2:])))
        return arr
    _check_py_nulls(col, name)
    items = [np.asarray(v, dtype=field.dtype) for v in col]
    for i, a in enumerate(items):
        if a.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, a.shape)):
            raise ValueError(f"field {name!r}: row {i} has shape {a.shape}, expected {shape}.")
    if shape[0] is None and items:
        # Rows of equal length in this chunk are still a ragged field: pad them like any other
        # chunk when max_length is given (streaming needs one shape), stack them otherwise.
        off = np.zeros(len(items) + 1, np.int64)
        np.cumsum([a.shape[0] for a in items], out=off[1:])
        return _Ragged(off, np.concatenate(items, axis=0))
    return _ragged_from_arrays(items, name)


# ----------------------------------------------------------------------------- images


_MODE_FOR_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _arrow_image_getter(arr: Any, name: str, base: int = 0) -> Callable[[int], Any]:
    """Returns get(i) over one Arrow image array (struct or binary); errors name row ``base + i``."""
    import pyarrow as pa

    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    if arr.null_count:
        raise _null_error(name, base + int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]))
    if pa.types.is_struct(arr.type):
        kids = dict(zip([f.name for f in arr.type], arr.flatten()))
        raw = kids.get("bytes")
        paths = kids.get("path")
        has = ~raw.is_null().to_numpy(zero_copy_only=False) if raw is not None else np.zeros(len(arr), bool)
        if raw is not None:
            raw = _arrow_bytes(raw.fill_null(b"") if raw.null_count else raw, name)
        path_list = paths.to_pylist() if paths is not None and not has.all() else None
    else:  # a plain binary column
        raw, has, path_list = _arrow_bytes(arr, name), np.ones(len(arr), bool), None
    off = raw.offsets.tolist() if raw is not None else None
    data = memoryview(raw.values) if raw is not None else None

    def get(i: int) -> Any:
        if has[i]:
            return data[off[i] : off[i + 1]]
        if path_list is None or path_list[i] is None:
            raise _null_error(name, base + i)
        return path_list[i]

    return get


def _image_getter(col: Any, name: str) -> tuple[int, Callable[[int], Any]]:
    """Returns (n, get(i)) where get gives encoded bytes, a path, a PIL image or an array."""
    if _is_arrow(col):
        import pyarrow as pa

        if not isinstance(col, pa.ChunkedArray) or col.num_chunks <= 1:
            return len(col), _arrow_image_getter(_arrow_array(col), name)
        # Many chunks (HF's cache files hold small record batches): read them in place rather
        # than combine_chunks(), which would copy every encoded image once more.
        chunks = [c for c in col.chunks if len(c)]
        starts = np.cumsum([0] + [len(c) for c in chunks]).tolist()
        gets = [_arrow_image_getter(c, name, lo) for c, lo in zip(chunks, starts)]

        def get_chunked(i: int) -> Any:
            k = bisect.bisect_right(starts, i) - 1
            return gets[k](i - starts[k])

        return len(col), get_chunked

    _check_py_nulls(col, name)

    def get_py(i: int) -> Any:
        v = col[i]
        if isinstance(v, Mapping):
            if v.get("bytes") is not None:
                return v["bytes"]
            if v.get("path") is not None:
                return v["path"]
            raise _null_error(name, i)
        return v

    return len(col), get_py


def _to_pixels(obj: Any, target: str | None, name: str, row: int) -> np.ndarray:
    if isinstance(obj, np.ndarray) or type(obj).__module__.startswith("jax"):
        a = np.asarray(obj)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.dtype != np.uint8:
            raise ValueError(f"field {name!r}: row {row} is a {a.dtype} image array; images must be uint8.")
        return a
    from PIL import Image as PILImage

    img = obj if isinstance(obj, PILImage.Image) else PILImage.open(
        io.BytesIO(obj) if not isinstance(obj, (str, os.PathLike)) else obj
    )
    mode = img.mode
    want = target
    if want is None:
        if mode in ("L", "LA", "RGB", "RGBA"):
            want = mode
        elif mode in ("1",):
            want = "L"
        elif mode == "P":
            want = "RGBA" if "transparency" in img.info else "RGB"
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            want = "RGB"
        else:
            raise ValueError(
                f"field {name!r}: row {row} is a {mode!r} image, which is not 8-bit. Pass a transform "
                "that converts it, or set the image mode (e.g. Image(mode='L'))."
            )
    if mode != want:
        img = img.convert(want)
    a = np.asarray(img)
    return a[:, :, None] if a.ndim == 2 else a


def _aligned_empty(shape: tuple[int, ...], dtype: Any = np.uint8, align: int = 64) -> np.ndarray:
    """Returns an uninitialised C-contiguous array whose data starts on an ``align``-byte boundary.

    ``jax.device_put`` aliases 64-byte-aligned NumPy buffers on a CPU device instead of
    copying them, so a freshly decoded image column costs its size once, not twice.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    return buf[start : start + nbytes].view(dtype).reshape(shape)


# PNG fast path. PIL parses a PNG's chunks in Python (~75 us per image, under the GIL), which
# dominates decoding small images such as MNIST. For the common case (8-bit L/RGB/LA/RGBA,
# non-interlaced, no palette or tRNS, every image the same size) we inflate each image with
# zlib and undo the scanline filters with NumPy, row by row but vectorised across images.
# Anything else (or anything odd about a file) goes to PIL, so results stay PIL's, bit for bit.

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> channels (PIL modes L, RGB, LA, RGBA)
_PNG_FAST_MAX_BYTES = 64 * 64  # bytes per image; measured: above ~64x64 grey PIL's C filters win
_PNG_FAST_MIN_IMAGES = 64  # below this the per-row NumPy calls cost more than PIL
_PNG_BLOCK = 4096  # images inflated per join, bounding the temporary copy of their scanlines


def _png_geometry(buf: Any) -> tuple[int, int, int] | None:
    """Returns ``(h, w, channels)`` of a PNG the fast path decodes exactly as PIL does, else None."""
    if not isinstance(buf, (bytes, bytearray, memoryview)) or len(buf) < 45:
        return None
    if bytes(buf[:8]) != _PNG_SIG or bytes(buf[12:16]) != b"IHDR":
        return None
    w, h, depth, ctype, comp, filt, interlace = struct.unpack_from(">IIBBBBB", buf, 16)
    c = _PNG_CHANNELS.get(ctype)
    if depth != 8 or c is None or comp or filt or interlace or not (w and h):
        return None
    return h, w, c


def _png_inflate(buf: Any, expect: int) -> bytes | None:
    """Returns the inflated scanlines (``expect`` bytes) of a PNG, or None where PIL must decide.

    None for: a bad chunk CRC, a ``tRNS`` or unknown critical chunk, no IEND, a zlib stream
    that is broken, has trailing data or inflates to other than ``expect`` bytes.
    """
    pos, end, parts = 33, len(buf), []  # the caller checked the signature and IHDR
    while pos + 12 <= end:
        length, kind = struct.unpack_from(">I4s", buf, pos)
        stop = pos + 12 + length
        if stop > end or zlib.crc32(buf[pos + 4 : stop - 4]) != struct.unpack_from(">I", buf, stop - 4)[0]:
            return None
        if kind == b"IDAT":
            parts.append(buf[pos + 8 : stop - 4])
        elif kind == b"IEND":
            break
        elif kind == b"tRNS" or not (kind[0] & 32 or kind == b"PLTE"):
            return None
        pos = stop
    else:
        return None
    if not parts:
        return None
    z = zlib.decompressobj()
    try:
        out = z.decompress(b"".join(parts) if len(parts) > 1 else parts[0])
    except zlib.error:
        return None
    return out if z.eof and not z.unused_data and len(out) == expect else None


def _png_unfilter(rows: np.ndarray, filt: np.ndarray, bpp: int) -> None:
    """Undoes PNG scanline filters in place, vectorised across images.

    ``rows`` is ``(n, h, w * bpp)`` uint8 holding the filtered bytes of ``n`` images, ``filt``
    is ``(n, h)`` with each row's filter type in 0..4 (None, Sub, Up, Average, Paeth).
    """
    n, h, stride = rows.shape
    w = stride // bpp
    zero = np.zeros((n, stride), np.uint8)
    for r in range(h):
        f = filt[:, r]
        for kind in (1, 2, 3, 4):
            idx = np.flatnonzero(f == kind)
            if not idx.size:
                continue
            cur = rows[idx, r]  # (k, stride) copy
            if kind == 1:  # Sub: a running sum along the row with stride bpp, modulo 256
                rows[idx, r] = np.cumsum(cur.reshape(-1, w, bpp), axis=1, dtype=np.uint8).reshape(-1, stride)
                continue
            prev = rows[idx, r - 1] if r else zero[: idx.size]
            if kind == 2:  # Up
                rows[idx, r] = cur + prev
                continue
            # Average and Paeth depend on the pixel to the left: loop over pixel columns,
            # each step vectorised over the k images (laid out contiguous as (w, bpp, k)).
            x = cur.reshape(-1, w, bpp).transpose(1, 2, 0).astype(np.int16)
            b = prev.reshape(-1, w, bpp).transpose(1, 2, 0).astype(np.int16)
            a = np.zeros(x.shape[1:], np.int16)
            if kind == 3:
                for j in range(w):
                    a = (x[j] + ((a + b[j]) >> 1)) & 255
                    x[j] = a
            else:
                c = np.zeros_like(b)
                c[1:] = b[:-1]
                bc = b - c
                pa = np.abs(bc)  # |p - a| with p = a + b - c
                for j in range(w):
                    t = a - c[j]
                    pb = np.abs(t)
                    pc = np.abs(t + bc[j])
                    pred = np.where((pa[j] <= pb) & (pa[j] <= pc), a, np.where(pb <= pc, b[j], c[j]))
                    a = (x[j] + pred) & 255
                    x[j] = a
            rows[idx, r] = x.astype(np.uint8).transpose(2, 0, 1).reshape(-1, stride)


def _png_fast(n: int, get: Callable[[int], Any], target: str | None) -> tuple[np.ndarray, list[int]] | None:
    """Returns ``(out, todo)``: images decoded by the PNG fast path, and the rows it left to PIL.

    None when the fast path does not apply (the first image is not a small plain PNG, its
    mode is not ``target``, or there are too few images to pay for the vectorised filters).
    Single-threaded on purpose: the per-file chunk walk holds the GIL, and threads measured slower.
    """
    first = get(0)
    geom = _png_geometry(first)
    if geom is None or n < _PNG_FAST_MIN_IMAGES:
        return None
    h, w, c = geom
    if h * w * c > _PNG_FAST_MAX_BYTES or (target is not None and _MODE_FOR_CHANNELS[c] != target):
        return None
    head = bytes(first[:33])  # signature + IHDR chunk: equal bytes mean equal geometry and a good IHDR CRC
    if zlib.crc32(head[12:29]) != struct.unpack_from(">I", head, 29)[0]:
        return None
    stride, expect = w * c, h * (1 + w * c)
    out = _aligned_empty((n, h, w, c))
    rows = out.reshape(n, h, stride)
    filt = np.empty((n, h), np.uint8)
    blank = bytes(expect)
    left: list[int] = []
    for lo in range(0, n, _PNG_BLOCK):
        hi = min(lo + _PNG_BLOCK, n)
        parts = []
        for i in range(lo, hi):
            buf = get(i)
            raw = _png_inflate(buf, expect) if isinstance(buf, (bytes, bytearray, memoryview)) and buf[:33] == head else None
            if raw is None:
                left.append(i)
                raw = blank
            parts.append(raw)
        block = np.frombuffer(b"".join(parts), np.uint8).reshape(hi - lo, h, 1 + stride)
        rows[lo:hi] = block[:, :, 1:]
        filt[lo:hi] = block[:, :, 0]
    odd = np.flatnonzero((filt > 4).any(axis=1))  # an unknown filter type: PIL decides
    if odd.size:
        filt[odd] = 0
        left = sorted(set(left) | set(odd.tolist()))
    _png_unfilter(rows, filt, c)
    return out, left


def _images(col: Any, field: Image, name: str, progress: Any, num_threads: int | None) -> np.ndarray | list:
    n, get = _image_getter(col, name)
    target = field.mode or (_MODE_FOR_CHANNELS.get(field.shape[2]) if field.shape[2] else None)
    if n == 0:
        h, w, c = (d or 0 for d in field.shape)
        return np.zeros((0, h, w, c or 1), np.uint8)
    threads = num_threads or min(8, os.cpu_count() or 1)
    fast = _png_fast(n, get, target)
    if fast is not None:
        out, todo = fast
        shape = out.shape[1:]
        if progress is not None:
            progress.update(n - len(todo))
    else:
        first = _to_pixels(get(0), target, name, 0)
        shape = first.shape
        out = _aligned_empty((n, *shape))
        out[0] = first
        todo = range(1, n)
    if target is None and shape[2] in _MODE_FOR_CHANNELS:
        target = _MODE_FOR_CHANNELS[shape[2]]
    mismatch: list[tuple[int, tuple]] = []

    def work(rows: Any) -> int:
        for i in rows:
            if mismatch:
                return len(rows)
            a = _to_pixels(get(i), target, name, i)
            if a.shape != shape:
                mismatch.append((i, a.shape))
                return len(rows)
            out[i] = a
        return len(rows)

    block = max(64, min(2048, len(todo) // (threads * 4) + 1))
    spans = [todo[lo : lo + block] for lo in range(0, len(todo), block)]
    if threads <= 1 or len(spans) <= 1:
        for rows in spans:
            done = work(rows)
            if progress is not None:
                progress.update(done)
    else:
        with cf.ThreadPoolExecutor(threads, thread_name_prefix="datarax_fn-decode") as pool:
            for fut in cf.as_completed([pool.submit(work, rows) for rows in spans]):
                done = fut.result()
                if progress is not None:
                    progress.update(done)
    if mismatch:  # different sizes: hand back a list (a transform may resize, else finalize raises)
        return [_to_pixels(get(i), target, name, i) for i in range(n)]
    fixed = [d for d in field.shape if d is not None]
    if fixed and any(d is not None and d != s for d, s in zip(field.shape, shape)):
        raise ValueError(f"field {name!r}: images have shape {shape}, the feature declares {field.shape}.")
    return out


# ----------------------------------------------------------------------------- audio


def _wav(data: bytes | str, name: str, row: int) -> tuple[np.ndarray, int]:
    src = data if isinstance(data, (str, os.PathLike)) else io.BytesIO(data)
    try:
        with wave.open(src, "rb") as w:
            sr, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as err:
        raise ValueError(
            f"field {name!r}: row {row} is not a PCM WAV file ({err}). Only WAV decodes without "
            "torchcodec; pass a transform that decodes it (e.g. with soundfile), or exclude the field."
        ) from err
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 2**23, v - 2**24, v)).astype(np.float32) / float(2**23)
    else:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(2**31)
    x = x.reshape(-1, ch)
    return (x[:, 0] if ch == 1 else x), sr


def _audio(col: Any, field: Audio, name: str) -> tuple[np.ndarray | _Ragged, int | None]:
    if _is_arrow(col):
        col = _arrow_array(col)
        _check_arrow_nulls(col, name)
        col = col.to_pylist()
    _check_py_nulls(col, name)
    clips, rates = [], set()
    for i, v in enumerate(col):
        if isinstance(v, Mapping) and v.get("array") is not None:
            x, sr = np.asarray(v["array"], np.float32), v.get("sampling_rate")
        elif isinstance(v, Mapping):
            src = v.get("bytes") if v.get("bytes") is not None else v.get("path")
            if src is None:
                raise _null_error(name, i)
            x, sr = _wav(src, name, i)
        elif isinstance(v, (bytes, bytearray, memoryview, str)):
            x, sr = _wav(bytes(v) if not isinstance(v, str) else v, name, i)
        else:
            x, sr = np.asarray(v, np.float32), field.sampling_rate
        if field.sampling_rate is not None and sr is not None and sr != field.sampling_rate:
            raise ValueError(
                f"field {name!r}: row {i} has sampling rate {sr}, the feature declares "
                f"{field.sampling_rate}. datarax_fn does not resample; pass a transform that resamples."
            )
        clips.append(x)
        rates.add(sr)
    rates.discard(None)
    if len(rates) > 1:
        raise ValueError(f"field {name!r}: clips have different sampling rates {sorted(rates)}; pass a transform that resamples.")
    sr = rates.pop() if rates else field.sampling_rate
    return (_ragged_from_arrays(clips, name) if clips else np.zeros((0, 0), np.float32)), sr


# ----------------------------------------------------------------------------- decode


def _rows_to_columns(col: Any, keys: list[str], name: str) -> dict[str, list]:
    _check_py_nulls(col, name)
    out: dict[str, list] = {k: [] for k in keys}
    for i, row in enumerate(col):
        if not isinstance(row, Mapping):
            raise TypeError(f"field {name!r}: row {i} is {type(row).__name__}, expected a dict.")
        for k in keys:
            out[k].append(row.get(k))
    return out


def _decode(col: Any, field: Any, name: str, meta: dict, progress: Any, threads: int | None) -> Any:
    """Returns a decoded column: ndarray, _Ragged, list (images of mixed sizes) or dict."""
    if isinstance(field, Tensor):
        return _tensor(col, field, name)
    if isinstance(field, Label):
        if not _is_arrow(col) and len(col) and isinstance(col[0], str):
            lookup = {s: i for i, s in enumerate(field.names)}
            _check_py_nulls(col, name)
            try:
                col = np.asarray([lookup[s] for s in col], np.int64)
            except KeyError as err:
                raise ValueError(f"field {name!r}: label {err.args[0]!r} is not one of {list(field.names)}.") from None
        out = _numeric(col, name)
        if out.size and field.names and (out.min() < -1 or out.max() >= len(field.names)):
            raise ValueError(f"field {name!r}: labels span [{out.min()}, {out.max()}], outside [-1, {len(field.names)}).")
        return out.astype(np.int32)
    if isinstance(field, Text):
        return _text(col, name)
    if isinstance(field, Image):
        return _images(col, field, name, progress, threads)
    if isinstance(field, Audio):
        value, sr = _audio(col, field, name)
        meta[name] = {"sampling_rate": sr}
        return value
    if isinstance(field, Struct):
        keys = list(field.fields)
        if _is_arrow(col):
            arr = _arrow_array(col)
            _check_arrow_nulls(arr, name)
            kids = dict(zip([f.name for f in arr.type], arr.flatten()))
            cols = {k: kids[k] for k in keys}
        elif isinstance(col, Mapping):
            cols = {k: col[k] for k in keys}
        else:
            cols = _rows_to_columns(col, keys, name)
        return {k: _decode(cols[k], f, f"{name}.{k}", meta, progress, threads) for k, f in field.fields.items()}
    if isinstance(field, Sequence):
        inner = field.feature
        if isinstance(inner, (Tensor, Label)):
            dtype = inner.dtype if isinstance(inner, Tensor) else "int64"
            shape = inner.shape if isinstance(inner, Tensor) else ()
            out = _tensor(col, Tensor((field.length, *shape), dtype), name)
            if isinstance(inner, Label):
                vals = out.values if isinstance(out, _Ragged) else out
                if vals.size and inner.names and (vals.min() < -1 or vals.max() >= len(inner.names)):
                    raise ValueError(f"field {name!r}: labels outside [-1, {len(inner.names)}).")
                if isinstance(out, _Ragged):
                    return _Ragged(out.offsets, out.values.astype(np.int32))
                return out.astype(np.int32)
            return out
        if isinstance(inner, Struct):
            if _is_arrow(col):
                levels, leaf = _list_levels(col, name)
                off = levels[0]
                flat = _decode(leaf, inner, name, meta, progress, threads)
            else:
                _check_py_nulls(col, name)
                rows = list(col)
                off = np.zeros(len(rows) + 1, np.int64)
                np.cumsum([len(r) for r in rows], out=off[1:])
                flat = _decode([x for r in rows for x in r], inner, name, meta, progress, threads)

            def wrap(v: Any, sub: str) -> Any:
                if isinstance(v, dict):
                    return {k: wrap(x, f"{sub}.{k}") for k, x in v.items()}
                if not isinstance(v, np.ndarray):
                    raise ValueError(f"field {sub!r}: a list of structs may hold only fixed-shape values.")
                if field.length is not None:
                    return v.reshape((len(off) - 1, field.length, *v.shape[1:]))
                return _Ragged(off, v)

            return wrap(flat, name)
        raise ValueError(
            f"field {name!r}: a sequence of {type(inner).__name__} is not supported. Pass a transform "
            "that turns it into arrays (e.g. tokenise the strings), or exclude the field."
        )
    raise TypeError(f"field {name!r}: unknown field type {field!r}.")


# ----------------------------------------------------------------------------- transform I/O


def _to_user(value: Any) -> Any:
    """Returns the decoded column in the form a transform sees: arrays, lists, str arrays."""
    if isinstance(value, dict):
        return {k: _to_user(v) for k, v in value.items()}
    if isinstance(value, _Ragged):
        o, v = value.offsets, value.values
        if value.text:
            out = np.empty(len(o) - 1, object)
            raw = v.tobytes()
            for i in range(len(o) - 1):
                b = raw[o[i] : o[i + 1]]
                try:
                    out[i] = b.decode("utf-8")
                except UnicodeDecodeError:
                    out[i] = b
            return out
        return [v[o[i] : o[i + 1]] for i in range(len(o) - 1)]
    return value


def _from_user(value: Any, name: str, max_length: Any = None) -> Any:
    """Returns a transform's output column in decoded form (the same rules apply)."""
    if isinstance(value, Mapping):
        return {k: _from_user(v, f"{name}.{k}", max_length) for k, v in value.items()}
    if type(value).__module__.startswith("jax"):
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        return _py_bytes(value.tolist(), name)
    seq = list(value)
    _check_py_nulls(seq, name)
    if seq and all(isinstance(v, (str, bytes)) for v in seq):
        return _py_bytes(seq, name)
    items = [np.asarray(v) for v in seq]
    if items and any(a.dtype.kind not in "biufc" for a in items):
        raise TypeError(f"field {name!r}: transform returned values of dtype {items[0].dtype}; return numbers or strings.")
    shapes = {a.shape for a in items}
    inner = {a.shape[1:] for a in items}
    ragged_ok = len(inner) == 1 and all(a.ndim for a in items)
    if ragged_ok and (len(shapes) > 1 or _lookup(max_length, name) is not None):
        # A declared max_length keeps the field padded even when a chunk happens to be uniform.
        off = np.zeros(len(items) + 1, np.int64)
        np.cumsum([a.shape[0] for a in items], out=off[1:])
        return _Ragged(off, np.concatenate(items, axis=0))
    if len(shapes) <= 1:
        return np.stack(items) if items else np.zeros((0,), np.float32)
    return items


# ----------------------------------------------------------------------------- finalize


def _lookup(max_length: int | Mapping[str, int] | None, name: str) -> int | None:
    if max_length is None or isinstance(max_length, int):
        return max_length
    if name in max_length:
        return max_length[name]
    return max_length.get(name.split(".")[0])


def _pad(r: _Ragged, length: int | None, name: str, truncate: bool) -> tuple[np.ndarray, np.ndarray | None]:
    lengths = np.diff(r.offsets)
    n, inner = len(lengths), r.values.shape[1:]
    if length is None:
        if not r.text:
            if n and np.all(lengths == lengths[0]):
                return r.values.reshape((n, int(lengths[0]), *inner)), None
            raise ValueError(
                f"field {name!r}: rows have different lengths ({int(lengths.min())} to {int(lengths.max())}). "
                f"Pass max_length={{{name.split('.')[0]!r}: L}} (or max_length=L) to pad them to L with an "
                f"int32 '{name.split('.')[-1]}_length' leaf, pass a transform that makes them equal, or "
                "exclude the field."
            )
        length = max(int(lengths.max(initial=0)), 1)
    over = lengths > length
    if over.any() and not truncate:
        row = int(np.flatnonzero(over)[0])
        raise ValueError(
            f"field {name!r}: row {row} has length {int(lengths[row])} > max_length={length}. Raise "
            "max_length, or pass truncate=True to cut rows to max_length."
        )
    keep = np.minimum(lengths, length)
    out = np.zeros((n, length, *inner), r.values.dtype)
    mask = np.arange(length)[None, :] < keep[:, None]
    if over.any():
        pos = np.arange(len(r.values)) - np.repeat(r.offsets[:-1], lengths)
        out[mask] = r.values[pos < length]
    else:
        out[mask] = r.values
    return out, keep.astype(np.int32)


def _finalize(decoded: dict[str, Any], max_length: Any, truncate: bool, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in decoded.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out[key] = _finalize(value, max_length, truncate, f"{name}.")
            continue
        if isinstance(value, list):  # images (or arrays) of different sizes
            shapes = sorted({a.shape for a in value})
            raise ValueError(
                f"field {name!r}: records have different shapes {shapes[:3]}{'...' if len(shapes) > 3 else ''}. "
                "Pass a transform that resizes them to one shape, e.g. "
                "transform=lambda b: {**b, 'image': np.stack([resize(x) for x in b['image']])}."
            )
        length_key = f"{key}_length"
        if isinstance(value, _Ragged):
            padded, lengths = _pad(value, _lookup(max_length, name), name, truncate)
            out[key] = padded if value.text else jax_dtype(padded, name)
            if lengths is not None:
                if length_key in decoded:
                    raise ValueError(f"field {name!r}: its length leaf {length_key!r} clashes with an existing field; rename one.")
                out[length_key] = lengths
            continue
        out[key] = jax_dtype(np.ascontiguousarray(value), name)
    return out


def _concat(chunks: list[dict[str, Any]], name: str = "") -> dict[str, Any]:
    """Concatenates converted chunks, zero-padding padded leaves to the widest chunk."""
    first = chunks[0]
    out: dict[str, Any] = {}
    for key, v in first.items():
        parts = [c[key] for c in chunks]
        if isinstance(v, dict):
            out[key] = _concat(parts, f"{name}{key}.")
            continue
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) > 1:
            if f"{key}_length" not in first or len({len(s) for s in shapes}) != 1:
                raise ValueError(
                    f"field {name}{key!r}: records have different shapes {sorted(shapes)[:3]} in different "
                    "rows. Pass max_length for it (ragged leading axis) or a transform that makes them equal."
                )
            width = tuple(max(s[i] for s in shapes) for i in range(len(v.shape) - 1))
            parts = [np.pad(p, [(0, 0)] + [(0, w - s) for w, s in zip(width, p.shape[1:])]) for p in parts]
        out[key] = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return out


# ----------------------------------------------------------------------------- public


def convert_with_meta(
    columns: Mapping[str, Any],
    fields: Mapping[str, Any],
    *,
    max_length: int | Mapping[str, int] | None = None,
    transform: Callable[[dict], dict] | None = None,
    truncate: bool = False,
    chunk_size: int = 4096,
    progress: bool | None = None,
    num_threads: int | None = None,
    desc: str = "converting",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns ``(arrays, meta)``: :func:`convert`'s arrays and per-field metadata (audio rates)."""
    missing = [k for k in fields if k not in columns]
    if missing:
        raise KeyError(f"convert: fields {missing} have no column; columns are {sorted(columns)}.")
    n = _len(columns[next(iter(fields))]) if fields else 0
    meta: dict[str, Any] = {}
    bar = None
    if progress or (progress is None and n >= 20_000 and any(isinstance(f, Image) for f in fields.values())):
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="rec", leave=False)
    try:
        if transform is None:
            decoded = {k: _decode(columns[k], f, k, meta, bar, num_threads) for k, f in fields.items()}
            if bar is not None:
                bar.update(n - bar.n)
            return _finalize(decoded, max_length, truncate), meta
        chunks = []
        for lo in range(0, max(n, 1), chunk_size):
            hi = min(lo + chunk_size, n)
            part = {k: _slice(columns[k], lo, hi) for k in fields}
            decoded = {k: _decode(part[k], f, k, meta, None, num_threads) for k, f in fields.items()}
            user = transform({k: _to_user(v) for k, v in decoded.items()})
            if not isinstance(user, Mapping):
                raise TypeError(f"transform must return a dict of columns; got {type(user).__name__}.")
            back = {k: _from_user(v, k, max_length) for k, v in user.items()}
            lens = {k: len(v.offsets) - 1 if isinstance(v, _Ragged) else len(v) for k, v in _leaves(back)}
            if len(set(lens.values())) > 1:
                raise ValueError(f"transform returned columns of different lengths: {lens}; every column needs one value per row.")
            chunks.append(_finalize(back, max_length, truncate))
            if bar is not None:
                bar.update(hi - lo)
        return _concat(chunks), meta
    finally:
        if bar is not None:
            bar.close()


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, dict):
            out += _leaves(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _slice(col: Any, lo: int, hi: int) -> Any:
    if _is_arrow(col):
        return col.slice(lo, hi - lo)
    if isinstance(col, Mapping):
        return {k: _slice(v, lo, hi) for k, v in col.items()}
    return col[lo:hi]


def convert(
    columns: Mapping[str, Any],
    fields: Mapping[str, Any],
    *,
    max_length: int | Mapping[str, int] | None = None,
    transform: Callable[[dict], dict] | None = None,
    truncate: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Returns a dict of JAX-ready NumPy arrays (nested for ``Struct``) converted from ``columns``.

    Args:
      columns: one column per field: a pyarrow array, a NumPy array or a Python list.
      fields: the ``Field`` of each column to convert (others are ignored).
      max_length: pad length for ragged fields; an int for all, or ``{key: int}``.
      transform: a host function ``dict -> dict`` applied to chunks of decoded rows
        (images as uint8 arrays, text as ``str`` arrays); its output follows the same rules.
      truncate: cut rows longer than ``max_length`` instead of raising.

    ```python
    import numpy as np
    from datarax_fn._convert import convert, Text, Tensor, decode_text
    out = convert({"s": ["hi", "héllo"], "x": np.arange(2)}, {"s": Text(), "x": Tensor((), "int64")})
    assert out["x"].dtype == np.int32 and decode_text(out, "s") == ["hi", "héllo"]
    ```
    """
    return convert_with_meta(columns, fields, max_length=max_length, transform=transform, truncate=truncate, **kwargs)[0]


def owned_arrays(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Returns ``tree`` with every leaf in memory NumPy allocated, for ``from_arrays(copy=False)``.

    Leaves that view a foreign buffer (a memory-mapped Arrow column passed through zero-copy,
    a TensorFlow tensor) are copied into 64-byte-aligned memory, so the device array never
    aliases a file mapping or another library's buffer. Freshly converted leaves (decoded
    images, narrowed integers, padded text) are returned as they are. Only call it on arrays
    :func:`convert` just produced without a ``transform``: a transform may return arrays the
    caller still holds.
    """
    out: dict[str, Any] = {}
    for k, a in tree.items():
        if isinstance(a, Mapping):
            out[k] = owned_arrays(a)
            continue
        root = a
        while isinstance(root.base, np.ndarray):
            root = root.base
        if root.base is None and a.flags.writeable:
            out[k] = a
        else:
            out[k] = _aligned_empty(a.shape, a.dtype)
            out[k][...] = a
    return out


def check_key_options(include_keys: Any, exclude_keys: Any, owner: str = "") -> tuple[Any, Any]:
    """Returns ``(include_keys, exclude_keys)`` as tuples (or None); raises on a bad combination.

    Shared by the HF and TFDS configs and ``select_keys``: both set, or a bare string
    instead of a list of keys, raise an error that names the fields.
    """
    where = f"{owner}: " if owner else ""
    if include_keys is not None and exclude_keys is not None:
        raise ValueError(
            f"{where}include_keys and exclude_keys are exclusive; got both: include_keys={list(include_keys)}, "
            f"exclude_keys={list(exclude_keys)}. Set one of them."
        )
    out = []
    for arg, keys in (("include_keys", include_keys), ("exclude_keys", exclude_keys)):
        if isinstance(keys, str):
            raise TypeError(f"{where}{arg} must be a list of keys, not the string {keys!r}; write [{keys!r}].")
        out.append(None if keys is None else tuple(keys))
    return out[0], out[1]


def select_keys(
    fields: Mapping[str, Any], include_keys: Any = None, exclude_keys: Any = None
) -> dict[str, Any]:
    """Returns the top-level ``fields`` kept by ``include_keys`` / ``exclude_keys``."""
    include_keys, exclude_keys = check_key_options(include_keys, exclude_keys)
    for arg, keys in (("include_keys", include_keys), ("exclude_keys", exclude_keys)):
        if keys is None:
            continue
        unknown = [k for k in keys if k not in fields]
        if unknown:
            raise ValueError(f"{arg}: unknown keys {unknown}; available keys are {list(fields)}.")
    if include_keys is not None:
        if not list(include_keys):
            raise ValueError(f"include_keys is empty; available keys are {list(fields)}.")
        return {k: fields[k] for k in include_keys}
    drop = set(exclude_keys or ())
    kept = {k: f for k, f in fields.items() if k not in drop}
    if not kept:
        raise ValueError(f"exclude_keys={list(drop)} leaves no keys; available keys are {list(fields)}.")
    return kept


def decode_text(batch: Mapping[str, Any], key: str) -> list[str]:
    """Returns the strings of text field ``key`` of a batch (uses ``<key>_length``).

    ```python
    import numpy as np, datarax_fn as dfn
    batch = {"t": np.array([[104, 105, 0]], np.uint8), "t_length": np.array([2], np.int32)}
    assert dfn.decode_text(batch, "t") == ["hi"]
    ```
    """
    node, leaf = batch, key
    for part in key.split(".")[:-1]:  # "a.b" reaches nested text
        node, leaf = node[part], key.split(".")[-1]
    if leaf not in node or f"{leaf}_length" not in node:
        raise KeyError(f"decode_text: batch needs {leaf!r} and {leaf + '_length'!r}; it has {sorted(node)}.")
    data = np.asarray(node[leaf])
    lengths = np.asarray(node[f"{leaf}_length"])
    if data.ndim == 1:
        data, lengths = data[None], lengths.reshape(1)
    return [data[i, : int(lengths[i])].tobytes().decode("utf-8", errors="replace") for i in range(len(data))]


def element_spec_of(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Returns one ``jax.ShapeDtypeStruct`` per leaf of converted arrays, for a single record."""
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), dict(arrays))


__all__ = [
    "Audio", "Image", "Label", "Sequence", "Struct", "Tensor", "Text",
    "convert", "convert_with_meta", "decode_text", "element_spec_of", "jax_dtype", "select_keys",
]
