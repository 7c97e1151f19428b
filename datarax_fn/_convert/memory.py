"""Host memory: 64-byte-aligned output buffers and ``owned_arrays``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def aligned_empty(shape: tuple[int, ...], dtype: Any = np.uint8, align: int = 64) -> np.ndarray:
    """Returns an uninitialised C-contiguous array whose data starts on an ``align``-byte boundary.

    ``jax.device_put`` aliases 64-byte-aligned NumPy buffers on a CPU device instead of
    copying them, so a freshly decoded column costs its size once, not twice.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    return buf[start : start + nbytes].view(dtype).reshape(shape)


def owned_arrays(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Returns ``tree`` with every leaf in memory NumPy allocated, for ``from_arrays(copy=False)``.

    Leaves that view a foreign buffer (a memory-mapped Arrow column passed through zero-copy,
    a TensorFlow tensor) are copied into 64-byte-aligned memory, so the device array never
    aliases a file mapping or another library's buffer. Leaves NumPy owns are returned as
    they are. Only call it on arrays a Converter just produced without a ``transform``: a
    transform may return arrays the caller still holds.
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
            out[k] = aligned_empty(a.shape, a.dtype)
            out[k][...] = a
    return out
