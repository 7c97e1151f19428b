"""Dataset statistics computed inside ``jit`` in fixed-size chunks and merged stably.

Each chunk gives ``(count, mean, M2, min, max)`` per key, with ``M2`` the sum of squared
deviations from the chunk's own mean (two passes over the chunk, so no cancellation);
chunks merge with Chan et al.'s parallel update:

    delta = mean_b - mean_a;  n = n_a + n_b
    mean = mean_a + delta * n_b / n
    M2   = M2_a + M2_b + delta**2 * n_a * n_b / n

which is exact in real arithmetic and keeps float32 error at the level of one chunk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._state import contract
from .._eager.source import EagerSource
from .._layout.ragged_rows import padded

PyTree = Any
_REDUCTIONS = ("mean", "sum", "min", "max")


class Statistics(eqx.Module):
    """Per-key ``mean``, ``std`` (population, ``ddof=0``), ``min`` and ``max`` of a dataset.

    Each field is a dict ``{key: array}``; arrays have shape ``(C,)`` for per-channel
    statistics (reduced over every axis but the last) or ``()``. ``count`` is the
    number of records they were computed over. Build one yourself
    to skip the computation (the configs' ``precomputed_stats``):

    ```python
    import datarax_fn as dfn
    stats = dfn.Statistics(mean={"image": [0.5]}, std={"image": [0.25]})
    assert stats.mean["image"].shape == (1,)
    ```
    """

    mean: dict
    std: dict
    min: dict | None
    max: dict | None
    count: jax.Array

    def __init__(self, mean: Mapping, std: Mapping, min: Mapping | None = None, max: Mapping | None = None, count: int = 0):
        if set(mean) != set(std):
            raise ValueError(f"Statistics: mean and std must cover the same keys; got {sorted(mean)} and {sorted(std)}.")
        self.mean = {k: jnp.asarray(v, jnp.float32) for k, v in mean.items()}
        self.std = {k: jnp.asarray(v, jnp.float32) for k, v in std.items()}
        self.min = None if min is None else {k: jnp.asarray(v) for k, v in min.items()}
        self.max = None if max is None else {k: jnp.asarray(v) for k, v in max.items()}
        # A leaf, not static: statistics of another dataset size keep the tree structure.
        self.count = jnp.asarray(count, jnp.int32)


@functools.singledispatch
def unstaged(state: Any) -> Any:
    """Returns the state whose records ``compute_statistics`` reads: ``state`` itself.

    A ``dfn.Pipeline`` registers its source here (stages are not applied); the pipeline
    module imports this one for ``Statistics``, so it cannot be imported back.
    """
    return state


def _select(data: PyTree, keys: Sequence[str] | None) -> dict:
    if not isinstance(data, Mapping):
        raise TypeError(f"compute_statistics: the source's records must be a dict; got {type(data).__name__}.")
    if keys is None:
        return dict(data)
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    missing = [k for k in keys if k not in data]
    if missing:
        raise KeyError(f"compute_statistics: no key(s) {missing} in the source; available: {sorted(data)}.")
    return {k: data[k] for k in keys}


def _axes(x: jax.Array, per_channel: bool) -> tuple[int, ...]:
    if per_channel and x.ndim >= 2:
        return tuple(range(x.ndim - 1))
    return tuple(range(x.ndim))


def _shift(batch: dict, per_channel: bool) -> dict:
    """One value per channel from the first record, subtracted before the moments.

    Data far from zero (say 1e6 +- 1) would lose its variance to float32 rounding in the
    chunk mean; shifted by a value of the data itself it keeps full precision.
    """
    out = {}
    for k, x in batch.items():
        first = x[0].astype(jnp.float32)
        out[k] = first.reshape(-1, x.shape[-1])[0] if per_channel and x.ndim >= 2 else first.reshape(-1)[0]
    return out


def _chunk_moments(batch: dict, per_channel: bool, shift: dict | None = None) -> dict:
    out = {}
    for k, x in batch.items():
        axes = _axes(x, per_channel)
        count = np.prod([x.shape[a] for a in axes], dtype=np.int64)
        xf = x.astype(jnp.float32)
        if shift is not None:
            xf = xf - shift[k]
        mean = jnp.mean(xf, axis=axes)
        m2 = jnp.sum(jnp.square(xf - mean), axis=axes)  # mean broadcasts along the kept last axis
        out[k] = (jnp.float32(count), mean, m2, jnp.min(x, axis=axes), jnp.max(x, axis=axes))
    return out


def _merge_moments(a: dict, b: dict) -> dict:
    out = {}
    for k in a:
        na, ma, m2a, lo_a, hi_a = a[k]
        nb, mb, m2b, lo_b, hi_b = b[k]
        n = na + nb
        delta = mb - ma
        out[k] = (n, ma + delta * (nb / n), m2a + m2b + jnp.square(delta) * (na * nb / n),
                  jnp.minimum(lo_a, lo_b), jnp.maximum(hi_a, hi_b))
    return out


def _merge_user(reduction: str) -> Callable:
    def merge(a, b):
        (na, va), (nb, vb) = a, b
        n = na + nb
        if reduction == "mean":
            # Running weighted mean in the Welford form: no large running sum.
            v = jax.tree.map(lambda x, y: x + (y - x) * (nb / n), va, vb)
        elif reduction == "sum":
            v = jax.tree.map(jnp.add, va, vb)
        elif reduction == "min":
            v = jax.tree.map(jnp.minimum, va, vb)
        else:
            v = jax.tree.map(jnp.maximum, va, vb)
        return n, v

    return merge


def _scan_chunks(data: dict, n: int, chunk: int, chunk_fn: Callable, merge: Callable) -> Any:
    """Folds ``chunk_fn`` over ``data[0:n]`` in chunks of ``chunk`` rows (traced)."""
    full, rem = divmod(n, chunk)

    def rows(start, size):
        return {k: jax.lax.dynamic_slice_in_dim(x, start, size) for k, x in data.items()}

    acc = chunk_fn(rows(0, chunk))
    if full > 1:

        def body(acc, i):
            return merge(acc, chunk_fn(rows(i * chunk, chunk))), None

        acc, _ = jax.lax.scan(body, acc, jnp.arange(1, full, dtype=jnp.int32))
    if rem:
        acc = merge(acc, chunk_fn(rows(full * chunk, rem)))
    return acc


def _finish(acc: dict, shift: dict, n: int) -> Statistics:
    return Statistics(
        mean={k: v[1] + shift[k] for k, v in acc.items()},
        std={k: jnp.sqrt(jnp.maximum(v[2] / v[0], 0.0)) for k, v in acc.items()},
        min={k: v[3] for k, v in acc.items()},
        max={k: v[4] for k, v in acc.items()},
        count=n,
    )


def compute_statistics(
    source: Any,
    batch_stats_fn: Callable | None = None,
    *,
    keys: str | Sequence[str] | None = None,
    batch_size: int = 1024,
    per_channel: bool = True,
    reduction: str = "mean",
) -> Any:
    """Returns the dataset's ``dfn.Statistics``, or the reduced ``batch_stats_fn`` results.

    Reads every record once, in chunks of ``batch_size`` rows, inside one ``jit``
    (``lax.scan`` over the chunks) for an in-memory source; a streaming source is read
    for one epoch from its current position, chunk by chunk on the host. The source
    itself is not advanced.

    Default statistics, per key in ``keys`` (None: all): ``mean``, ``std`` (population,
    ``ddof=0``), ``min``, ``max``. With ``per_channel=True`` they reduce over every axis
    but the last (shape ``(C,)`` for an ``(N, H, W, C)`` image; ``()`` for scalars);
    otherwise over everything. Moments accumulate in float32 and merge by Chan's
    parallel update, so they match NumPy's float64 result on the full array to float32
    precision.

    ``batch_stats_fn(batch) -> PyTree`` replaces the default: it is called on each chunk
    (a dict of arrays, the last chunk possibly shorter) and the chunk results combine by
    ``reduction``: ``"mean"`` weights each chunk by its row count (exact for per-row
    averages such as ``x.mean(0)`` or ``(x**2).mean(0)``), ``"sum"`` adds (counts,
    histograms), ``"min"``/``"max"`` take the elementwise extreme.

    Arguments:
        source: a source state, or a ``dfn.Pipeline`` (its source is read, stages not applied).
        batch_stats_fn: ``fn(chunk) -> PyTree`` to compute instead of the default statistics.
        keys: the entries to cover; None: all.
        batch_size: rows per chunk.
        per_channel: reduce over every axis but the last (else over all).
        reduction: how ``batch_stats_fn`` results combine: ``"mean"``, ``"sum"``, ``"min"``, ``"max"``.

    Returns:
        a ``dfn.Statistics``, or the combined ``batch_stats_fn`` PyTree.

    ```python
    import numpy as np, datarax_fn as dfn
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    stats = dfn.compute_statistics(dfn.from_arrays({"x": x}), batch_size=4)
    assert np.allclose(stats.mean["x"], x.mean(0)) and np.allclose(stats.std["x"], x.std(0))
    ```
    """
    source = unstaged(source)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"compute_statistics: batch_size must be an int >= 1; got {batch_size!r}.")
    if batch_stats_fn is not None and reduction not in _REDUCTIONS:
        raise ValueError(f"compute_statistics: reduction must be one of {_REDUCTIONS}; got {reduction!r}.")
    n = contract.num_records(source)
    if n is None:
        raise ValueError(
            "compute_statistics: the source has unknown length (an endless stream); pass "
            "precomputed statistics with dfn.Statistics(mean=..., std=...) instead."
        )
    chunk = min(batch_size, n)
    if batch_stats_fn is None:
        chunk_fn = lambda b, shift: _chunk_moments(b, per_channel, shift)  # noqa: E731
        merge = _merge_moments
    else:
        chunk_fn = lambda b, shift: (jnp.float32(jax.tree.leaves(b)[0].shape[0]), batch_stats_fn(b))  # noqa: E731
        merge = _merge_user(reduction)

    if isinstance(source, EagerSource):

        def run(data):
            shift = _shift(data, per_channel)
            return _scan_chunks(data, n, chunk, lambda b: chunk_fn(b, shift), merge), shift

        acc, shift = jax.jit(run)(padded(_select(source.data, keys)))  # text held flat: its padded rows
    else:
        chunk_jit, merge_jit = jax.jit(chunk_fn), jax.jit(merge)
        state, acc, seen, shift = source, None, 0, None
        while seen < n:
            size = min(chunk, n - seen)
            state, batch = contract.get_batch(state, size)
            batch = _select(batch, keys)
            shift = _shift(batch, per_channel) if shift is None else shift
            part = chunk_jit(batch, shift)
            acc = part if acc is None else merge_jit(acc, part)
            seen += size
    if batch_stats_fn is not None:
        return acc[1]
    return _finish(acc, shift, n)
