"""Stages that map values element by element: ``cast``, ``normalize`` and ``one_hot``.

``bind_stats`` lives here too: it fills a ``normalize()`` given without mean/std from a
``dfn.Statistics``, which is how a ``dfn.Pipeline(..., stats=...)`` configures them.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .stages import Chain, Stage, as_keys, select


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
        keys = select(batch, self.keys if self.keys is not None else tuple(self.mean), "normalize")
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
    keys = as_keys(keys, "normalize")
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
        keys = select(batch, self.keys, "cast")
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
    return Cast(as_keys(keys, "cast"), np.dtype(dtype).name, None if scale is None else float(scale))


class OneHot(Stage):
    """Integer labels to one-hot vectors; a label outside ``[0, num_classes)`` raises."""

    keys: tuple[str, ...] | None = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def __call__(self, batch, key=None):
        keys = select(batch, self.keys, "one_hot")
        out = dict(batch)
        for k in keys:
            labels = jnp.asarray(batch[k])
            # jax.nn.one_hot maps such a label to an all-zero row: a silently lost label.
            outside = jnp.any((labels < 0) | (labels >= self.num_classes))
            labels = eqx.error_if(
                labels, outside,
                f"one_hot: key {k!r} holds a label outside [0, {self.num_classes}). Raise num_classes to "
                f"cover every label, or map the labels into range first (e.g. dfn.apply_to_keys(fn, {k!r})).",
            )
            out[k] = jax.nn.one_hot(labels, self.num_classes, dtype=self.dtype)
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
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"one_hot: num_classes must be an int >= 1; got {type(num_classes).__name__} {num_classes!r}.")
    if num_classes < 1:
        raise ValueError(f"one_hot: num_classes must be an int >= 1; got num_classes={num_classes!r}.")
    return OneHot(as_keys(keys, "one_hot"), int(num_classes), np.dtype(dtype).name)


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
