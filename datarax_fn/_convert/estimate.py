"""The decoded size of a split, from the real sizes (the longest ragged or text row included)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from . import decoders, ragged
from .columns import nested, rows_of, slice_rows
from .converter import Converter, column_at, converter_for
from .images import encoded, unreadable
from .time import to_counts

_IMAGE_SAMPLE = 256  # images whose headers are read (spread over the split)


def _image_bytes(conv: Converter, leaf: Any, col: Any) -> int:
    n, get = encoded(col, leaf.path, 0)
    h, w, c = leaf.dims
    if None not in (h, w) and c is not None:
        return n * h * w * c * leaf.dtype.itemsize
    from PIL import Image as PILImage  # heavy; reads headers only

    biggest = 0
    for i in np.unique(np.linspace(0, n - 1, min(n, _IMAGE_SAMPLE)).astype(int)) if n else ():
        obj = get(int(i))
        try:
            img = PILImage.open(obj if isinstance(obj, str) else io.BytesIO(bytes(obj)))
        except (OSError, SyntaxError, PILImage.DecompressionBombError) as err:
            raise unreadable(decoders.too_large(err) or err, leaf.path, int(i)) from err
        biggest = max(biggest, img.size[0] * img.size[1] * (c or len(img.getbands())))
    return n * biggest * leaf.dtype.itemsize


def _leaf_bytes(conv: Converter, leaf: Any, col: Any) -> int:
    if leaf.kind == "image":
        return _image_bytes(conv, leaf, col)
    n = rows_of(col)
    if leaf.kind == "audio":  # encoded PCM is about 2 bytes a sample, decoded 4
        sizes = [len(v.get("bytes") or b"") if isinstance(v, dict) else 0 for v in _pylist(col)]
        return n * 2 * max(sizes, default=0) + 4 * n
    text = leaf.kind == "text"
    col = to_counts(col) if leaf.kind == "time" else col
    nest = nested(col, len(leaf.dims) - text, leaf.path, 0, text=text)
    longest = ragged.longest(nest)
    sizes = [s if s is not None else m for s, m in zip(leaf.sizes, longest)]
    inner = int(np.prod(nest.values.shape[1:], dtype=np.int64))
    lengths = sum(n * int(np.prod(sizes[:d], dtype=np.int64)) * 4 for d, r in enumerate(leaf.ragged) if r)
    return n * int(np.prod(sizes, dtype=np.int64)) * inner * leaf.dtype.itemsize + lengths


def _pylist(col: Any) -> list:
    return col.to_pylist() if hasattr(col, "to_pylist") else list(col)


def estimate_nbytes(fields_or_conv: Any, columns: Any) -> int:
    """Returns the size in bytes the converted split will take (padding to the longest row included).

    Arguments:
      fields_or_conv: a ``Converter`` (its options apply) or a dict of fields (default options).
      columns: every row of the split, as ``Converter`` takes them.

    Returns:
      The bytes of all output leaves. Reads offsets and image headers, decodes no pixels; with a
      transform, scales the converted size of its first 256 rows.
    """
    conv = converter_for(fields_or_conv)
    n = rows_of(columns[conv.leaves[0].keys[0]])
    if conv.transform is not None:
        k = min(n, 256)
        probe = conv({key: slice_rows(v, 0, k) for key, v in columns.items()})
        size = sum(a.nbytes for a in _leaves(probe))
        return int(size * n / max(k, 1))
    return sum(_leaf_bytes(conv, leaf, column_at(columns, leaf.keys, 0, leaf.path)) for leaf in conv.leaves)


def _leaves(tree: dict) -> list[np.ndarray]:
    out = []
    for v in tree.values():
        out += _leaves(v) if isinstance(v, dict) else [v]
    return out
