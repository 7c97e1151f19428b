"""Geometric augmentations of image-like records: flips, crops and the inception crop.

Each draws one decision per row (a flip, a crop corner) and shares it across every key of
that row, so an image and its segmentation mask stay aligned.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .stages import Stage, as_keys, batch_rows, need_key, record_axis, row_keys, select


def flip_mask(key: Any, rows: int, p: float) -> jax.Array:
    """Returns the bool ``(rows,)`` flip decisions ``random_flip`` draws, one per row's key."""
    return jax.vmap(lambda k: jax.random.bernoulli(k, p))(row_keys(key, rows))


class RandomFlip(Stage):
    """Flips each row along ``axis`` with probability ``p``; one decision per row for all keys."""

    keys: tuple[str, ...] | None = eqx.field(static=True)
    axis: int = eqx.field(static=True)
    p: float = eqx.field(static=True)

    def __call__(self, batch, key=None):
        need_key(key, "random_flip")
        keys = select(batch, self.keys, "random_flip")
        flip = flip_mask(key, batch_rows(batch, keys, "random_flip"), self.p)
        out = dict(batch)
        for k in keys:
            x = jnp.asarray(batch[k])
            ax = record_axis(self.axis, x.ndim, "random_flip")
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
    return RandomFlip(as_keys(keys, "random_flip"), int(axis), float(p))


def crop_offsets(key: Any, rows: int, limits: tuple[int, int]) -> jax.Array:
    """Returns the int32 ``(rows, 2)`` crop corners ``random_crop`` draws, one per row's key."""
    high = jnp.asarray(limits, jnp.int32) + 1
    return jax.vmap(lambda k: jax.random.randint(k, (2,), 0, high, dtype=jnp.int32))(row_keys(key, rows))


class RandomCrop(Stage):
    """Pads the two spatial axes, then crops ``size`` at a random corner per row."""

    keys: tuple[str, ...] | None = eqx.field(static=True)
    size: tuple[int, int] | None = eqx.field(static=True)
    padding: int = eqx.field(static=True)
    axes: tuple[int, int] = eqx.field(static=True)
    fill: float = eqx.field(static=True)

    def __call__(self, batch, key=None):
        need_key(key, "random_crop")
        keys = select(batch, self.keys, "random_crop")
        rows = batch_rows(batch, keys, "random_crop")
        out = dict(batch)
        corners = None
        for k in keys:
            x = jnp.asarray(batch[k])
            a0, a1 = (record_axis(a, x.ndim, "random_crop") for a in self.axes)
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
    return RandomCrop(as_keys(keys, "random_crop"), size, padding, (int(axes[0]), int(axes[1])), float(fill))


# ----------------------------------------------------------------------------- inception crop


