"""A state's data tree: its leaves by path, the checks every leaf passes, and its content digest."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import xxhash

from .._layout.ragged_rows import is_ragged

PyTree = Any


def leaf_paths(tree: PyTree) -> list[tuple[str, Any]]:
    """Returns ``(path, leaf)`` of every leaf, the path as ``keystr`` writes it (``<root>`` for a bare array).

    A field held flat (``RaggedRows``) is one leaf: it has the padded field's shape and dtype.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_ragged)
    return [(jax.tree_util.keystr(path) or "<root>", leaf) for path, leaf in flat]


def check_no_none(data: PyTree, where: str) -> None:
    """Raises TypeError naming every ``None`` in ``data``: JAX reads it as an empty subtree and would drop the key."""
    flat, _ = jax.tree_util.tree_flatten_with_path(data, is_leaf=lambda x: x is None)
    missing = [f"data{jax.tree_util.keystr(path)}" for path, leaf in flat if leaf is None]
    if missing:
        raise TypeError(
            f"{where}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} None, which JAX treats as an "
            "empty subtree: the key would be dropped from every batch without a word. Give it an array of one "
            "row per record, or remove the key."
        )


def check_arrays(data: PyTree, where: str) -> list[tuple[str, Any]]:
    """Returns ``leaf_paths(data)`` once every leaf is a NumPy or JAX array JAX keeps exactly; TypeError otherwise."""
    check_no_none(data, where)
    leaves = leaf_paths(data)
    bad = [p for p, x in leaves if not isinstance(x, (np.ndarray, jax.Array))]
    if bad:
        raise TypeError(
            f"{where}: every leaf of data must be a NumPy or JAX array; non-array leaves at "
            f"{', '.join(bad)}. Convert them with np.asarray, or drop them."
        )
    for path, x in leaves:
        want = jax.dtypes.canonicalize_dtype(x.dtype)
        if want != x.dtype:
            raise TypeError(
                f"{where}: leaf {path} has dtype {x.dtype}, which JAX would silently narrow to "
                f"{want}. Cast it yourself (after checking the values fit) or enable "
                "jax.config.update('jax_enable_x64', True)."
            )
    return leaves


def hash_arrays(data: PyTree) -> str:
    """Returns a 128-bit xxh3 hex digest of every leaf's path, shape, dtype and bytes.

    One pass over the data on the host (several GB/s); a state computes it once, when
    it is built, so ``dfn.cursor`` never reads the data.
    """
    h = xxhash.xxh3_128()
    for path, leaf in leaf_paths(data):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{path}:{arr.shape}:{arr.dtype};".encode())
        h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


__all__ = ["check_arrays", "check_no_none", "hash_arrays", "leaf_paths"]
