"""The rules, one per leaf kind: a leaf's column -> its output arrays (the leaf and its lengths).

Dispatch is a table keyed by the kind the plan gave the leaf (``RULES``). Every rule names
the global row ``row0 + i`` in its errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import audio, images, ragged
from .columns import Nested, nested
from .dtypes import cast
from .plan import Leaf
from .time import to_counts


def _row_at(row0: int, shape: tuple) -> Any:
    per_row = int(np.prod(shape[1:], dtype=np.int64)) or 1
    return lambda i: row0 + i // per_row


def _padded(leaf: Leaf, nest: Nested, row0: int, truncate: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """Returns the leaf's values padded per rule 5, and its length leaves."""
    nest, dims = ragged.fold_fixed(nest, leaf.dims, leaf.path, row0)
    if not dims:
        return nest.values, []
    sizes = leaf.sizes[: len(dims)]
    if None in sizes:  # no max_length: the data decide (the converter got the whole split)
        longest = ragged.longest(nest)
        if leaf.kind != "text" and ragged.uniform(nest):
            return nest.values.reshape((nest.rows, *longest, *nest.values.shape[1:])), []
        if leaf.kind != "text":
            where = [i for i, d in enumerate(leaf.dims) if d is None]
            want = "L" if len(where) == 1 else "(" + ", ".join(f"L{i}" for i in range(len(where))) + ")"
            raise ValueError(
                f"field {leaf.path!r}: rows have different lengths (longest per level: {longest}). Pass "
                f"max_length={{{leaf.path!r}: {want}}} to zero-pad them with int32 "
                f"'{leaf.keys[-1]}_length' leaves, or leave the field out with exclude_keys=[{leaf.path!r}]."
            )
        sizes = tuple(s if s is not None else n for s, n in zip(sizes, longest))
    return ragged.pad(nest, sizes, leaf.ragged[: len(dims)], truncate, leaf.path, row0)


def _numbers(leaf: Leaf, col: Any, row0: int, truncate: bool, ctx: Any) -> list[np.ndarray]:
    if leaf.kind == "time":
        col = to_counts(col)
    declared = np.dtype(leaf.field.dtype) if leaf.kind == "number" else None
    if leaf.kind == "label" and not hasattr(col, "dtype") and len(col) and isinstance(col[0], str):
        col = _label_ids(leaf, col, row0)
    if isinstance(col, np.ndarray) and col.dtype != object and col.shape[1:] == leaf.dims:
        values, lengths = col, []
    else:
        values, lengths = _padded(leaf, nested(col, len(leaf.dims), leaf.path, row0, dtype=declared), row0, truncate)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"field {leaf.path!r}: values of dtype {values.dtype} are not numbers; the feature declares numbers.")
    if declared is not None and values.dtype != declared and values.dtype.kind == "f" and declared.kind in "iub":
        raise ValueError(f"field {leaf.path!r}: float values in an integer field ({declared}); fix the data or the feature.")
    if leaf.kind == "label" and values.size:
        names = leaf.field.names
        bad = np.flatnonzero((values < -1) | (values >= len(names))) if names else np.flatnonzero(values < -1)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"field {leaf.path!r}: label {values.reshape(-1)[i]} at row {_row_at(row0, values.shape)(i)} is "
                f"outside [-1, {len(names)}) (names {list(names)[:5]}...). Fix the labels or the ClassLabel names."
            )
    return [np.ascontiguousarray(cast(values, leaf.dtype, leaf.path, _row_at(row0, values.shape))), *lengths]


def _label_ids(leaf: Leaf, col: Any, row0: int) -> np.ndarray:
    lookup = {s: i for i, s in enumerate(leaf.field.names)}
    out = np.zeros(len(col), np.int64)
    for i, s in enumerate(col):
        if s not in lookup:
            raise ValueError(f"field {leaf.path!r}: label {s!r} at row {row0 + i} is not one of {list(leaf.field.names)}.")
        out[i] = lookup[s]
    return out


def _text(leaf: Leaf, col: Any, row0: int, truncate: bool, ctx: Any) -> list[np.ndarray]:
    values, lengths = _padded(leaf, nested(col, len(leaf.dims) - 1, leaf.path, row0, text=True), row0, truncate)
    return [values, *lengths]


def decoded_images(leaf: Leaf, col: Any, row0: int, ctx: Any) -> tuple[list[np.ndarray], str | None]:
    """Returns the decoded images of a column and the mode they all take (None: as decoded)."""
    imgs = images.decode_all(col, leaf.path, row0, ctx.num_threads)
    if leaf.field.dtype == "float32":
        imgs = [images.float_from_png(a, leaf.path, row0 + i) for i, a in enumerate(imgs)]
    mode = leaf.mode
    if mode is None and imgs and all(a.dtype == np.uint8 and a.shape[2] in (1, 2, 3, 4) for a in imgs):
        mode = images.promoted_mode(imgs)
    return imgs, mode


def _images(leaf: Leaf, col: Any, row0: int, truncate: bool, ctx: Any) -> list[np.ndarray]:
    imgs, mode = decoded_images(leaf, col, row0, ctx)
    shape = ctx.image_shape.get(leaf.path, leaf.dims)
    return [images.stack(imgs, mode, leaf.dtype.name, shape, leaf.path, row0, leaf.probed)]


def audio_clips(leaf: Leaf, col: Any, row0: int, ctx: Any) -> list[np.ndarray]:
    """Returns the clips of an audio column, float32 ``(T,)`` or ``(T, C)``, all at one sampling rate."""
    clips, rates = audio.clips(col, leaf.field, leaf.path, row0)
    if len(rates) > 1:
        # A transform sees clips without their rates, so it cannot resample; the data must change.
        raise ValueError(
            f"field {leaf.path!r}: clips have different sampling rates {sorted(rates)}, and datarax_fn does not "
            f"resample. Re-encode the clips at one rate first (e.g. ds.map), or leave the field out with "
            f"exclude_keys=[{leaf.path!r}]."
        )
    if rates:
        ctx.meta.setdefault(leaf.path, {})["sampling_rate"] = rates.pop()
    return clips


def audio_nested(leaf: Leaf, col: Any, row0: int, ctx: Any) -> Nested:
    """Returns the clips of an audio column as one ragged level (time) over (T, C) samples."""
    clips = audio_clips(leaf, col, row0, ctx)
    inner = {c.shape[1:] for c in clips}
    if len(inner) > 1:
        raise ValueError(f"field {leaf.path!r}: clips have different channel counts {sorted(inner)}; pass a transform that mixes them.")
    off = np.zeros(len(clips) + 1, np.int64)
    np.cumsum([len(c) for c in clips], out=off[1:])
    values = np.concatenate(clips) if clips else np.zeros((0,), np.float32)
    return Nested([off], values)


def _audio(leaf: Leaf, col: Any, row0: int, truncate: bool, ctx: Any) -> list[np.ndarray]:
    nest = audio_nested(leaf, col, row0, ctx)
    channels = leaf.field.channels or 1
    if ctx.static and nest.values.shape[1:] != ((channels,) if channels > 1 else ()):
        got = nest.values.shape[1] if nest.values.ndim > 1 else 1
        raise ValueError(
            f"field {leaf.path!r}: clips at rows {row0}.. have {got} channels, the feature declares "
            f"{channels}; streaming needs the declared shape. Pass a transform that mixes them to {channels}."
        )
    values, lengths = _padded(leaf, nest, row0, truncate)
    return [values, *lengths]


RULES = {"number": _numbers, "label": _numbers, "time": _numbers, "text": _text, "image": _images, "audio": _audio}
