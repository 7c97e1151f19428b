"""The batch layouts a loader's ``transform`` can be handed: ours (columns) or HF's batched ``map``.

``transform_format="columns"`` (the default) hands the conversion layer's user view: NumPy
columns, text as object arrays of ``str``, a struct as a dict of columns.
``transform_format="hf"`` hands what ``datasets.Dataset.map(f, batched=True)`` hands, so code
written for HF runs unchanged: every column a Python list (numbers as Python numbers, text as
``str``, sequences as lists), a struct as a list of row dicts. Images stay NumPy arrays, one
per row, where HF would hand PIL images. The function may answer in HF's layout too: lists
of numbers, lists of lists (ragged rows) and lists of row dicts are read back as columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

TRANSFORM_FORMATS = ("columns", "hf")

_HINT = ("If the transform was written for HF's ds.map(f, batched=True) (lists of str, structs as lists of "
         "row dicts), pass transform_format='hf' to hand it HF's batch layout.")


def _to_hf(col: Any) -> Any:
    """Returns one column of the user view in HF's batched layout."""
    if isinstance(col, Mapping):
        cols = {k: _to_hf(v) for k, v in col.items()}
        n = len(next(iter(cols.values()), ()))
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]
    if isinstance(col, np.ndarray):
        return col.tolist() if col.ndim == 1 or col.dtype == object else list(col)
    if isinstance(col, list):
        return [x.tolist() if isinstance(x, np.ndarray) and (x.ndim <= 1 or x.dtype == object) else x for x in col]
    return col


def _number(x: Any) -> bool:
    return isinstance(x, (bool, int, float, np.number, np.bool_))


def _from_hf(col: Any, path: str) -> Any:
    """Returns one column a transform answered in HF's layout as a column of ours."""
    if isinstance(col, Mapping):
        return {k: _from_hf(v, f"{path}.{k}") for k, v in col.items()}
    if not isinstance(col, (list, tuple)) or not col:
        return col
    if all(isinstance(r, Mapping) for r in col):
        keys = list(col[0])
        if any(list(r) != keys for r in col):
            raise ValueError(f"transform output {path!r}: the row dicts have different keys; give every row the same keys.")
        return {k: _from_hf([r[k] for r in col], f"{path}.{k}") for k in keys}
    if all(_number(x) for x in col):
        return np.asarray(col)
    if all(isinstance(r, (list, tuple)) and all(_number(x) for x in r) for r in col):
        return [np.asarray(r) for r in col]  # ragged rows: max_length pads them, as for any list field
    return list(col)


def with_format(transform: Callable | None, fmt: str) -> Callable | None:
    """Returns ``transform`` handed the ``fmt`` layout; its errors name ``transform_format='hf'``."""
    if transform is None:
        return None

    def hf(columns: dict) -> Any:
        out = transform({k: _to_hf(v) for k, v in columns.items()})
        return {k: _from_hf(v, k) for k, v in out.items()} if isinstance(out, Mapping) else out

    def columns_view(columns: dict) -> Any:
        try:
            return transform(columns)
        except Exception as err:  # noqa: BLE001 (the user's code: keep its error, add where the fix is)
            err.add_note(_HINT)
            raise

    return hf if fmt == "hf" else columns_view


__all__ = ["TRANSFORM_FORMATS", "with_format"]
