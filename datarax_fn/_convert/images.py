"""Images: encoded bytes -> pixel arrays with the declared dtype and channel count.

Decoding is in :mod:`.decoders`; here: reading encoded columns, channel modes, stacking.
"""

from __future__ import annotations

import bisect
import concurrent.futures as cf
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import decoders
from .columns import arrow_bytes, is_arrow, null_error, plain_arrow
from .memory import aligned_empty

MODES = {"L": (1, "uint8"), "LA": (2, "uint8"), "RGB": (3, "uint8"), "RGBA": (4, "uint8"),
         "I;16": (1, "uint16"), "I": (1, "int32"), "F": (1, "float32")}
_CHANNEL_MODE = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_ONE_CHANNEL_MODE = {np.dtype(np.uint16): "I;16", np.dtype(np.int32): "I", np.dtype(np.float32): "F"}
PROBE_IMAGES = 64  # a stream's first images that decide the mode of an image field declaring none


def _arrow_getter(arr: Any, name: str, base: int) -> Callable[[int], Any]:
    import pyarrow as pa  # a dependency of datasets; only Arrow columns reach here

    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    if arr.null_count:
        raise null_error(name, base + int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]))
    if pa.types.is_struct(arr.type):
        kids = dict(zip([f.name for f in arr.type], arr.flatten()))
        raw, paths = kids.get("bytes"), kids.get("path")
        has = ~raw.is_null().to_numpy(zero_copy_only=False) if raw is not None else np.zeros(len(arr), bool)
        if raw is not None:
            raw = arrow_bytes(raw.fill_null(b"") if raw.null_count else raw, name, [], base)
        path_list = paths.to_pylist() if paths is not None and not has.all() else None
    else:  # a plain binary column (TFDS encoded images)
        raw, has, path_list = arrow_bytes(arr, name, [], base), np.ones(len(arr), bool), None
    off = raw[0].tolist() if raw is not None else None
    data = memoryview(raw[1]) if raw is not None else None

    def get(i: int) -> Any:
        if has[i]:
            return data[off[i] : off[i + 1]]
        if path_list is None or path_list[i] is None:
            raise null_error(name, base + i)
        return path_list[i]

    return get


def encoded(col: Any, name: str, row0: int) -> tuple[int, Callable[[int], Any]]:
    """Returns ``(n, get(i))``; ``get`` gives encoded bytes, a path, a PIL image or an array."""
    if is_arrow(col):
        import pyarrow as pa  # a dependency of datasets; only Arrow columns reach here

        if not isinstance(col, pa.ChunkedArray) or col.num_chunks <= 1:
            return len(col), _arrow_getter(plain_arrow(col), name, row0)
        # HF's cache files hold many small record batches: read them in place rather than
        # combine_chunks(), which would copy every encoded image once more.
        chunks = [c for c in col.chunks if len(c)]
        starts = np.cumsum([0] + [len(c) for c in chunks]).tolist()
        gets = [_arrow_getter(c, name, row0 + lo) for c, lo in zip(chunks, starts)]

        def get_chunked(i: int) -> Any:
            k = bisect.bisect_right(starts, i) - 1
            return gets[k](i - starts[k])

        return len(col), get_chunked

    def get_py(i: int) -> Any:
        v = col[i]
        if isinstance(v, Mapping):
            v = v.get("bytes") if v.get("bytes") is not None else v.get("path")
        if v is None:
            raise null_error(name, row0 + i)
        return v

    return len(col), get_py


def unreadable(err: Exception, name: str, row: int) -> ValueError:
    """Returns the error for an image the decoders refuse: too large for PIL's limit, or damaged."""
    if isinstance(err, decoders.ImageTooLarge):
        return ValueError(
            f"field {name!r}: row {row} declares an image of {err.pixels} pixels, over PIL's limit of {err.limit} "
            f"(2 * PIL.Image.MAX_IMAGE_PIXELS): such a file can exhaust memory (a decompression bomb). If it is trusted, raise the "
            f"limit before loading: PIL.Image.MAX_IMAGE_PIXELS = {-(-err.pixels // 2)} (or None for no "
            f"limit); else leave the field out with exclude_keys=[{name!r}]."
        )
    return ValueError(
        f"field {name!r}: row {row} is not a readable image ({err}). Fix the file, or leave the "
        f"field out with exclude_keys=[{name!r}]."
    )


def decode(obj: Any, name: str, row: int) -> np.ndarray:
    """Returns one image as an ``(H, W, C)`` array in its stored dtype and channels."""
    if isinstance(obj, np.ndarray) or type(obj).__module__.startswith("jax"):
        a = np.asarray(obj)
        return a[:, :, None] if a.ndim == 2 else a
    try:
        a = None
        if isinstance(obj, (bytes, bytearray, memoryview)):
            obj = bytes(obj)
            a = decoders.decode_fast(obj)
        if a is None:
            a = decoders.decode_pil(obj)
    except (OSError, ValueError, SyntaxError) as err:  # ImageTooLarge is a ValueError
        raise unreadable(err, name, row) from err
    return a[:, :, None] if a.ndim == 2 else a


