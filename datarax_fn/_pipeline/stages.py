"""Pipeline stages: pure ``(batch, key) -> batch`` functions, composed like ``optax.chain``.

A stage is any callable ``stage(batch, key) -> batch``. The built-in stages are small
``equinox.Module``s, so their parameters (a normalisation's mean and std) are PyTree
leaves that jit, scan and checkpoint like the rest of the state; plain functions are
wrapped in a Module that holds them as static fields.

Every built-in stage works on a batch dict ``{key: array with a leading batch axis}``,
is jittable, and is vmap-safe: it uses only the shapes it is given, so
``jax.vmap(stage)(stacked_batches, keys)`` equals applying it to each batch.
Stochastic stages draw each row's decision from that row's own key. A ``dfn.Pipeline``
hands a stage one key per row (shape ``(rows,)``), derived from the pipeline's seed and
each record's place in the stream, so a record's augmentation does not depend on the
batch it lands in; called with one key, a stage splits it per row (``row_keys``).

This module holds the stage protocol, ``chain``, ``apply_to_keys`` and the helpers every
stage shares; the built-in stages live by concept in ``elementwise`` (cast, normalize,
one_hot) and ``geometric`` (flips and crops).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

PyTree = Any
Batch = dict[str, Any]


class Stage(eqx.Module):
    """Base class of the built-in stages: ``stage(batch, key=None) -> batch``."""

    def __call__(self, batch: Batch, key: Any = None) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError


class FnStage(Stage):
    """Wraps a plain function ``fn(batch, key) -> batch`` as a stage (``fn`` is static)."""

    fn: Callable = eqx.field(static=True)

    def __call__(self, batch, key=None):
        with _per_row_key_hint(key):
            return self.fn(batch, key)


class Chain(Stage):
    """Applies ``stages`` in order; stage ``i`` gets ``fold_in(key, i)`` (per row for row keys)."""

    stages: tuple

    def __call__(self, batch, key=None):
        for i, stage in enumerate(self.stages):
            batch = stage(batch, None if key is None else fold_in(key, i))
        return batch


def fold_in(key: Any, data: int) -> jax.Array:
    """Returns ``jax.random.fold_in(key, data)``, applied to each key of a ``(rows,)`` key array."""
    key = as_typed_key(key)
    if key.ndim == 0:
        return jax.random.fold_in(key, data)
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, data)


@contextlib.contextmanager
def _per_row_key_hint(key: Any):
    """Adds the fix to JAX's error when a function written for one key gets one per row."""
    try:
        yield
    except (TypeError, ValueError) as err:  # JAX raises either, by version
        if key is None or "single key" not in str(err) or jnp.ndim(key) == 0:
            raise
        raise type(err)(
            f"{err}\nA dfn.Pipeline hands a stage one key per row (shape {jnp.shape(key)}), so a record's "
            "augmentation does not depend on its batch. Draw per row, e.g. "
            "jax.vmap(lambda k, x: x + jax.random.normal(k, x.shape))(key, batch['x']), or use "
            "key[0] for one draw per batch."
        ) from None


def as_stage(stage: Any) -> Stage:
    """Returns ``stage`` as a Module: Modules pass through, functions get wrapped."""
    if isinstance(stage, eqx.Module):
        return stage
    if callable(stage):
        return FnStage(stage)
    raise TypeError(
        f"a pipeline stage must be a callable (batch, key) -> batch; got {type(stage).__name__} "
        f"{stage!r}. Use dfn.apply_to_keys(fn, keys) to lift a function of one array."
    )


def chain(*stages: Any) -> Chain:
    """Returns one stage that applies ``stages`` left to right, like ``optax.chain``.

    Each stage gets its own key, ``jax.random.fold_in(key, position)``, so adding a
    deterministic stage does not change the randomness of the others' positions.

    Arguments:
        *stages: stages ``(batch, key) -> batch`` (Modules or plain functions), or one list of them.

    Returns:
        a ``Chain`` stage.

    ```python
    import numpy as np, datarax_fn as dfn
    stage = dfn.chain(dfn.cast("x"), dfn.apply_to_keys(lambda x: x * 2, "x"))
    out = stage({"x": np.arange(3, dtype=np.uint8)}, None)
    assert out["x"].tolist() == [0.0, 2.0, 4.0]
    ```
    """
    if len(stages) == 1 and isinstance(stages[0], (list, tuple)):
        stages = tuple(stages[0])
    return Chain(tuple(as_stage(s) for s in stages))


# ----------------------------------------------------------------------------- helpers shared by the stages


def as_keys(keys: str | Sequence[str] | None, name: str) -> tuple[str, ...] | None:
    """Returns ``keys`` as a tuple of strings (None stays None); ``name`` is the stage in errors."""
    if keys is None:
        return None
    if isinstance(keys, str):
        return (keys,)
    keys = tuple(keys)
    if not all(isinstance(k, str) for k in keys):
        raise TypeError(f"{name}: keys must be strings naming batch entries; got {keys!r}.")
    return keys


