"""Number dtypes: the output dtype of a declared one (decided once), and the checked cast."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

X64_FIX = "call jax.config.update('jax_enable_x64', True) before building the source"


def x64() -> bool:
    """Returns whether JAX keeps 64-bit types (``jax_enable_x64``)."""
    import jax  # jax is a hard dependency, imported late so `import datarax_fn._convert` stays light

    return bool(jax.config.jax_enable_x64)


_NARROW = {"int64": "int32", "uint64": "uint32", "float64": "float32", "complex128": "complex64"}


def out_dtype(declared: str) -> np.dtype:
    """Returns the dtype a declared number type becomes: kept, or narrowed when x64 is off."""
    dt = np.dtype(declared)
    if dt.kind not in "biufc":
        raise ValueError(f"dtype {declared!r} is not a number type")
    if dt.name in _NARROW and not x64():
        return np.dtype(_NARROW[dt.name])
    return dt


def cast(values: np.ndarray, out: np.dtype, name: str, row_at: Callable[[int], int]) -> np.ndarray:
    """Returns ``values`` as ``out``; a value that does not fit raises naming field, row and value.

    ``row_at(i)`` gives the global row of flat value ``i``. Integers must fit the narrower type;
    finite floats must stay finite (NaN and inf already in the data stay).
    """
    if values.dtype == out:
        return values
    if values.dtype.kind in "iu" and out.kind in "iu":
        info = np.iinfo(out)
        flat = values.reshape(-1)
        bad = np.flatnonzero((flat < info.min) | (flat > info.max)) if flat.size else ()
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"field {name!r}: value {flat[i].item()} at row {row_at(i)} does not fit {out} "
                f"(JAX's default without 64-bit mode). To keep 64-bit values, {X64_FIX}; or leave "
                f"the field out with exclude_keys=[{name!r}]."
            )
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked just below
        out_values = values.astype(out)
    if values.dtype.kind == "f" and out.kind == "f" and values.dtype.itemsize > out.itemsize:
        flat_in, flat_out = values.reshape(-1), out_values.reshape(-1)
        bad = np.flatnonzero(np.isfinite(flat_in) & ~np.isfinite(flat_out))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"field {name!r}: value {flat_in[i].item()!r} at row {row_at(i)} is beyond the range of {out} "
                f"(JAX's default without 64-bit mode) and would become inf. To keep float64, {X64_FIX}; "
                f"or leave the field out with exclude_keys=[{name!r}]."
            )
    return out_values
