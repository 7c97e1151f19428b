"""Geometric augmentations of image-like records: ``random_flip`` and ``random_crop``.

Each draws one decision per row (a flip, a crop corner) and shares it across every key of
that row, so an image and its segmentation mask stay aligned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .stages import Stage, as_keys, batch_rows, need_key, record_axis, select


def flip_mask(key: Any, rows: int, p: float) -> jax.Array:
    """Returns the bool ``(rows,)`` flip decisions ``random_flip`` draws from ``key``."""
    return jax.random.bernoulli(key, p, (rows,))


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
