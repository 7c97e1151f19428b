"""Ragged rows held flat: a padded field's kept values without their padding, padded again per batch.

A text field converts to bytes zero-padded to its ``max_length`` (``(N, W)``, with the int32
``<key>_length`` leaf), and a list of strings to ``(N, L, W)`` (with ``<key>_length`` and
``<key>_length_1``). Held that way, a million short texts cost ``N * W`` bytes for their one
longest row. ``RaggedRows`` holds the same field as its kept values back to back plus, per
ragged level, where each list starts and how many items it keeps; ``take`` rebuilds the
padded rows of a batch inside ``jit`` (one gather per level, masked to zero past each
length), so batches are bit-identical to the padded field while memory follows the data.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

# Worth it only when the flat form is clearly smaller than the padded one.
_SAVING = 0.75
_BLOCK_BYTES = 64 << 20  # rows compacted per block: bounds the temporaries of a huge field


class RaggedRows(eqx.Module):
    """A padded field of ``shape`` stored flat: ``values`` (the kept items of the last level,
    back to back) and per level ``d`` the ``starts[d]`` / ``counts[d]`` of each list (level 0:
    one per record; level ``d + 1``: one per kept item of level ``d``)."""

    values: jax.Array
    starts: tuple[jax.Array, ...]
    counts: tuple[jax.Array, ...]
    shape: tuple[int, ...] = eqx.field(static=True)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Returns the bytes held (values, starts and counts), not the padded size."""
        return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(self))

    def take(self, idx: jax.Array) -> jax.Array:
        """Returns the padded rows ``idx`` (``(len(idx), *shape[1:])``), zero past every length."""
        ids, valid = idx, None
        levels = len(self.starts)
        for d in range(levels):
            start = jnp.take(self.starts[d], ids, mode="clip")
            count = jnp.take(self.counts[d], ids, mode="clip")
            pos = jnp.arange(self.shape[d + 1], dtype=start.dtype)
            keep = pos < count[..., None]
            valid = keep if valid is None else valid[..., None] & keep
            ids = jnp.where(valid, start[..., None] + pos, 0)
        out = jnp.take(self.values, ids, axis=0, mode="clip")
        mask = valid.reshape(valid.shape + (1,) * (out.ndim - valid.ndim))
        return jnp.where(mask, out, jnp.zeros((), out.dtype))

    def __array__(self, dtype=None, copy=None):
        # NumPy readers of ``state.data`` (decode_text, the data's digest) see the padded field.
        out = np.asarray(self.take(jnp.arange(self.shape[0])))
        return out if dtype is None else out.astype(dtype)


def is_ragged(x: Any) -> bool:
    """Returns whether ``x`` is a ``RaggedRows`` (the ``is_leaf`` of tree walks over a state's records)."""
    return isinstance(x, RaggedRows)


def padded(data: Any) -> Any:
    """Returns ``data`` with every ``RaggedRows`` expanded back to its padded NumPy array."""
    return jax.tree.map(lambda x: np.asarray(x) if is_ragged(x) else x, data, is_leaf=is_ragged)


def _levels(key: str, siblings: dict) -> list[np.ndarray] | None:
    """Returns the length leaves ``<key>_length``, ``<key>_length_1``... of a padded field, or None."""
    out, name = [], f"{key}_length"
    while name in siblings:
        out.append(siblings[name])
        name = f"{key}_length_{len(out)}"
    return out or None


def compact(padded_values: np.ndarray, lengths: list[np.ndarray]) -> RaggedRows | None:
    """Returns the ``RaggedRows`` of a padded field and its length leaves (level ``d``: shape
    ``padded.shape[:d + 1]``), or None when that would not be exact or not smaller: a length
    out of ``[0, size]``, a nonzero value in the padding, or too little padding to drop."""
    x = padded_values
    if not isinstance(x, np.ndarray) or x.ndim < len(lengths) + 1 or not len(x):
        return None
    for d, n in enumerate(lengths):
        n = np.asarray(n)
        if n.shape != x.shape[: d + 1] or n.dtype.kind not in "iu":
            return None
        if n.size and (n.min() < 0 or n.max() > x.shape[d + 1]):
            return None
    width = int(np.prod(x.shape[1:], dtype=np.int64)) * x.dtype.itemsize
    step = max(1, _BLOCK_BYTES // max(width, 1))
    parts = []
    kept = 0
    for lo in range(0, len(x), step):
        block = x[lo: lo + step]
        valid = None
        for d, n in enumerate(lengths):
            keep = np.arange(x.shape[d + 1]) < np.asarray(n[lo: lo + step])[..., None]
            valid = keep if valid is None else valid[..., None] & keep
        if np.any(block[~valid]):  # the padding is not zero: the flat form could not rebuild it
            return None
        parts.append(block[valid])
        kept += parts[-1].nbytes
        if lo == 0 and kept > _SAVING * block.nbytes and len(x) > step:
            return None  # the first block already shows too little padding to be worth it
    values = np.concatenate(parts) if len(parts) > 1 else parts[0]
    starts, counts = [], []
    parent = None  # which items of the level above are kept (row-major: a list's items stay contiguous)
    for d, n in enumerate(lengths):
        n = np.asarray(n)
        c = (n.reshape(-1) if parent is None else n[parent]).astype(np.int64)
        counts.append(c)
        starts.append(np.cumsum(c) - c)
        keep = np.arange(x.shape[d + 1]) < n[..., None]
        parent = keep if parent is None else parent[..., None] & keep
    biggest = max([len(values), *(len(c) for c in counts)])
    index = np.int32 if biggest < 2**31 - 1 else np.int64
    if index is np.int64 and not jax.config.jax_enable_x64:
        return None
    held = values.nbytes + sum(2 * a.size * np.dtype(index).itemsize for a in starts)
    if held > _SAVING * x.nbytes:
        return None
    if not len(values):  # every list empty: keep one value so the batch gather has something to read
        values = np.zeros((1, *values.shape[1:]), values.dtype)
    return RaggedRows(
        values=values,
        starts=tuple(_nonempty(s.astype(index)) for s in starts),
        counts=tuple(_nonempty(c.astype(index)) for c in counts),
        shape=tuple(int(s) for s in x.shape),
    )


def _nonempty(a: np.ndarray) -> np.ndarray:
    # A level with no items at all is never read (every count above it is 0), but a gather needs one slot.
    return a if len(a) else np.zeros(1, a.dtype)


def compact_fields(data: Any) -> Any:
    """Returns ``data`` with every padded field that has ``<key>_length`` siblings held as ``RaggedRows``
    where that is exact and smaller (see ``compact``); other leaves are returned as they are."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = compact_fields(value)
            continue
        lengths = _levels(key, data) if isinstance(key, str) else None
        flat = compact(value, lengths) if lengths else None
        out[key] = value if flat is None else flat
    return out


__all__ = ["RaggedRows", "compact", "compact_fields", "is_ragged", "padded"]
