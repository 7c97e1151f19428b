"""TFDS records as columns for the conversion layer: data-source rows and tf.data batches.

Also the lazy imports of TensorFlow and TFDS shared by the TFDS loader.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from .config import logger

_SHAPE = "__shape__"  # tf.data side leaf holding the true shape of a padded ragged feature
_PARTS = "__parts__"  # tf.data side leaf holding a nested Sequence's flat values and row splits


def tf_module() -> Any:
    """Returns ``tensorflow``, imported on first use with GPUs hidden from it so JAX keeps them."""
    first = "tensorflow" not in sys.modules
    import tensorflow as tf  # heavy: only the tfrecord paths need it

    if first or tf.config.get_visible_devices("GPU"):
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TF was initialised by someone else: leave it, but say so
            if tf.config.get_visible_devices("GPU"):
                logger.warning("datarax_fn: TensorFlow was initialised with GPUs visible; it may reserve GPU "
                               "memory. Call tf.config.set_visible_devices([], 'GPU') before using TensorFlow.")
    return tf


def tfds_module() -> Any:
    """Returns ``tensorflow_datasets`` (which does not import TensorFlow by itself)."""
    if "tensorflow" in sys.modules:  # tfds may touch TF devices; make sure GPUs stay hidden
        tf_module()
    import tensorflow_datasets as tfds  # heavy optional backend

    return tfds


def _column(values: list) -> Any:
    """Returns one column from per-record values: stacked when they share a shape, else a list."""
    first = values[0]
    if isinstance(first, Mapping):
        return {k: _column([v[k] for v in values]) for k in first}
    if isinstance(first, (bytes, str)):
        return np.array(values, dtype=object)
    return _stacked([_value(v) for v in values])


def _value(v: Any) -> Any:
    """Returns one data-source value in a form the conversion layer reads: a list of numbers as
    an array, a list of lists (a nested ``Sequence``) as a list of its items' values. Bytes stay
    Python objects: NumPy's ``S`` dtype drops trailing NUL bytes (``b"a\\x00"`` would read ``b"a"``)."""
    if isinstance(v, (bytes, str)):
        return v
    if not isinstance(v, list):
        return np.asarray(v)
    items = [_value(x) for x in v]
    if items and all(isinstance(x, (bytes, str)) for x in items):
        return np.array(items, dtype=object)
    if all(isinstance(x, np.ndarray) and x.ndim == 0 for x in items):
        return np.asarray(v)
    return _stacked(items)


def _stacked(arrays: list) -> Any:
    """Returns ``arrays`` stacked when they share a shape and a plain dtype, else as a list."""
    if arrays and all(isinstance(a, np.ndarray) and a.dtype.kind not in "OSU" and a.shape == arrays[0].shape
                      for a in arrays):
        return np.stack(arrays)
    # Ragged rows: an empty row carries no dtype of its own (NumPy makes it float64).
    dtype = next((a.dtype for a in arrays if isinstance(a, np.ndarray) and a.size), None)
    return [a.astype(dtype) if isinstance(a, np.ndarray) and not a.size and dtype is not None else a for a in arrays]


def rows_to_columns(rows: list[dict], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the selected columns of data-source rows (dicts of NumPy values)."""
    return _only(_column(rows), fields)


def _only(columns: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the columns of the selected fields (dropped, skipped features are left out)."""
    out = {}
    for k, f in fields.items():
        sub = getattr(f, "fields", None)
        out[k] = _only(columns[k], sub) if isinstance(sub, Mapping) and isinstance(columns[k], Mapping) else columns[k]
    return out


def _flatten(tree: Mapping[str, Any], prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    out = []
    for k, v in tree.items():
        out += _flatten(v, (*prefix, k)) if isinstance(v, Mapping) else [((*prefix, k), v)]
    return out


def batched(ds: Any, size: int) -> Any:
    """Returns ``ds`` batched; leaves of unknown shape are padded and their true shapes ride along.

    ``padded_batch`` takes dense tensors only, so a nested ``Sequence`` (a ``tf.RaggedTensor``)
    first becomes its flat values and row splits, which are padded like any other leaf.
    """
    tf = tf_module()
    nested = [p for p, s in _flatten(ds.element_spec) if isinstance(s, tf.RaggedTensorSpec)]
    if nested:
        ds = ds.map(lambda ex: _as_parts(ex, nested))
    ragged = [p for p, s in _flatten(ds.element_spec) if isinstance(s, tf.TensorSpec) and not s.shape.is_fully_defined()]
    if not ragged:
        return ds.batch(size)

    def with_shapes(ex):
        shapes = {"/".join(p): tf.shape(_get(ex, p)) for p in ragged}
        return {**ex, _SHAPE: shapes}

    return ds.map(with_shapes).padded_batch(size)


def _as_parts(ex: Mapping[str, Any], nested: list[tuple]) -> dict[str, Any]:
    """Returns ``ex`` with its ragged tensors moved under ``_PARTS`` as ``{"0": flat values, "1": row
    splits of the outer level, ...}``."""
    parts = {}
    for p in nested:
        rt = _get(ex, p)
        parts["/".join(p)] = {str(i): t for i, t in enumerate([rt.flat_values, *rt.nested_row_splits])}
    return {**_without(ex, set(nested)), _PARTS: parts}


def _without(tree: Mapping[str, Any], paths: set[tuple], prefix: tuple = ()) -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if (*prefix, k) in paths:
            continue
        out[k] = _without(v, paths, (*prefix, k)) if isinstance(v, Mapping) else v
    return out


def _from_parts(values: np.ndarray, splits: list[np.ndarray]) -> list:
    """Returns one record of a nested ``Sequence`` as lists (one per list level) of value arrays."""
    items: Any = values
    for s in reversed(splits):
        bounds = s.tolist()
        items = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return items


def _get(tree: Any, path: tuple) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _to_numpy(x: Any) -> Any:
    """Returns a host NumPy value of a CPU tensor (DLPack where it applies)."""
    if x.dtype.is_numeric or x.dtype.is_bool:
        try:
            return np.from_dlpack(x)
        except (TypeError, BufferError, RuntimeError):
            pass
    return x.numpy()


def _trimmed(t: Any, sizes: Any) -> Any:
    """Returns a padded batch's rows cut to their true shapes ``sizes`` (all rows if None)."""
    value = _to_numpy(t)
    if sizes is None:
        return value
    sizes = _to_numpy(sizes)
    return [value[i][tuple(slice(0, int(d)) for d in sizes[i])] for i in range(len(sizes))]


def tf_columns(batch: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Returns host columns of a tf batch; padded leaves become lists of their true rows, nested
    ``Sequence`` leaves lists of per-record lists of value arrays."""
    shapes = batch.get(_SHAPE, {})
    rest = {k: v for k, v in batch.items() if k not in (_SHAPE, _PARTS)}
    leaves = [(path, _trimmed(t, shapes.get("/".join(path)))) for path, t in _flatten(rest)]
    for key, parts in batch.get(_PARTS, {}).items():
        values, *splits = [_trimmed(parts[str(i)], shapes.get(f"{_PARTS}/{key}/{i}")) for i in range(len(parts))]
        leaves.append((tuple(key.split("/")), [_from_parts(v, [s[r] for s in splits]) for r, v in enumerate(values)]))
    out: dict[str, Any] = {}
    for path, value in leaves:
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return _only(out, fields)


__all__ = ["batched", "rows_to_columns", "tf_columns", "tf_module", "tfds_module"]
