"""Pipeline stages: pure ``(batch, key) -> batch`` functions, composed like ``optax.chain``.

A stage is any callable ``stage(batch, key) -> batch``. The built-in stages are small
``equinox.Module``s, so their parameters (a normalisation's mean and std) are PyTree
leaves that jit, scan and checkpoint like the rest of the state; plain functions are
wrapped in a Module that holds them as static fields.

Every built-in stage works on a batch dict ``{key: array with a leading batch axis}``,
is jittable, and is vmap-safe: it uses only the shapes it is given, so
``jax.vmap(stage)(stacked_batches, keys)`` equals applying it to each batch.
Stochastic stages draw one decision per row from the key they are handed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

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
        return self.fn(batch, key)


class Chain(Stage):
    """Applies ``stages`` in order; stage ``i`` gets ``jax.random.fold_in(key, i)``."""

    stages: tuple

    def __call__(self, batch, key=None):
        for i, stage in enumerate(self.stages):
            batch = stage(batch, None if key is None else jax.random.fold_in(key, i))
        return batch


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



# ----------------------------------------------------------------------------- helpers


def _as_keys(keys: str | Sequence[str] | None, name: str) -> tuple[str, ...] | None:
    if keys is None:
        return None
    if isinstance(keys, str):
        return (keys,)
    keys = tuple(keys)
    if not all(isinstance(k, str) for k in keys):
        raise TypeError(f"{name}: keys must be strings naming batch entries; got {keys!r}.")
    return keys


def _select(batch: Any, keys: tuple[str, ...] | None, name: str) -> tuple[str, ...]:
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


def _need_key(key: Any, name: str) -> None:
    if key is None:
        raise ValueError(
            f"{name} is stochastic and needs a jax.random key; call it as stage(batch, key), or "
            "run it inside a dfn.Pipeline, which derives one from (seed, epoch, position)."
        )


def _rows(batch: Batch, keys: tuple[str, ...], name: str) -> int:
    sizes = {k: jnp.shape(batch[k])[0] if jnp.ndim(batch[k]) else None for k in keys}
    if len({s for s in sizes.values()}) != 1 or None in sizes.values():
        raise ValueError(f"{name}: keys must share a leading batch axis; got sizes {sizes}.")
    return next(iter(sizes.values()))


def _record_axis(axis: int, ndim: int, name: str) -> int:
    """Maps an axis of one record (negative: from the end) to the batch array's axis."""
    ax = axis if axis < 0 else axis + 1
    if not -ndim < ax < ndim or ax % ndim == 0:
        raise ValueError(f"{name}: axis={axis} is out of range for records of rank {ndim - 1}.")
    return ax % ndim


# ----------------------------------------------------------------------------- stages


class Normalize(Stage):
    """``(x - mean) / std`` per channel (broadcast along the last axis), as float."""

    mean: dict | None
    std: dict | None
    keys: tuple[str, ...] | None = eqx.field(static=True)
    dtype: str = eqx.field(static=True, default="float32")

    def bind(self, stats: Any) -> Normalize:
        """Returns this stage with mean and std read from a ``dfn.Statistics``."""
        keys = self.keys if self.keys is not None else tuple(stats.mean)
        missing = [k for k in keys if k not in stats.mean]
        if missing:
            raise KeyError(
                f"normalize: the statistics have no entry for {missing}; they cover "
                f"{sorted(stats.mean)}. Compute them with dfn.compute_statistics(source, keys=...)."
            )
        mean = {k: jnp.asarray(stats.mean[k], jnp.float32) for k in keys}
        std = {k: jnp.asarray(stats.std[k], jnp.float32) for k in keys}
        return Normalize(mean, std, keys, self.dtype)

    def __call__(self, batch, key=None):
        if self.mean is None:
            raise ValueError(
                "normalize: no statistics. Pass mean=/std=, stats=dfn.compute_statistics(source), "
                "or build a dfn.Pipeline(..., stats=...) so it fills them in."
            )
        keys = _select(batch, self.keys if self.keys is not None else tuple(self.mean), "normalize")
        out = dict(batch)
        for k in keys:
            std = self.std[k]
            # A constant channel (std == 0) maps to 0 instead of NaN. Multiplying by the
            # per-channel reciprocal is several times faster than dividing every element
            # on CPU, and differs from the division by at most one ulp.
            inv = 1.0 / jnp.where(std > 0, std, jnp.ones_like(std))
            out[k] = ((jnp.asarray(batch[k]).astype(self.dtype) - self.mean[k]) * inv).astype(self.dtype)
        return out