def decode_all(col: Any, name: str, row0: int, threads: int | None) -> list[np.ndarray]:
    """Returns every image of a column decoded (in threads: PIL and zlib release the GIL)."""
    n, get = encoded(col, name, row0)
    first = get(0) if n else None
    png = isinstance(first, (bytes, memoryview)) and bytes(first[:8]) == decoders.PNG_SIG
    # PNG stays on one thread unless asked: libspng (called through ctypes) releases the GIL, but
    # threads have not been measured to pay off for it as they do for PIL and OpenCV.
    workers = threads or (1 if png else min(8, os.cpu_count() or 1))
    out: list[Any] = [None] * n
    fast = decoders.decode_fast

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            obj = get(i)
            try:
                a = fast(bytes(obj)) if isinstance(obj, (bytes, memoryview)) else None  # the common case, inlined
            except (decoders.ImageTooLarge, decoders.DamagedImage) as err:
                raise unreadable(err, name, row0 + i) from err
            if a is None:
                a = decode(obj, name, row0 + i)
            out[i] = a if a.ndim == 3 else a[:, :, None]

    block = max(64, n // (workers * 4) + 1)
    spans = [(lo, min(lo + block, n)) for lo in range(0, n, block)]
    if workers <= 1 or len(spans) <= 1:
        for lo, hi in spans:
            work(lo, hi)
    else:
        with cf.ThreadPoolExecutor(workers, thread_name_prefix="datarax_fn-decode") as pool:
            for fut in [pool.submit(work, lo, hi) for lo, hi in spans]:
                fut.result()
    return out


def promoted_mode(images: list[np.ndarray]) -> str:
    """Returns the smallest mode holding every image losslessly: colour if any has colour,
    alpha if any has alpha (so the result does not depend on the order of rows)."""
    counts = {a.shape[2] for a in images}
    colour = bool(counts & {3, 4})
    alpha = bool(counts & {2, 4})
    return {(False, False): "L", (False, True): "LA", (True, False): "RGB", (True, True): "RGBA"}[(colour, alpha)]


def probe_image_mode(samples: list[np.ndarray], name: str = "image") -> str:
    """Returns the mode a stream holds an image field in when the feature declares none: the
    smallest of L, LA, RGB and RGBA holding every sample losslessly (:func:`promoted_mode`).

    Arguments:
      samples: the field's first decoded images, ``(H, W, C)`` arrays (the converter passes up
        to ``PROBE_IMAGES`` of the split's first rows).
      name: the field, for the error.

    Later images are converted to it only without loss (:func:`to_mode_lossless`). Images that
    are not 8-bit raise naming ``image_mode``, as an eager load does (``I;16`` for 16-bit grey).
    """
    odd = next((a for a in samples if a.dtype != np.uint8 or a.shape[2] not in (1, 2, 3, 4)), None)
    if odd is None and samples:
        return promoted_mode(samples)
    mode = _ONE_CHANNEL_MODE.get(odd.dtype, "<its mode>") if odd is not None and odd.shape[2] == 1 else "<its mode>"
    what = f"a {odd.dtype} image with {odd.shape[2]} channel(s)" if odd is not None else "no image"
    raise ValueError(
        f"field {name!r}: the feature declares no image mode and its first images include {what}, which no 8-bit "
        f"mode holds. Pass image_mode={{{name!r}: {mode!r}}} (one of {sorted(MODES)}), or a transform that converts them."
    )


def to_mode_lossless(a: np.ndarray, mode: str, name: str, row: int, probed: int) -> np.ndarray:
    """Returns image ``a`` in ``mode`` (decided from the first ``probed`` images) where that
    loses nothing: grey to colour, an opaque alpha added, colour or alpha dropped only where
    every pixel is grey or opaque. Else raises naming the row and the ``image_mode`` that holds it."""
    c, dtype = MODES[mode]
    if a.shape[2] == c and a.dtype == np.dtype(dtype):
        return a
    have, lost = a.shape[2], None
    if a.dtype != np.uint8 or dtype != "uint8":
        lost = f"{a.dtype} values"
    elif have in (3, 4) and c in (1, 2) and not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])):
        lost = "colour"
    elif have in (2, 4) and c in (1, 3) and not (a[..., -1] == 255).all():
        lost = "transparency"
    if lost is not None:
        fix = promoted_mode([np.zeros((1, 1, c), np.uint8), a]) if lost != f"{a.dtype} values" else "<its mode>"
        raise ValueError(
            f"field {name!r}: row {row} is a {a.dtype} image with {have} channel(s); the stream holds this field in "
            f"mode {mode!r}, decided from its first {probed} images since the feature declares none, and converting "
            f"this one would lose its {lost}. Pass image_mode={{{name!r}: {fix!r}}} to hold every image (each is "
            "converted as PIL's Image.convert does)."
        )
    return to_mode(a, mode, name, row)


