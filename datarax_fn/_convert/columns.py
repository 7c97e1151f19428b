"""Columns as the backends give them (Arrow arrays, NumPy arrays, Python lists) -> list levels.

Every list-like leaf is read into one form, :class:`Nested`: the offsets of each list level
and the flat leaf values. Missing values raise here, naming the GLOBAL row (``row0 + i``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass
class Nested:
    """Rows as list levels: level d's item j spans ``offsets[d][j]:offsets[d][j+1]`` of level d+1.

    ``values`` holds the innermost items, ``(M, *inner)``; ``text`` marks UTF-8/bytes leaves
    (the last level is the bytes of each string).
    """

    offsets: list[np.ndarray]
    values: np.ndarray
    text: bool = False

    @property
    def rows(self) -> int:
        return len(self.offsets[0]) - 1 if self.offsets else len(self.values)


def null_error(name: str, row: int) -> ValueError:
    """Returns the error for a missing value of field ``name`` at global row ``row``."""
    return ValueError(
        f"field {name!r}: missing value (None) at row {row}. JAX arrays cannot hold missing values; "
        f"fill or drop those rows first (ds.map / ds.filter with a function that finds every None in "
        f"{name.split('.')[0]!r}, also inside lists and structs), pass a transform that fills them, or leave "
        f"the field out with exclude_keys=[{name!r}]."
    )


def row_of(offsets: list[np.ndarray], depth: int, index: int) -> int:
    """Returns the row holding item ``index`` of list level ``depth`` (0: the rows themselves)."""
    for d in range(depth - 1, -1, -1):
        index = int(np.searchsorted(offsets[d], index, side="right") - 1)
    return index


def is_arrow(col: Any) -> bool:
    """Returns whether ``col`` is a pyarrow array, subclasses included (HF's fixed-shape arrays
    are ``datasets``' own ``ExtensionArray`` subclass), without importing pyarrow."""
    return any(c.__module__.startswith("pyarrow") for c in type(col).__mro__)


def plain_arrow(col: Any) -> Any:
    """Returns one pyarrow Array (chunks combined, extension types unwrapped)."""
    import pyarrow as pa  # a dependency of datasets; only Arrow columns reach here

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if isinstance(col, pa.ExtensionArray):
        col = col.storage
    return col


def check_arrow_nulls(arr: Any, name: str, offsets: list[np.ndarray], row0: int) -> None:
    if arr.null_count:
        first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise null_error(name, row0 + row_of(offsets, len(offsets), first))


def arrow_bytes(arr: Any, name: str, offsets: list[np.ndarray], row0: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(offsets, uint8 bytes)`` of an Arrow string/binary array, without copying."""
    import pyarrow as pa  # a dependency of datasets; only Arrow columns reach here

    check_arrow_nulls(arr, name, offsets, row0)
    if not pa.types.is_large_binary(arr.type):
        arr = arr.cast(pa.large_binary())
    n = len(arr)
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return off - off[0], data[off[0] : off[-1]]


def arrow_nested(col: Any, name: str, row0: int, text: bool) -> Nested:
    """Returns the list levels and leaf values of an Arrow column."""
    import pyarrow as pa  # a dependency of datasets; only Arrow columns reach here

    arr, offsets = plain_arrow(col), []
    while True:
        if isinstance(arr, pa.ExtensionArray):
            arr = arr.storage
        if isinstance(arr, pa.FixedSizeListArray):
            check_arrow_nulls(arr, name, offsets, row0)
            offsets.append(np.arange(len(arr) + 1, dtype=np.int64) * arr.type.list_size)
            arr = arr.flatten()
        elif isinstance(arr, (pa.ListArray, pa.LargeListArray)):
            check_arrow_nulls(arr, name, offsets, row0)
            off = arr.offsets.to_numpy().astype(np.int64)
            offsets.append(off - off[0])
            arr = arr.flatten()
        else:
            break
    if text:
        off, data = arrow_bytes(arr, name, offsets, row0)
        return Nested([*offsets, off], data, text=True)
    check_arrow_nulls(arr, name, offsets, row0)
    return Nested(offsets, arr.to_numpy(zero_copy_only=False))


def _flatten_level(items: Any, rows: np.ndarray, name: str, row0: int) -> tuple[np.ndarray, Any, np.ndarray]:
    """Returns ``(offsets, children, rows of the children)`` of one Python/NumPy list level."""
    if isinstance(items, np.ndarray) and items.dtype != object and items.ndim >= 2:
        n, size = items.shape[:2]
        # The count is explicit: reshape cannot infer -1 next to a zero-size axis ((N, 1, 0) of empty lists).
        return np.arange(n + 1, dtype=np.int64) * size, items.reshape((n * size, *items.shape[2:])), np.repeat(rows, size)
    if len(items) and all(isinstance(v, np.ndarray) and v.dtype != object and v.ndim for v in items):
        if len({v.shape[1:] for v in items}) == 1:  # rows of arrays: one concatenate, no Python loop
            lengths = np.fromiter((len(v) for v in items), np.int64, len(items))
            off = np.zeros(len(items) + 1, np.int64)
            np.cumsum(lengths, out=off[1:])
            # Empty rows carry no dtype of their own (TFDS gives float32): leave them out of the join.
            return off, np.concatenate([v for v in items if v.size] or items[:1]), np.repeat(rows, lengths)
    lengths = np.zeros(len(items), np.int64)
    for i, v in enumerate(items):
        if v is None:
            raise null_error(name, row0 + int(rows[i]))
        lengths[i] = len(v)
    off = np.zeros(len(items) + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    flat: list = []
    for v in items:
        flat.extend(v.tolist() if isinstance(v, np.ndarray) and v.dtype == object else v)
    return off, flat, np.repeat(rows, lengths)


def _encode(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, np.ndarray):
        return v.tobytes() if v.dtype.kind == "S" else str(v).encode("utf-8")
    return bytes(v)


def python_nested(col: Any, levels: int, name: str, row0: int, text: bool, dtype: Any = None) -> Nested:
    """Returns the list levels and leaf values of a NumPy array or (nested) Python list column.

    ``levels`` counts the list levels above the leaf values (for text: above the strings).
    """
    items: Any = col
    rows = np.arange(len(col))
    offsets = []
    for _ in range(levels):
        off, items, rows = _flatten_level(items, rows, name, row0)
        offsets.append(off)
    if text:
        if isinstance(items, np.ndarray) and items.dtype.kind == "S" and items.dtype.itemsize:
            items = items.tolist()
        parts = []
        for i, v in enumerate(items):
            if v is None:
                raise null_error(name, row0 + int(rows[i]))
            parts.append(_encode(v))
        off = np.zeros(len(parts) + 1, np.int64)
        np.cumsum([len(p) for p in parts], out=off[1:])
        return Nested([*offsets, off], np.frombuffer(b"".join(parts), np.uint8), text=True)
    if isinstance(items, np.ndarray) and items.dtype != object:
        if dtype is not None and not items.size:  # empty lists carry no dtype of their own (TFDS: float32)
            items = items.astype(dtype)
        return Nested(offsets, items)
    for i, v in enumerate(items):
        if v is None:
            raise null_error(name, row0 + int(rows[i]))
    values = np.asarray(items, dtype=dtype) if len(items) else np.zeros(0, dtype or np.float32)
    return Nested(offsets, values)


def nested(col: Any, levels: int, name: str, row0: int, text: bool = False, dtype: Any = None) -> Nested:
    """Returns a leaf column (Arrow, NumPy or Python lists) as :class:`Nested`."""
    if is_arrow(col):
        return arrow_nested(col, name, row0, text)
    return python_nested(col, levels, name, row0, text, dtype)


def child(col: Any, key: str, name: str, row0: int) -> Any:
    """Returns the column of struct member ``key`` (lists of structs become lists of the member)."""
    if is_arrow(col):
        import pyarrow as pa  # a dependency of datasets; only Arrow columns reach here

        arr = plain_arrow(col)
        if arr.null_count:
            first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise null_error(name, row0 + first)
        if isinstance(arr, pa.StructArray):
            return arr.field(key)
        if isinstance(arr, pa.FixedSizeListArray):
            return pa.FixedSizeListArray.from_arrays(child(arr.flatten(), key, name, row0), arr.type.list_size)
        off = arr.offsets
        base = pa.array(off.to_numpy() - off[0].as_py(), type=off.type)
        kind = pa.LargeListArray if isinstance(arr, pa.LargeListArray) else pa.ListArray
        return kind.from_arrays(base, child(arr.flatten(), key, name, row0))
    if isinstance(col, Mapping):
        return col[key]
    return [_member(row, key, name, row0 + i) for i, row in enumerate(col)]


def _member(value: Any, key: str, name: str, row: int) -> Any:
    if value is None:
        raise null_error(name, row)
    if isinstance(value, Mapping):
        return value.get(key)
    return [_member(x, key, name, row) for x in value]  # a list of structs


def rows_of(col: Any) -> int:
    """Returns the row count of a column (a dict column: of its first member)."""
    if isinstance(col, Mapping):
        return rows_of(next(iter(col.values()))) if col else 0
    return len(col)


def slice_rows(col: Any, lo: int, hi: int) -> Any:
    """Returns rows ``lo:hi`` of a column, without copying Arrow or NumPy data."""
    if is_arrow(col):
        return col.slice(lo, hi - lo)
    if isinstance(col, Mapping):
        return {k: slice_rows(v, lo, hi) for k, v in col.items()}
    return col[lo:hi]


def take_rows(col: Any, idx: np.ndarray) -> Any:
    """Returns the rows ``idx`` of a column (a dict of columns: of each), in that order."""
    if isinstance(col, Mapping):
        return {k: take_rows(v, idx) for k, v in col.items()}
    if is_arrow(col):
        return col.take(idx)
    if isinstance(col, np.ndarray):
        return col[idx]
    return [col[i] for i in np.asarray(idx).tolist()]