def normalize(
    keys: str | Sequence[str] | None = None,
    *,
    mean: Any = None,
    std: Any = None,
    stats: Any = None,
    dtype: str = "float32",
) -> Normalize:
    """Returns a stage computing ``(x - mean) / std`` per channel for ``keys``.

    ``mean`` and ``std`` broadcast against each record's trailing axes (shape ``(C,)``
    for per-channel statistics, or scalars); a zero std counts as 1. Give them directly,
    as ``stats=dfn.compute_statistics(...)``, or leave all three out inside a
    ``dfn.Pipeline(..., stats=...)``, which fills them in. ``keys=None`` means every
    key the statistics cover.

    Arguments:
        keys: the batch entries to normalise; None: every key the statistics cover.
        mean: scalars, ``(C,)`` arrays, or a dict ``{key: value}``.
        std: as ``mean``.
        stats: a ``dfn.Statistics`` instead of ``mean``/``std``.
        dtype: the output dtype.

    Returns:
        the stage.

    ```python
    import numpy as np, datarax_fn as dfn
    stage = dfn.normalize("x", mean=2.0, std=2.0)
    assert stage({"x": np.array([0.0, 2.0, 4.0])})["x"].tolist() == [-1.0, 0.0, 1.0]
    ```
    """
    keys = _as_keys(keys, "normalize")
    if stats is not None:
        if mean is not None or std is not None:
            raise ValueError("normalize: pass either stats= or mean=/std=, not both.")
        return Normalize(None, None, keys, str(dtype)).bind(stats)
    if (mean is None) != (std is None):
        raise ValueError(f"normalize: pass mean and std together; got mean={mean!r}, std={std!r}.")
    if mean is None:
        return Normalize(None, None, keys, str(dtype))
    if not isinstance(mean, Mapping):
        if keys is None:
            raise ValueError("normalize: a bare mean/std needs keys=... to say which entries to normalise.")
        mean, std = {k: mean for k in keys}, {k: std for k in keys}
    keys = keys if keys is not None else tuple(mean)
    mean = {k: jnp.asarray(mean[k], jnp.float32) for k in keys}
    std = {k: jnp.asarray(std[k], jnp.float32) for k in keys}
    return Normalize(mean, std, keys, str(dtype))


class Cast(Stage):
    """``x.astype(dtype) * scale`` for ``keys``."""

    keys: tuple[str, ...] | None = eqx.field(static=True)
    dtype: str = eqx.field(static=True)
    scale: float | None = eqx.field(static=True)

    def __call__(self, batch, key=None):
        keys = _select(batch, self.keys, "cast")
        out = dict(batch)
        for k in keys:
            x = jnp.asarray(batch[k]).astype(self.dtype)
            out[k] = x if self.scale is None else (x * jnp.asarray(self.scale, self.dtype)).astype(self.dtype)
        return out


def cast(keys: str | Sequence[str] | None = None, *, dtype: Any = "float32", scale: float | None = None) -> Cast:
    """Returns a stage casting ``keys`` (None: all) to ``dtype``, then multiplying by ``scale``.

    Arguments:
        keys: the batch entries to cast; None: every entry.
        dtype: the target dtype.
        scale: a factor applied after the cast (e.g. ``1 / 255``); None: none.

    Returns:
        the stage.

    ```python
    import numpy as np, datarax_fn as dfn
    out = dfn.cast("image", scale=1 / 255)({"image": np.array([0, 255], np.uint8)})
    assert out["image"].dtype == np.float32 and out["image"].tolist() == [0.0, 1.0]
    ```
    """
    return Cast(_as_keys(keys, "cast"), np.dtype(dtype).name, None if scale is None else float(scale))