def select(batch: Any, keys: tuple[str, ...] | None, name: str) -> tuple[str, ...]:
    """Returns the keys a stage works on: ``keys``, or every key of ``batch`` when None."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{name}: expects a batch dict {{key: array}}; got {type(batch).__name__}. Wrap the "
            "arrays in a dict, or write the stage as a plain function (batch, key) -> batch."
        )
    if keys is None:
        return tuple(batch)
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"{name}: batch has no key(s) {missing}; available keys: {sorted(batch)}.")
    return keys


def need_key(key: Any, name: str) -> None:
    """Raises naming the stage when a stochastic stage was called without a key."""
    if key is None:
        raise ValueError(
            f"{name} is stochastic and needs a jax.random key; call it as stage(batch, key), or "
            "run it inside a dfn.Pipeline, which derives one per record from (seed, epoch, position)."
        )


def as_typed_key(key: Any) -> jax.Array:
    """Returns ``key`` as a typed key array (legacy ``uint32`` keys are wrapped)."""
    key = key if isinstance(key, jax.Array) else jnp.asarray(key)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return key


def row_keys(key: Any, rows: int) -> jax.Array:
    """Returns one ``jax.random`` key per row, shape ``(rows,)``, for a stage to ``vmap`` over.

    ``key`` is either the per-row keys a ``dfn.Pipeline`` hands its stages (returned as
    they are) or one key (split ``rows`` ways). Drawing each row's randomness from its
    own key is what makes a record's augmentation independent of its batch.

    Arguments:
        key: one key, or ``rows`` keys.
        rows: the batch size.

    Returns:
        a typed key array of shape ``(rows,)``.

    ```python
    import jax, datarax_fn as dfn
    def jitter(batch, key):
        keys = dfn.row_keys(key, len(batch["x"]))
        return {"x": batch["x"] + jax.vmap(lambda k: jax.random.normal(k))(keys)}
    out = jitter({"x": jax.numpy.zeros(3)}, jax.random.key(0))
    assert out["x"].shape == (3,)
    ```
    """
    key = as_typed_key(key)
    if key.ndim == 0:
        return jax.random.split(key, rows)
    if key.shape != (rows,):
        raise ValueError(f"row_keys: expected one key or {rows} keys (one per row); got keys of shape {key.shape}.")
    return key


def batch_rows(batch: Batch, keys: tuple[str, ...], name: str) -> int:
    """Returns the leading batch size shared by ``keys``, or raises naming the sizes."""
    sizes = {k: jnp.shape(batch[k])[0] if jnp.ndim(batch[k]) else None for k in keys}
    if len({s for s in sizes.values()}) != 1 or None in sizes.values():
        raise ValueError(f"{name}: keys must share a leading batch axis; got sizes {sizes}.")
    return next(iter(sizes.values()))


def record_axis(axis: int, ndim: int, name: str) -> int:
    """Maps an axis of one record (negative: from the end) to the batch array's axis."""
    ax = axis if axis < 0 else axis + 1
    if not -ndim < ax < ndim or ax % ndim == 0:
        raise ValueError(f"{name}: axis={axis} is out of range for records of rank {ndim - 1}.")
    return ax % ndim


class ApplyToKeys(Stage):
    """Applies ``fn(x)`` (or ``fn(x, key)``) to each of ``keys``."""

    fn: Callable = eqx.field(static=True)
    keys: tuple[str, ...] | None = eqx.field(static=True)
    with_key: bool = eqx.field(static=True)

    def __call__(self, batch, key=None):
        keys = select(batch, self.keys, "apply_to_keys")
        out = dict(batch)
        for k in keys:
            if self.with_key:
                need_key(key, "apply_to_keys(with_key=True)")
                with _per_row_key_hint(key):
                    out[k] = self.fn(batch[k], key)
            else:
                out[k] = self.fn(batch[k])
        return out


def apply_to_keys(fn: Callable, keys: str | Sequence[str] | None = None, *, with_key: bool = False) -> ApplyToKeys:
    """Returns a stage applying ``fn`` to the arrays at ``keys`` (None: every key).

    ``fn(x) -> x`` sees the whole batch array of one key. With ``with_key=True`` it is
    called as ``fn(x, key)`` and every listed key gets the same key, so paired arrays
    can receive the same random transform.

    Arguments:
        fn: ``fn(x) -> x``, or ``fn(x, key) -> x`` with ``with_key=True``.
        keys: the batch entries to transform; None: every entry.
        with_key: pass the stage's key to ``fn`` (the same key for every listed entry).

    Returns:
        the stage, a ``(batch, key=None) -> batch`` Module.

    ```python
    import numpy as np, datarax_fn as dfn
    out = dfn.apply_to_keys(lambda x: x + 1, "a")({"a": np.zeros(2), "b": np.zeros(2)})
    assert out["a"].tolist() == [1.0, 1.0] and out["b"].tolist() == [0.0, 0.0]
    ```
    """
    if not callable(fn):
        raise TypeError(f"apply_to_keys: fn must be callable; got {type(fn).__name__}.")
    return ApplyToKeys(fn, as_keys(keys, "apply_to_keys"), bool(with_key))
