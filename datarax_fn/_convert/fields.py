"""Field types: the backend-neutral schema, and selection by dotted paths.

The HF and TFDS mappers turn a backend's declared features into a ``dict[str, Field]``;
everything after that (selection, the converter, the memory estimate) reads only these types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Image:
    """An encoded image; ``shape`` (H, W, C) and ``dtype`` as declared, ``None`` where not.

    ``mode`` is a declared PIL mode (HF ``Image(mode=)``); ``encoding`` the declared format.
    """

    shape: tuple[int | None, int | None, int | None] = (None, None, None)
    dtype: str = "uint8"
    mode: str | None = None
    encoding: str | None = None


@dataclasses.dataclass(frozen=True)
class Label:
    """A class label stored as an integer; ``names`` are kept for the metadata."""

    names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A scalar or array of ``dtype``; ``None`` in ``shape`` marks a ragged axis."""

    shape: tuple[int | None, ...] = ()
    dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class Text:
    """A string (``binary=False``) or bytes value, stored as its bytes."""

    binary: bool = False


@dataclasses.dataclass(frozen=True)
class Audio:
    """An audio clip: encoded bytes, a path, ``{"array", "sampling_rate"}`` or raw samples.

    ``dtype`` is the declared sample type of raw samples (TFDS ``Audio(dtype=)``), ``channels``
    the declared channel count (None: mono or undeclared).
    """

    sampling_rate: int | None = None
    dtype: str | None = None
    channels: int | None = None


@dataclasses.dataclass(frozen=True)
class Time:
    """An Arrow time type: ``kind`` is timestamp, date, duration or time; ``unit`` s/ms/us/ns/D."""

    kind: str
    unit: str


@dataclasses.dataclass(frozen=True)
class Unsupported:
    """A feature with no array form; an error only if it is still selected when converting."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Sequence:
    """A list of ``feature`` values; ``length`` is fixed, or ``None`` for variable."""

    feature: Any
    length: int | None = None


@dataclasses.dataclass(frozen=True)
class Struct:
    """A nested record: a dict of fields (hashable: compared by its items, in order)."""

    fields: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", dict(self.fields))

    def __hash__(self) -> int:
        return hash(tuple(self.fields.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Struct) and list(self.fields.items()) == list(other.fields.items())


Field = Image | Label | Tensor | Text | Audio | Time | Unsupported | Sequence | Struct


def children(field: Any) -> dict[str, Any] | None:
    """Returns the named sub-fields of a struct (or of a list of structs), else None."""
    while isinstance(field, Sequence):
        field = field.feature
    return field.fields if isinstance(field, Struct) else None


def _rebuild(field: Any, kept: dict[str, Any]) -> Any:
    if isinstance(field, Sequence):
        return Sequence(_rebuild(field.feature, kept), field.length)
    return Struct(kept)


def leaf_paths(fields: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yields ``(dotted path, field)`` for every leaf, descending structs and lists of structs."""
    for key, f in fields.items():
        path = f"{prefix}{key}"
        sub = children(f)
        if sub is None:
            yield path, f
        else:
            yield from leaf_paths(sub, f"{path}.")


