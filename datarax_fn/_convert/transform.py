"""A transform's two sides: the user view of a chunk (before our rules) and the fields of its output.

The user view: numbers as NumPy (a list of arrays where rows differ in length), text as
``str`` (binary as ``bytes``), lists of strings as lists, images decoded by the image rule
(stacked when they share a shape), audio as a list of float32 clips, unsupported fields as
Python values. The output's fields are inferred from the values: a NumPy array fixes its
shape, a Python list of arrays has a ragged first axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import images, text
from .columns import is_arrow, nested, plain_arrow
from .fields import Sequence, Struct, Tensor, Text
from .plan import Leaf
from .rules import audio_clips, decoded_images
from .time import to_counts


def _split(values: Any, offsets: list[np.ndarray]) -> list:
    """Returns the rows of ``values`` (an array or a list) split by the list levels ``offsets`` (innermost first)."""
    items: list = [values[offsets[-1][i] : offsets[-1][i + 1]] for i in range(len(offsets[-1]) - 1)]
    for off in reversed(offsets[:-1]):
        items = [items[off[i] : off[i + 1]] for i in range(len(off) - 1)]
    return items


def user_column(leaf: Leaf, col: Any, row0: int, ctx: Any) -> Any:
    """Returns one leaf's column as the transform sees it."""
    if leaf.kind == "unsupported":
        return plain_arrow(col).to_pylist() if is_arrow(col) else list(col)
    if leaf.kind == "image":
        imgs, mode = decoded_images(leaf, col, row0, ctx)
        if mode is not None:  # an image the mode cannot hold reaches the transform as decoded, to convert
            imgs = [images.to_mode(a, mode, leaf.path, row0 + i) if images.convertible(a, mode) else a
                    for i, a in enumerate(imgs)]
        return np.stack(imgs) if imgs and len({(a.shape, a.dtype) for a in imgs}) == 1 else imgs
    if leaf.kind == "audio":  # clips as they are: mixing channels is the transform's job
        return audio_clips(leaf, col, row0, ctx)
    if leaf.kind == "text":
        nest = nested(col, len(leaf.dims) - 1, leaf.path, row0, text=True)
        strs = text.strings(nest.values, nest.offsets[-1], leaf.field.binary)
        if len(nest.offsets) == 1:
            out = np.empty(len(strs), object)
            out[:] = strs
            return out
        return _split(strs, nest.offsets[:-1])
    if leaf.kind == "time":
        col = to_counts(col)
    dtype = np.dtype(leaf.field.dtype) if leaf.kind == "number" else None
    nest = nested(col, len(leaf.dims), leaf.path, row0, dtype=dtype)
    if not nest.offsets:
        return nest.values
    if None not in leaf.dims:
        return nest.values.reshape((nest.rows, *leaf.dims, *nest.values.shape[1:]))
    return _split(nest.values, nest.offsets)


def infer(value: Any, path: str) -> Any:
    """Returns the field of one column a transform returned."""
    if isinstance(value, Mapping):
        return Struct({k: infer(v, f"{path}.{k}") for k, v in value.items()})
    if type(value).__module__.startswith("jax"):
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        if value.ndim == 0:
            raise ValueError(f"transform output {path!r} is a scalar; return one value per row (an array of shape (N, ...)).")
        return Tensor(value.shape[1:], value.dtype.name)
    if isinstance(value, np.ndarray) and value.dtype.kind in "USO":
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            f"transform output {path!r} is a {type(value).__name__}; return a dict of NumPy arrays, lists "
            "of arrays (ragged rows) or lists of strings."
        )
    return _infer_items(list(value), path)


def _infer_items(items: list, path: str) -> Any:
    kinds = {type(v) for v in items}
    if not items:
        raise ValueError(f"transform output {path!r} is an empty list; return one value per row.")
    if any(v is None for v in items):
        raise ValueError(f"transform output {path!r} holds None; fill missing values in the transform.")
    if kinds <= {str}:
        return Text()
    if kinds <= {bytes}:
        return Text(binary=True)
    if all(isinstance(v, (list, tuple)) and v and all(isinstance(x, (str, bytes)) for x in v) for v in items):
        return Sequence(_infer_items([x for v in items for x in v], path))
    arrays = [np.asarray(v) for v in items]
    if any(a.dtype.kind not in "biuf" for a in arrays):
        raise TypeError(f"transform output {path!r}: rows of dtype {arrays[0].dtype}; return numbers or strings.")
    if len({a.ndim for a in arrays}) != 1 or arrays[0].ndim == 0:
        raise ValueError(f"transform output {path!r}: a list needs one array (ndim >= 1) per row; got ndims {sorted({a.ndim for a in arrays})}.")
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1:
        raise ValueError(f"transform output {path!r}: rows have dtypes {sorted(map(str, dtypes))}; return one dtype.")
    inner = tuple(s if len({a.shape[i + 1] for a in arrays}) == 1 else None for i, s in enumerate(arrays[0].shape[1:]))
    return Tensor((None, *inner), arrays[0].dtype.name)


def out_rows(out: Mapping[str, Any]) -> int:
    """Returns the row count of a transform's output; raises when its columns disagree."""
    counts = {}

    def walk(tree: Mapping[str, Any], prefix: str) -> None:
        for k, v in tree.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            else:
                counts[f"{prefix}{k}"] = len(v)

    walk(out, "")
    if len(set(counts.values())) > 1:
        raise ValueError(f"transform returned columns of different lengths {counts}; every column needs one value per row.")
    return next(iter(counts.values()), 0)


def concat(parts: list[Any]) -> Any:
    """Returns transform outputs of consecutive chunks joined into one (one chunk: itself, not a copy)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, Mapping):
        return {k: concat([p[k] for p in parts]) for k in first}
    if isinstance(first, np.ndarray) and first.dtype != object:
        return np.concatenate(parts)
    return [x for p in parts for x in (p.tolist() if isinstance(p, np.ndarray) else p)]
