"""Text: UTF-8 bytes, cut only at character boundaries, and read back with ``decode_text``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def utf8_keep(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, limit: int) -> np.ndarray:
    """Returns how many bytes of each string to keep so that at most ``limit`` are kept and no
    UTF-8 character is cut (a continuation byte 0b10xxxxxx never starts the cut-off part)."""
    keep = np.minimum(lengths, limit)
    over = np.flatnonzero(lengths > limit)
    for _ in range(3):  # a UTF-8 character has at most 3 continuation bytes
        if not over.size:
            break
        cont = (data[starts[over] + keep[over]] & 0xC0) == 0x80
        over = over[cont & (keep[over] > 0)]
        keep[over] -= 1
    return keep


def strings(data: np.ndarray, offsets: np.ndarray, binary: bool) -> list:
    """Returns the strings (or bytes) spanned by ``offsets`` over the bytes ``data``."""
    raw = data.tobytes()
    parts = [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    return parts if binary else [p.decode("utf-8", errors="surrogateescape") for p in parts]


def decode_text(batch: Mapping[str, Any], key: str) -> list[str]:
    """Returns the strings of text field ``key`` of a batch (uses ``<key>_length``).

    Arguments:
      batch: a batch (or converted arrays) holding ``key`` and ``<key>_length``; a dotted
        ``key`` reaches into nested dicts.
      key: the text field.

    Returns:
      One ``str`` per row.

    ```python
    import numpy as np, datarax_fn as dfn
    batch = {"t": np.array([[104, 105, 0]], np.uint8), "t_length": np.array([2], np.int32)}
    assert dfn.decode_text(batch, "t") == ["hi"]
    ```
    """
    node, leaf = batch, key.split(".")[-1]
    for part in key.split(".")[:-1]:
        node = node[part]
    if leaf not in node or f"{leaf}_length" not in node:
        raise KeyError(f"decode_text: batch needs {leaf!r} and {leaf + '_length'!r}; it has {sorted(node)}.")
    data = np.asarray(node[leaf])
    lengths = np.asarray(node[f"{leaf}_length"])
    if data.ndim == 1:
        data, lengths = data[None], lengths.reshape(1)
    return [data[i, : int(lengths[i])].tobytes().decode("utf-8", errors="replace") for i in range(len(data))]