def all_paths(fields: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, f in fields.items():
        path = f"{prefix}{key}"
        out.append(path)
        sub = children(f)
        if sub is not None:
            out += all_paths(sub, f"{path}.")
    return out


def check_key_options(include_keys: Any, exclude_keys: Any, owner: str = "") -> tuple[Any, Any]:
    """Returns ``(include_keys, exclude_keys)`` as tuples (or None); raises on a bad combination.

    Arguments:
      include_keys, exclude_keys: lists of dotted paths, or None.
      owner: a name for the error messages (the config class).

    Returns:
      The two options as tuples of strings (or None).
    """
    where = f"{owner}: " if owner else ""
    if include_keys is not None and exclude_keys is not None:
        raise ValueError(
            f"{where}include_keys and exclude_keys are exclusive; got both: include_keys={list(include_keys)}, "
            f"exclude_keys={list(exclude_keys)}. Set one of them."
        )
    out = []
    for arg, keys in (("include_keys", include_keys), ("exclude_keys", exclude_keys)):
        if isinstance(keys, (str, bytes)):
            raise TypeError(f"{where}{arg} must be a list of keys, not the string {keys!r}; write [{keys!r}].")
        if keys is not None:
            keys = tuple(keys)
            bad = [k for k in keys if not isinstance(k, str)]
            if bad:
                raise TypeError(f"{where}{arg} must hold dotted-path strings; got {bad[0]!r}.")
        out.append(keys)
    return out[0], out[1]


def _prune(fields: Mapping[str, Any], keep: set[str], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, f in fields.items():
        path = f"{prefix}{key}"
        if path in keep:
            out[key] = f
            continue
        sub = children(f)
        if sub is not None and any(k.startswith(f"{path}.") for k in keep):
            out[key] = _rebuild(f, _prune(sub, keep, f"{path}."))
    return out


def _drop(fields: Mapping[str, Any], drop: set[str], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, f in fields.items():
        path = f"{prefix}{key}"
        if path in drop:
            continue
        sub = children(f)
        if sub is not None and any(k.startswith(f"{path}.") for k in drop):
            kept = _drop(sub, drop, f"{path}.")
            if kept:
                out[key] = _rebuild(f, kept)
            continue
        out[key] = f
    return out


def select(fields: Mapping[str, Any], include_keys: Any = None, exclude_keys: Any = None) -> dict[str, Any]:
    """Returns the pruned field tree kept by ``include_keys`` / ``exclude_keys`` (dotted paths).

    Arguments:
      fields: the mapped schema.
      include_keys: paths to keep ("answers.text" keeps only that leaf of ``answers``).
      exclude_keys: paths to drop; any feature can be dropped, even an unsupported one.

    Returns:
      A new ``dict[str, Field]``; an unknown path raises ValueError listing the available paths.

    ```python
    from datarax_fn import _convert as cv
    fields = {"id": cv.Text(), "answers": cv.Struct({"text": cv.Sequence(cv.Text()), "start": cv.Sequence(cv.Tensor((), "int32"))})}
    assert cv.select(fields, exclude_keys=["answers.text"]) == {"id": cv.Text(), "answers": cv.Struct({"start": cv.Sequence(cv.Tensor((), "int32"))})}
    ```
    """
    include_keys, exclude_keys = check_key_options(include_keys, exclude_keys)
    known = all_paths(fields)
    for arg, keys in (("include_keys", include_keys), ("exclude_keys", exclude_keys)):
        unknown = [k for k in keys or () if k not in known]
        if unknown:
            raise ValueError(f"{arg}: unknown keys {unknown}; available keys are {known}.")
    if include_keys is not None:
        if not include_keys:
            raise ValueError(f"include_keys is empty; available keys are {known}.")
        return _prune(fields, set(include_keys))
    kept = _drop(fields, set(exclude_keys or ()))
    if not kept:
        raise ValueError(f"exclude_keys={list(exclude_keys or ())} leaves no keys; available keys are {known}.")
    return kept


def read_paths(fields: Mapping[str, Any]) -> list[str]:
    """Returns the dotted paths of the leaves of ``fields`` (what a loader must read, in order).

    ```python
    from datarax_fn import _convert as cv
    assert cv.read_paths({"a": cv.Struct({"b": cv.Label(), "c": cv.Text()}), "d": cv.Image()}) == ["a.b", "a.c", "d"]
    ```
    """
    return [path for path, _ in leaf_paths(fields)]


def lookup(option: Any, path: str) -> Any:
    """Returns a per-path option: the value itself, or the entry of the nearest enclosing path."""
    if not isinstance(option, Mapping):
        return option
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in option:
            return option[key]
    return None
