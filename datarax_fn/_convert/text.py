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


def decode_text(batch: Mapping[str, Any], key: str) -> list:
    """Returns the strings of text field ``key`` of a batch: one ``str`` per row, or for a list
    of strings (SQuAD's ``answers.text``) one list of ``str`` per row, nested as the field is.

    Arguments:
      batch: a batch (or converted arrays) holding ``key`` and its length leaves
        (``<key>_length``, and ``<key>_length_1``... for lists of strings); a dotted ``key``
        reaches into nested dicts. One record without its batch axis reads as a batch of one.
      key: the text field.

    Returns:
      One ``str`` (or nested list of ``str``) per row; padding is dropped by the lengths.

    ```python
    import numpy as np, datarax_fn as dfn
    batch = {"t": np.array([[104, 105, 0]], np.uint8), "t_length": np.array([2], np.int32)}
    assert dfn.decode_text(batch, "t") == ["hi"]
    answers = {"text": np.array([[[97, 98], [99, 0]]], np.uint8), "text_length": np.array([2], np.int32),
               "text_length_1": np.array([[2, 1]], np.int32)}
    assert dfn.decode_text(answers, "text") == [["ab", "c"]]
    ```
    """
    node, leaf = batch, key.split(".")[-1]
    for part in key.split(".")[:-1]:
        node = node[part]
    if leaf not in node or f"{leaf}_length" not in node:
        raise KeyError(f"decode_text: batch needs {leaf!r} and {leaf + '_length'!r}; it has {sorted(node)}.")
    data = np.asarray(node[leaf])
    names = [f"{leaf}_length"]
    while f"{leaf}_length_{len(names)}" in node:
        names.append(f"{leaf}_length_{len(names)}")
    lengths = [np.asarray(node[n]) for n in names]
    single = lengths[0].ndim == 0  # a record: its first length leaf has lost the batch axis
    if single:
        data, lengths = data[None], [n[None] for n in lengths]
    # A ragged level's length leaf has one axis per level above it: the one with j axes counts
    # the items of data axis j. Fixed-size levels have no length leaf and keep every item.
    count = {n.ndim: n for n in lengths}
    last = data.ndim - 1

    def strings(at: tuple) -> Any:
        size = int(count[len(at)][at]) if len(at) in count else data.shape[len(at)]
        if len(at) == last:
            return data[at][:size].tobytes().decode("utf-8", errors="replace")
        return [strings((*at, i)) for i in range(size)]

    return [strings((i,)) for i in range(len(data))]