@functools.partial(jax.jit, static_argnames=("height", "width", "scale", "ratio", "attempts"))
def resized_crop_boxes(keys: Any, height: int, width: int, scale: tuple[float, float],
                       ratio: tuple[float, float], attempts: int = 10) -> jax.Array:
    """Returns the int32 ``(rows, 4)`` boxes ``(top, left, h, w)`` ``random_resized_crop`` draws.

    One box per key, as torchvision's ``RandomResizedCrop``: up to ``attempts`` draws of
    an area fraction uniform in ``scale`` and an aspect ratio ``w / h`` log-uniform in
    ``ratio``; the first that fits the image wins and its corner is uniform over the
    valid positions. When none fits, the centred crop of the whole image with its
    aspect ratio clamped into ``ratio``.
    """
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback = (round(width / ratio[0]), width)
    elif in_ratio > ratio[1]:
        fallback = (height, round(height * ratio[1]))
    else:
        fallback = (height, width)

    def box(key):
        # One draw per row for everything (fewer random calls compile much faster).
        u = jax.random.uniform(key, (2 * attempts + 2,))
        area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:attempts])
        aspect = jnp.exp(lo + (hi - lo) * u[attempts:2 * attempts])
        w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
        h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = jnp.argmax(fits)
        found = fits[first]
        h = jnp.where(found, h[first], fallback[0])
        w = jnp.where(found, w[first], fallback[1])
        # uniform over the height - h + 1 (width - w + 1) valid corners
        top = jnp.where(found, jnp.floor(u[-2] * (height - h + 1)), (height - h) // 2)
        left = jnp.where(found, jnp.floor(u[-1] * (width - w + 1)), (width - w) // 2)
        return jnp.stack([top, left, h, w]).astype(jnp.int32)

    return jax.vmap(box)(keys)


def resize_weights(start: Any, length: Any, size_in: int, size_out: int, antialias: bool) -> jax.Array:
    """Returns the ``(size_out, size_in)`` linear-interpolation weights of one axis of a box.

    Output pixel ``o`` samples the box ``[start, start + length)`` at
    ``start + (o + 0.5) * length / size_out - 0.5`` with a triangle kernel, widened by
    ``length / size_out`` when shrinking with ``antialias``; weights outside the box are
    zero and each row sums to one. This is ``jax.image.resize(box, ..., "linear")``
    with a box whose position and size are traced.
    """
    start = jnp.asarray(start, jnp.float32)
    length = jnp.asarray(length, jnp.float32)
    step = length / size_out
    sample = start + (jnp.arange(size_out, dtype=jnp.float32) + 0.5) * step - 0.5
    width = jnp.maximum(step, 1.0) if antialias else 1.0
    i = jnp.arange(size_in, dtype=jnp.float32)
    w = jnp.maximum(0.0, 1.0 - jnp.abs(sample[:, None] - i[None, :]) / width)
    w = jnp.where((i >= start) & (i < start + length), w, 0.0)
    return w / jnp.sum(w, axis=1, keepdims=True)


class RandomResizedCrop(Stage):
    """Crops a random box of random area and aspect ratio per row, resized to ``size``."""

    keys: tuple[str, ...] | None = eqx.field(static=True)
    size: tuple[int, int] = eqx.field(static=True)
    scale: tuple[float, float] = eqx.field(static=True)
    ratio: tuple[float, float] = eqx.field(static=True)
    axes: tuple[int, int] = eqx.field(static=True)
    antialias: bool = eqx.field(static=True)

    def __call__(self, batch, key=None):
        need_key(key, "random_resized_crop")
        keys = select(batch, self.keys, "random_resized_crop")
        rows = batch_rows(batch, keys, "random_resized_crop")
        out, boxes, shape = dict(batch), None, None
        for k in keys:
            x = jnp.asarray(batch[k])
            a0, a1 = (record_axis(a, x.ndim, "random_resized_crop") for a in self.axes)
            if shape is None:
                shape = (x.shape[a0], x.shape[a1])
                boxes = resized_crop_boxes(row_keys(key, rows), *shape, self.scale, self.ratio)
            elif (x.shape[a0], x.shape[a1]) != shape:
                raise ValueError(
                    f"random_resized_crop: every key of a row shares its box, so their (height, width) "
                    f"must agree; {k!r} is {(x.shape[a0], x.shape[a1])}, the first key {shape}."
                )
            out[k] = crop_and_resize(x, boxes, (a0, a1), self.size, self.antialias)
        return out


@functools.partial(jax.jit, static_argnames=("axes", "size", "antialias"))
def crop_and_resize(x: jax.Array, boxes: jax.Array, axes: tuple[int, int], size: tuple[int, int],
                    antialias: bool) -> jax.Array:
    """Returns each row's ``boxes`` box (``top, left, h, w``) of ``x`` resized to ``size``.

    ``axes`` are the batch array's (height, width) axes. Integer inputs come out as
    float32: interpolated values are fractions, and rounding them back would lose them.
    """
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    r = jnp.moveaxis(x.astype(jnp.float32), axes, (1, 2))
    wy = jax.vmap(lambda b: resize_weights(b[0], b[2], r.shape[1], size[0], antialias))(boxes)
    wx = jax.vmap(lambda b: resize_weights(b[1], b[3], r.shape[2], size[1], antialias))(boxes)
    r = jnp.einsum("boh,bhw...->bow...", wy, r, precision="highest")
    r = jnp.einsum("bpw,bow...->bop...", wx, r, precision="highest")
    return jnp.moveaxis(r, (1, 2), axes).astype(dtype)


def random_resized_crop(
    keys: str | Sequence[str] | None = None,
    size: tuple[int, int] | int = 224,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    axes: tuple[int, int] = (-3, -2),
    antialias: bool = True,
) -> RandomResizedCrop:
    """Returns the "inception" crop: a random box per row, resized to ``size``.

    Each row's box covers a fraction of the image's area uniform in ``scale`` and has an
    aspect ratio (width / height) log-uniform in ``ratio``, drawn as torchvision's
    ``RandomResizedCrop`` does (up to 10 tries, then the centred crop); it is then
    resized to ``size`` with linear interpolation, antialiased when shrinking, as
    ``jax.image.resize`` resizes the cropped box. Every key of a row shares its box.
    Integer images come out as float32 (interpolated values are fractions); float
    images keep their dtype.

    Arguments:
        keys: the batch entries to crop (the same box for every key of a row); None: all.
        size: the output ``(height, width)``, or one int for a square.
        scale: the range of the box's area as a fraction of the image's.
        ratio: the range of the box's aspect ratio, width / height.
        axes: the (height, width) axes of one record (default: HWC images).
        antialias: widen the kernel when shrinking, so small crops do not alias.

    Returns:
        the stage; it needs a key (a ``dfn.Pipeline`` hands it one).

    ```python
    import jax, numpy as np, datarax_fn as dfn
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), np.uint8)
    out = dfn.random_resized_crop("image", 16)({"image": images}, jax.random.key(0))
    assert out["image"].shape == (2, 16, 16, 3) and out["image"].dtype == np.float32
    ```
    """
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)):
        raise TypeError(f"random_resized_crop: size must be an int or two ints (height, width); got {size!r}.")
    if min(size) < 1:
        raise ValueError(f"random_resized_crop: size must be positive; got size={tuple(size)}.")
    scale, ratio = _range(scale, "scale"), _range(ratio, "ratio")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"random_resized_crop: scale must satisfy 0 < low <= high <= 1; got scale={scale}.")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"random_resized_crop: ratio must satisfy 0 < low <= high; got ratio={ratio}.")
    return RandomResizedCrop(as_keys(keys, "random_resized_crop"), (int(size[0]), int(size[1])), scale, ratio,
                             (int(axes[0]), int(axes[1])), bool(antialias))


def _range(value: Any, name: str) -> tuple[float, float]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"random_resized_crop: {name} must be two numbers (low, high); got {value!r}.")
    return float(value[0]), float(value[1])