def convertible(a: np.ndarray, mode: str) -> bool:
    """Returns whether :func:`to_mode` can put image ``a`` in ``mode`` (8-bit to 8-bit, or already there)."""
    c, dtype = MODES[mode]
    return (a.shape[2] == c and a.dtype == np.dtype(dtype)) or (a.dtype == np.uint8 and dtype == "uint8")


def to_mode(a: np.ndarray, mode: str, name: str, row: int) -> np.ndarray:
    """Returns image ``a`` in PIL mode ``mode``, exactly as ``PIL.Image.convert`` gives it."""
    c, dtype = MODES[mode]
    if a.shape[2] == c and a.dtype == np.dtype(dtype):
        return a
    if not convertible(a, mode):
        raise ValueError(
            f"field {name!r}: row {row} is a {a.dtype} image with {a.shape[2]} channels, the feature "
            f"needs mode {mode!r} ({dtype}, {c} channels). Pass image_mode={{{name!r}: <its mode>}} "
            f"(e.g. 'I;16' for 16-bit grey), or a transform that converts it."
        )
    have = a.shape[2]
    if c > have and (have, c) != (2, 3):  # promotions: replicate grey, add an opaque alpha
        grey, alpha = (a[:, :, :1], a[:, :, 1:2]) if have == 2 else (a, None)
        colour = a[:, :, :3] if have >= 3 else np.repeat(grey, 3 if c >= 3 else 1, axis=2)
        if c in (2, 4):
            alpha = alpha if alpha is not None else np.full(a.shape[:2] + (1,), 255, np.uint8)
            return np.concatenate([colour, alpha], axis=2)
        return np.ascontiguousarray(colour)
    from PIL import Image as PILImage  # heavy; reductions (e.g. RGB -> L) use PIL's own weights

    src = a[:, :, 0] if have == 1 else a
    out = np.asarray(PILImage.fromarray(src, _CHANNEL_MODE[have]).convert(mode))
    return out[:, :, None] if out.ndim == 2 else out


def stack(images: list[np.ndarray], mode: str | None, dtype: str, shape: tuple, name: str, row0: int,
          probed: int = 0) -> np.ndarray:
    """Returns the images as one ``(N, H, W, C)`` array; ``mode`` None keeps each as decoded.

    ``probed``: the mode was decided from the first ``probed`` images, so only lossless
    conversions are made. Images of different sizes raise (field, row, the two shapes, a
    resizing transform).
    """
    want = np.dtype(dtype)
    if mode is not None:
        c, mode_dtype = MODES[mode]
        keep = np.dtype(mode_dtype)
        images = [a if a.shape[2] == c and a.dtype == keep else
                  to_mode_lossless(a, mode, name, row0 + i, probed) if probed else to_mode(a, mode, name, row0 + i)
                  for i, a in enumerate(images)]
    first = images[0].shape if images else tuple(d or 0 for d in shape)
    # One pass over the shapes and dtypes in C-speed set building; the per-image loop below
    # runs only to name the first image at fault.
    uniform = len({a.shape for a in images}) <= 1 and {a.dtype for a in images} <= {want}
    declared = all(d is None or d == s for d, s in zip(shape, first))
    for i, a in enumerate(() if uniform and declared else images):
        if a.dtype != want:
            fix = f"pass image_mode={{{name!r}: 'I;16'}}" if a.shape[2] == 1 and a.dtype == np.uint16 else (
                "pass a transform that converts it (it receives the decoded arrays)")
            raise ValueError(
                f"field {name!r}: row {row0 + i} is a {a.dtype} image with {a.shape[2]} channel(s), the feature "
                f"declares {want}. To keep its values, {fix}; or leave it out with exclude_keys=[{name!r}]."
            )
        if a.shape != first or any(d is not None and d != s for d, s in zip(shape, a.shape)):
            other = first if a.shape != first else tuple(shape)
            raise ValueError(
                f"field {name!r}: row {row0 + i} has shape {a.shape}, other images have {other}. Batches "
                "need one shape; pass a transform that resizes, e.g. transform=lambda b: {**b, "
                f"{name.split('.')[-1]!r}: np.stack([np.asarray(PIL.Image.fromarray(x.squeeze()).resize((W, H)))"
                f".reshape(H, W, -1) for x in b[{name.split('.')[-1]!r}]])}}."
            )
    out = aligned_empty((len(images), *first), want)
    if images:
        np.stack(images, out=out)
    return out


def float_from_png(a: np.ndarray, name: str, row: int) -> np.ndarray:
    """Returns the float32 ``(H, W, 1)`` image TFDS stored bit-cast as 4 uint8 channels."""
    if a.dtype == np.float32:
        return a
    if a.dtype != np.uint8 or a.shape[2] != 4:
        raise ValueError(f"field {name!r}: row {row} is a {a.dtype} image with {a.shape[2]} channels, not a float32 image "
                         "stored as 4 uint8 channels (TFDS Image(dtype=float32)).")
    return np.ascontiguousarray(a).view("<f4").astype(np.float32)
