"""The records of a mixture: one element spec for every source, or the union with presence masks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from .._state import contract

PyTree = Any


def _fields(spec: PyTree) -> dict[str, tuple]:
    flat, _ = jax.tree_util.tree_flatten_with_path(spec)
    return {jax.tree_util.keystr(p): (tuple(s.shape), np.dtype(s.dtype)) for p, s in flat}


def check_specs(children: Sequence[Any], fill_missing: bool) -> tuple[str, ...]:
    """Returns the top-level fields some sources lack (filled, with a mask, when ``fill_missing``).

    Raises ``ValueError`` naming every field that differs: in shape or dtype, always; absent
    from a source, unless ``fill_missing`` (which needs flat dict records).
    """
    specs = [contract.element_spec(c) for c in children]
    if fill_missing and not all(isinstance(s, Mapping) for s in specs):
        raise TypeError("mix: fill_missing=True fills absent top-level fields of dict records; a source's records "
                        "are not a dict.")
    first = _fields(specs[0])
    problems = []
    seen = dict(first)
    for k, spec in enumerate(specs[1:], 1):
        other = _fields(spec)
        if not fill_missing:
            if missing := sorted(set(first) - set(other)):
                problems.append(f"source {k} lacks {missing}")
            if extra := sorted(set(other) - set(first)):
                problems.append(f"source {k} has {extra}, which source 0 lacks")
        for name in sorted(set(seen) & set(other)):
            if seen[name] != other[name]:
                (s0, d0), (s1, d1) = seen[name], other[name]
                problems.append(f"field {name} is {s0} {d0} in an earlier source and {s1} {d1} in source {k}"
                                if fill_missing else f"field {name} is {s0} {d0} in source 0 and {s1} {d1} in source {k}")
        seen.update(other)
    if problems:
        fix = "" if fill_missing else "; or pass fill_missing=True to fill absent fields with zeros and a mask"
        raise ValueError(
            "mix: every source must give records of one element spec; " + "; ".join(problems)
            + ". Make them agree before mixing (same fields, max_length, image size and dtypes; dfn.cast)" + fix + "."
        )
    if not fill_missing:
        return ()
    keys = [set(s) for s in specs]
    union = list(dict.fromkeys(k for s in specs for k in s))
    filled = tuple(k for k in union if not all(k in s for s in keys))
    clash = [f"{k}_present" for k in filled if any(f"{k}_present" in s for s in keys)]
    if clash:
        raise ValueError(f"mix: fill_missing=True adds the masks {clash}, which a source already has; rename them.")
    return filled


def mixed_spec(children: Sequence[Any], filled: tuple[str, ...]) -> PyTree:
    """Returns the element spec of the mixture: the sources' own, or their union plus a bool mask per filled field."""
    specs = [contract.element_spec(c) for c in children]
    if not filled:
        return specs[0]
    out = {}
    for spec in specs:
        for k, v in spec.items():
            out.setdefault(k, v)
    for k in filled:
        out[f"{k}_present"] = jax.ShapeDtypeStruct((), np.bool_)
    return out


def has_fields(children: Sequence[Any], filled: tuple[str, ...]) -> np.ndarray:
    """Returns ``(sources, filled fields)``: whether each source has each filled field."""
    return np.asarray([[k in contract.element_spec(c) for k in filled] for c in children], bool).reshape(
        len(children), len(filled))