class OneHot(Stage):
    """Integer labels to one-hot vectors (out-of-range labels give all-zero rows)."""

    keys: tuple[str, ...] | None = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def __call__(self, batch, key=None):
        keys = _select(batch, self.keys, "one_hot")
        out = dict(batch)
        for k in keys:
            out[k] = jax.nn.one_hot(batch[k], self.num_classes, dtype=self.dtype)
        return out


def one_hot(keys: str | Sequence[str], num_classes: int, *, dtype: Any = "float32") -> OneHot:
    """Returns a stage replacing integer ``keys`` by one-hot arrays with ``num_classes`` columns.

    Arguments:
        keys: the integer batch entries to encode.
        num_classes: the number of columns.
        dtype: the output dtype.

    Returns:
        the stage.

    ```python
    import numpy as np, datarax_fn as dfn
    out = dfn.one_hot("label", 3)({"label": np.array([2, 0])})
    assert out["label"].tolist() == [[0, 0, 1], [1, 0, 0]]
    ```
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"one_hot: num_classes must be a Python int >= 1; got {num_classes!r}.")
    return OneHot(_as_keys(keys, "one_hot"), num_classes, np.dtype(dtype).name)


def flip_mask(key: Any, rows: int, p: float) -> jax.Array:
    """Returns the bool ``(rows,)`` flip decisions ``random_flip`` draws from ``key``."""
    return jax.random.bernoulli(key, p, (rows,))


class RandomFlip(Stage):
    """Flips each row along ``axis`` with probability ``p``; one decision per row for all keys."""

    keys: tuple[str, ...] | None = eqx.field(static=True)
    axis: int = eqx.field(static=True)
    p: float = eqx.field(static=True)

    def __call__(self, batch, key=None):
        _need_key(key, "random_flip")
        keys = _select(batch, self.keys, "random_flip")
        flip = flip_mask(key, _rows(batch, keys, "random_flip"), self.p)
        out = dict(batch)
        for k in keys:
            x = jnp.asarray(batch[k])
            ax = _record_axis(self.axis, x.ndim, "random_flip")
            out[k] = jnp.where(flip.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.flip(x, ax), x)
        return out


def random_flip(keys: str | Sequence[str] | None = None, *, axis: int = -2, p: float = 0.5) -> RandomFlip:
    """Returns a stage flipping each record of ``keys`` along ``axis`` with probability ``p``.

    ``axis`` counts within one record; the default ``-2`` is the width of an HWC image
    (a horizontal flip). All ``keys`` of a row share its decision, so an image and its
    segmentation mask stay aligned.

    Arguments:
        keys: the batch entries to flip (the same decision for every key of a row); None: all.
        axis: the record axis to flip (default: the width of an HWC image).
        p: the probability of flipping a row.

    Returns:
        the stage; it needs a key (a ``dfn.Pipeline`` hands it one).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_flip: p must be a probability in [0, 1]; got p={p!r}.")
    return RandomFlip(_as_keys(keys, "random_flip"), int(axis), float(p))


def crop_offsets(key: Any, rows: int, limits: tuple[int, int]) -> jax.Array:
    """Returns the int32 ``(rows, 2)`` crop corners ``random_crop`` draws from ``key``."""
    return jax.random.randint(key, (rows, 2), 0, jnp.asarray(limits, jnp.int32) + 1, dtype=jnp.int32)


