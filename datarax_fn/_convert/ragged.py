"""Ragged list levels -> zero-padded arrays plus int32 length leaves (one per ragged level)."""

from __future__ import annotations

import numpy as np

from .columns import Nested, row_of
from .text import utf8_keep


def longest(nested: Nested) -> list[int]:
    """Returns the longest list at each level (0 for an empty level)."""
    return [int(np.diff(off).max(initial=0)) for off in nested.offsets]


def uniform(nested: Nested) -> bool:
    """Returns whether every list of each level has the same length (then rows simply stack)."""
    return all(np.all(np.diff(off) == (off[1] - off[0] if len(off) > 1 else 0)) for off in nested.offsets)


def fold_fixed(nested: Nested, dims: tuple, name: str, row0: int) -> tuple[Nested, tuple]:
    """Returns ``nested`` with its declared fixed levels checked, and the trailing ones folded
    into the values' shape; and the dims still to pad (one per remaining level)."""
    for d, size in enumerate(dims):
        if size is None:
            continue
        lengths = np.diff(nested.offsets[d])
        bad = np.flatnonzero(lengths != size)
        if bad.size:
            row = row0 + row_of(nested.offsets, d, int(bad[0]))
            raise ValueError(
                f"field {name!r}: row {row} has a list of length {int(lengths[bad[0]])} at level {d}, "
                f"the feature declares {size}. Fix the data, or leave the field out with exclude_keys=[{name!r}]."
            )
    keep = len(dims)
    while keep and dims[keep - 1] is not None and not nested.text:
        keep -= 1
    if keep == len(dims):
        return nested, dims
    inner = tuple(dims[keep:])
    values = nested.values.reshape((-1, *inner, *nested.values.shape[1:]))
    if keep == 0:
        return Nested([], values), ()
    return Nested(nested.offsets[:keep], values, nested.text), tuple(dims[:keep])


def pad(nested: Nested, sizes: tuple[int, ...], ragged: tuple[bool, ...], truncate: bool, name: str,
        row0: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Returns ``(padded, lengths)``: the values zero-padded to ``(N, *sizes, *inner)`` and one
    int32 length array per ragged level (level d: shape ``(N, *sizes[:d])``).

    A list longer than its size raises (field, global row, length) unless ``truncate``; text
    is cut at a UTF-8 character boundary.
    """
    n = nested.rows
    inner = nested.values.shape[1:]
    out = np.zeros((n, *sizes, *inner), nested.values.dtype)
    lengths: list[np.ndarray] = []
    coords = [np.arange(n)]  # per item of the current level: its index in each padded axis
    alive = np.ones(n, bool)  # items whose every ancestor was kept
    last = len(sizes) - 1
    for d, (off, size) in enumerate(zip(nested.offsets, sizes)):
        counts = np.diff(off)
        over = np.flatnonzero((counts > size) & alive)
        if over.size and not truncate:
            row = row0 + row_of(nested.offsets, d, int(over[0]))
            raise ValueError(
                f"field {name!r}: row {row} has length {int(counts[over[0]])} > max_length {size} "
                f"(list level {d}). Raise max_length for {name!r}, or pass truncate=True to cut it."
            )
        if nested.text and d == last:
            keep = utf8_keep(nested.values, off[:-1], counts, size)
        else:
            keep = np.minimum(counts, size)
        keep = np.where(alive, keep, 0)
        if ragged[d]:
            lens = np.zeros((n, *sizes[:d]), np.int32)
            lens[tuple(c[alive] for c in coords)] = keep[alive]
            lengths.append(lens)
        if d == last:
            break
        # Index the items of the next level (lists or strings, not yet the values).
        parent = np.repeat(np.arange(len(counts)), counts)
        pos = np.arange(len(parent)) - off[parent]
        alive = alive[parent] & (pos < keep[parent])
        coords = [c[parent] for c in coords] + [pos]
    if len(sizes) == 1 and not over.size:  # the common case: one level, nothing cut
        width = int(np.prod(inner, dtype=np.int64))
        _fill(out.reshape(n, sizes[0], width), nested.values.reshape(len(nested.values), width), off, counts)
        return out, lengths
    items = np.flatnonzero(alive & (keep > 0))
    if items.size:  # else every kept list is empty (or the padded shape is): nothing to copy
        grid = (n, *sizes[:last])
        slots = np.ravel_multi_index(tuple(c[items] for c in coords), grid) if last else items
        flat = out.reshape(int(np.prod(grid, dtype=np.int64)), sizes[last], *inner)
        _copy_prefixes(flat, slots, nested.values, off[items], keep[items])
    return out, lengths


def _copy_prefixes(out: np.ndarray, slots: np.ndarray, values: np.ndarray, starts: np.ndarray, keep: np.ndarray) -> None:
    """Writes ``values[starts[k] : starts[k] + keep[k]]`` to ``out[slots[k], :keep[k]]``.

    Temporaries stay the size of the output, whatever is cut: each prefix is read through a
    sliding-window view of the values at its start, never through an index per input value (a
    long document cut to 64 bytes must not cost 8 bytes of index for each byte it drops).
    """
    size, m = out.shape[1], len(values)
    head = np.flatnonzero(starts + size <= m)  # the window of ``size`` values lies inside the values
    if head.size:
        windows = np.moveaxis(np.lib.stride_tricks.sliding_window_view(values, size, axis=0), -1, 1)
        cut = np.arange(size)
        step = max(1, (4 << 20) // max(1, out[0].nbytes))  # rows per block: about 4 MB of temporaries
        for lo in range(0, head.size, step):
            k = head[lo : lo + step]
            block = windows[starts[k]]  # a copy: (rows, size, *inner)
            block[cut[None, :] >= keep[k][:, None]] = 0
            out[slots[k]] = block
    tail = np.flatnonzero((starts + size > m) & (keep > 0))  # the last items: fewer than ``size`` values follow
    if tail.size:
        k = keep[tail]
        item = np.repeat(np.arange(tail.size), k)
        pos = np.arange(item.size) - np.repeat(np.cumsum(k) - k, k)
        out[slots[tail][item], pos] = values[starts[tail][item] + pos]


def _fill(out: np.ndarray, values: np.ndarray, off: np.ndarray, counts: np.ndarray) -> None:
    """Writes row i's ``values[off[i]:off[i+1]]`` to ``out[i, :count]``, with the cheaper of a
    (rows x size) mask and a scatter by index (one int64 per value: better for sparse rows,
    e.g. 20,000 short texts padded to one long document)."""
    n, size = out.shape[:2]
    if 8 * len(values) < n * size:
        rows = np.repeat(np.arange(n), counts)
        cols = np.arange(len(values)) - off[rows]
        out[rows, cols] = values
    else:
        out[np.arange(size)[None, :] < counts[:, None]] = values
