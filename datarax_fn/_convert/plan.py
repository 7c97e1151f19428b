"""The construction-time decisions: one :class:`Leaf` per selected leaf, with its output dtype,
its padded sizes and its length leaves, from the declared schema plus the options.

Dispatch is a table keyed by field type (``_PLANNERS``); nothing here reads data.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from .dtypes import out_dtype
from .fields import Audio, Image, Label, Sequence, Struct, Tensor, Text, Time, Unsupported, leaf_paths, lookup
from .images import MODES


@dataclasses.dataclass(frozen=True)
class Options:
    """The user's conversion options, validated."""

    max_length: Any = None
    truncate: bool = False
    image_mode: Any = None
    static: bool = False


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One output leaf: where it goes and how it is made."""

    path: str  # dotted, for errors and options
    keys: tuple[str, ...]  # where it sits in the output tree
    kind: str  # number | label | time | text | image | audio | unsupported
    field: Any  # the base field (after list levels)
    dims: tuple  # declared size of each list level, None where ragged (text: the bytes level last)
    sizes: tuple  # padded size of each level: max_length, the declared size, or None (the data's)
    dtype: np.dtype  # output dtype
    mode: str | None = None  # images: the PIL mode every image is converted to (None: promote)
    probed: int = 0  # images: how many first images decided ``mode`` (0: declared or given); then only lossless conversions

    @property
    def ragged(self) -> tuple[bool, ...]:
        return () if self.kind == "image" else tuple(d is None for d in self.dims)

    def length_keys(self) -> list[str]:
        """Returns the names of the length leaves: ``<leaf>_length``, ``<leaf>_length_1``, ..."""
        name = self.keys[-1]
        return [f"{name}_length" + (f"_{i}" if i else "") for i in range(sum(self.ragged))]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_max_length(max_length: Any, paths: list[str]) -> Any:
    """Returns ``max_length`` normalised (ints, tuples of ints, or a dict of those); raises on bad values."""

    def one(v: Any, where: str) -> Any:
        if _is_int(v):
            if v < 1:
                raise ValueError(f"max_length{where} must be >= 1; got {v!r}.")
            return int(v)
        if isinstance(v, (tuple, list)) and v and all(_is_int(x) for x in v):
            if min(v) < 1:
                raise ValueError(f"max_length{where} must hold ints >= 1; got {v!r}.")
            return tuple(int(x) for x in v)
        raise TypeError(f"max_length{where} must be an int or a tuple of ints (one per ragged level); got {v!r}.")

    if max_length is None:
        return None
    if isinstance(max_length, Mapping):
        unknown = [k for k in max_length if k not in paths]
        if unknown:
            raise ValueError(f"max_length: unknown keys {unknown}; available keys are {paths}.")
        return {k: one(v, f"[{k!r}]") for k, v in max_length.items()}
    return one(max_length, "")


def check_image_mode(image_mode: Any, fields: Mapping[str, Any]) -> Any:
    """Returns ``image_mode`` checked: a PIL mode string for every image, or ``{path: mode}``
    whose every path is an image of ``fields`` or a struct holding one."""
    if isinstance(image_mode, Mapping):
        _check_image_keys(image_mode, fields)
    vals = image_mode.values() if isinstance(image_mode, Mapping) else [image_mode]
    for v in vals:
        if v is not None and not isinstance(v, str):
            raise TypeError(f"image_mode must be a mode string or a {{key: mode}} dict; got {v!r}.")
        if v is not None and v not in MODES:
            raise ValueError(f"image_mode must be one of {sorted(MODES)} (or a {{key: mode}} dict); got {v!r}.")
    return dict(image_mode) if isinstance(image_mode, Mapping) else image_mode


def _check_image_keys(image_mode: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
    kinds = {}
    for path, f in leaf_paths(fields):
        while isinstance(f, Sequence):
            f = f.feature
        kinds[path] = type(f).__name__.lower()
    images = [p for p, kind in kinds.items() if kind == "image"]
    for key in image_mode:
        if not isinstance(key, str):
            raise TypeError(f"image_mode keys must be dotted-path strings; got {key!r}.")
        if any(p == key or p.startswith(key + ".") for p in images):
            continue
        what = (f"is a {kinds[key]} field, not an image" if key in kinds else
                "holds no image" if any(p.startswith(key + ".") for p in kinds) else "names no field")
        raise ValueError(
            f"image_mode: key {key!r} {what}; image_mode applies only to images ({images or 'there are none'}). "
            f"Drop {key!r} from image_mode."
        )


def _sizes(path: str, dims: tuple, opts: Options, pad_longest: bool) -> tuple:
    ragged = [i for i, d in enumerate(dims) if d is None]
    ml = lookup(opts.max_length, path)
    if ml is None:
        if ragged and opts.static:
            want = "L" if len(ragged) == 1 else "(" + ", ".join(f"L{i}" for i in range(len(ragged))) + ")"
            raise ValueError(
                f"field {path!r} is ragged ({len(ragged)} variable-length level(s)); streaming needs one "
                f"shape for every batch. Pass max_length={{{path!r}: {want}}} (zero-padded, with int32 "
                f"length leaves), or leave the field out with exclude_keys=[{path!r}]."
            )
        return tuple(dims)
    if isinstance(ml, int):
        ml = (ml,) * len(ragged)
    if len(ml) != len(ragged):
        raise ValueError(
            f"max_length for {path!r} has {len(ml)} values, but the field has {len(ragged)} ragged level(s) "
            f"(declared list sizes {dims}); pass one int per ragged level, e.g. {tuple(8 for _ in ragged)}."
        )
    it = iter(ml)
    return tuple(next(it) if d is None else d for d in dims)


def _plan_tensor(path, keys, f, outer, opts):
    dims = (*outer, *f.shape)
    return Leaf(path, keys, "number", f, dims, _sizes(path, dims, opts, False), out_dtype(f.dtype))


def _plan_label(path, keys, f, outer, opts):
    return Leaf(path, keys, "label", f, outer, _sizes(path, outer, opts, False), np.dtype(np.int32))


def _plan_time(path, keys, f, outer, opts):
    return Leaf(path, keys, "time", f, outer, _sizes(path, outer, opts, False), out_dtype("int64"))


def _plan_text(path, keys, f, outer, opts):
    dims = (*outer, None)
    return Leaf(path, keys, "text", f, dims, _sizes(path, dims, opts, True), np.dtype(np.uint8))


def _no_lists(path: str, f: Any, outer: tuple) -> None:
    if outer:
        raise ValueError(
            f"field {path!r}: a list of {type(f).__name__.lower()}s has no array form. Pass a transform "
            f"that turns it into arrays, or leave it out with exclude_keys=[{path!r}]."
        )


def _plan_image(path, keys, f, outer, opts):
    _no_lists(path, f, outer)
    # A global int pads the ragged leaves; only an entry that names the image itself is an error.
    if isinstance(opts.max_length, Mapping) and path in opts.max_length:
        raise ValueError(
            f"max_length does not apply to images ({path!r}): images are not padded. Drop {path!r} from "
            "max_length; images of different sizes need a transform that resizes them to one size."
        )
    h, w, c = f.shape
    mode = f.mode if f.mode in MODES else None
    if isinstance(opts.image_mode, Mapping) and opts.image_mode.get(path) is not None:
        # A mode named for this very image wins over the declared one: it is how users read an
        # image whose files do not fit the declared mode (e.g. 16-bit PNGs under Image(mode='L')).
        mode = opts.image_mode[path]
        c = None
    if mode is None and f.dtype == "uint8" and c in (1, 2, 3, 4):
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    if mode is None and c is None:
        mode = lookup(opts.image_mode, path)  # None in a stream: the converter decides it from its probe
    dtype = MODES[mode][1] if mode is not None else f.dtype
    if mode is not None:
        c = MODES[mode][0]
    return Leaf(path, keys, "image", f, (h, w, c), (h, w, c), np.dtype(dtype), mode)


def _plan_audio(path, keys, f, outer, opts):
    _no_lists(path, f, outer)
    dims = (None,)
    return Leaf(path, keys, "audio", f, dims, _sizes(path, dims, opts, False), np.dtype(np.float32))


def _plan_unsupported(path, keys, f, outer, opts):
    return Leaf(path, keys, "unsupported", f, outer, outer, np.dtype(object))


_PLANNERS = {
    Tensor: _plan_tensor, Label: _plan_label, Time: _plan_time, Text: _plan_text,
    Image: _plan_image, Audio: _plan_audio, Unsupported: _plan_unsupported,
}


def plan(fields: Mapping[str, Any], opts: Options, prefix: str = "", keys: tuple = (), outer: tuple = ()) -> list[Leaf]:
    """Returns the leaves of ``fields`` in order; lists of structs push their levels down."""
    out = []
    for key, f in fields.items():
        path, here, levels = f"{prefix}{key}", (*keys, key), outer
        while isinstance(f, Sequence):
            levels, f = (*levels, f.length), f.feature
        if isinstance(f, Struct):
            out += plan(f.fields, opts, f"{path}.", here, levels)
            continue
        planner = _PLANNERS.get(type(f))
        if planner is None:
            raise TypeError(f"field {path!r}: {f!r} is not a field type; use the types of datarax_fn._convert.")
        out.append(planner(path, here, f, levels, opts))
    return out


def check_leaves(leaves: list[Leaf]) -> None:
    """Raises for a selected unsupported field, or a length leaf clashing with a field."""
    for leaf in leaves:
        if leaf.kind == "unsupported":
            raise ValueError(
                f"{leaf.field.reason}. Leave it out with exclude_keys=[{leaf.path!r}], or pass a transform "
                "that turns it into numbers or strings."
            )
    taken = {leaf.keys for leaf in leaves}
    for leaf in leaves:
        for name in leaf.length_keys():
            if (*leaf.keys[:-1], name) in taken:
                raise ValueError(
                    f"field {leaf.path!r}: its length leaf {name!r} clashes with a field of that name; "
                    f"rename one (a transform can), or exclude one with exclude_keys."
                )