class RandomCrop(Stage):
    """Pads the two spatial axes, then crops ``size`` at a random corner per row."""

    keys: tuple[str, ...] | None = eqx.field(static=True)
    size: tuple[int, int] | None = eqx.field(static=True)
    padding: int = eqx.field(static=True)
    axes: tuple[int, int] = eqx.field(static=True)
    fill: float = eqx.field(static=True)

    def __call__(self, batch, key=None):
        _need_key(key, "random_crop")
        keys = _select(batch, self.keys, "random_crop")
        rows = _rows(batch, keys, "random_crop")
        out = dict(batch)
        corners = None
        for k in keys:
            x = jnp.asarray(batch[k])
            a0, a1 = (_record_axis(a, x.ndim, "random_crop") for a in self.axes)
            h, w = self.size if self.size is not None else (x.shape[a0], x.shape[a1])
            pad = [(0, 0)] * x.ndim
            pad[a0] = pad[a1] = (self.padding, self.padding)
            x = jnp.pad(x, pad, constant_values=jnp.asarray(self.fill, x.dtype))
            limits = (x.shape[a0] - h, x.shape[a1] - w)
            if min(limits) < 0:
                raise ValueError(
                    f"random_crop: crop size {(h, w)} is larger than the padded {k!r} "
                    f"({x.shape[a0]}, {x.shape[a1]}); lower size or raise padding."
                )
            if corners is None:
                corners = crop_offsets(key, rows, limits)
            else:  # every key of a row shares its corner; their padded sizes must agree
                corners = jnp.minimum(corners, jnp.asarray(limits, jnp.int32))

            def crop(r, c, a0=a0 - 1, a1=a1 - 1, h=h, w=w):
                start = [jnp.int32(0)] * r.ndim
                start[a0], start[a1] = c[0], c[1]
                sizes = list(r.shape)
                sizes[a0], sizes[a1] = h, w
                return jax.lax.dynamic_slice(r, start, sizes)

            out[k] = jax.vmap(crop)(x, corners)
        return out


def random_crop(
    keys: str | Sequence[str] | None = None,
    size: tuple[int, int] | None = None,
    *,
    padding: int = 0,
    axes: tuple[int, int] = (-3, -2),
    fill: float = 0,
) -> RandomCrop:
    """Returns a stage that pads by ``padding`` (with ``fill``) and crops ``size`` at random.

    ``axes`` are the (height, width) axes of one record (default: HWC images);
    ``size=None`` keeps the original size, the classic "pad 4 and crop back" shift.
    The corner is uniform over all valid positions, drawn once per row and shared by
    every key of that row.

    Arguments:
        keys: the batch entries to crop (the same corner for every key of a row); None: all.
        size: the ``(height, width)`` of the crop; None: the record's own size.
        padding: pixels added on each side of both axes before cropping.
        axes: the (height, width) axes of one record.
        fill: the value of the padding.

    Returns:
        the stage; it needs a key (a ``dfn.Pipeline`` hands it one).
    """
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"random_crop: padding must be an int >= 0; got padding={padding!r}.")
    if size is not None:
        size = (int(size[0]), int(size[1]))
        if min(size) < 1:
            raise ValueError(f"random_crop: size must be two positive ints; got size={size}.")
    return RandomCrop(_as_keys(keys, "random_crop"), size, padding, (int(axes[0]), int(axes[1])), float(fill))


class ApplyToKeys(Stage):
    """Applies ``fn(x)`` (or ``fn(x, key)``) to each of ``keys``."""

    fn: Callable = eqx.field(static=True)
    keys: tuple[str, ...] | None = eqx.field(static=True)
    with_key: bool = eqx.field(static=True)

    def __call__(self, batch, key=None):
        keys = _select(batch, self.keys, "apply_to_keys")
        out = dict(batch)
        for k in keys:
            if self.with_key:
                _need_key(key, "apply_to_keys(with_key=True)")
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
    return ApplyToKeys(fn, _as_keys(keys, "apply_to_keys"), bool(with_key))


def bind_stats(stage: Stage, stats: Any) -> Stage:
    """Returns ``stage`` with every unbound ``Normalize`` inside it reading ``stats``."""
    if isinstance(stage, Chain):
        return Chain(tuple(bind_stats(s, stats) for s in stage.stages))
    if isinstance(stage, Normalize) and stage.mean is None:
        if stats is None:
            raise ValueError(
                "normalize has no statistics: pass stats=dfn.compute_statistics(source) to "
                "dfn.Pipeline, or mean=/std= to dfn.normalize."
            )
        return stage.bind(stats)
    return stage
