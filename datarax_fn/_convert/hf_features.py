"""The HF mapper: ``datasets.Features`` -> ``dict[str, Field]``, faithful to what is declared."""

from __future__ import annotations

import re
from typing import Any

from .fields import Audio, Image, Label, Sequence, Struct, Tensor, Text, Time, Unsupported

_NUMBERS = frozenset(
    "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64".split()
)
_TIME = re.compile(r"^(timestamp|duration|time32|time64)\[(s|ms|us|ns)(?:,.*)?\]$")
_MODE_DTYPE = {"I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16", "I": "int32", "F": "float32"}


def _value(dtype: str, name: str) -> Any:
    if dtype in _NUMBERS:
        return Tensor((), dtype)
    if dtype in ("string", "large_string"):
        return Text()
    if dtype in ("binary", "large_binary"):
        return Text(binary=True)
    if dtype in ("date32", "date64"):
        return Time("date", "D")
    m = _TIME.match(dtype)
    if m:
        kind = "time" if m.group(1).startswith("time") and m.group(1) != "timestamp" else m.group(1)
        return Time(kind, m.group(2))
    if dtype == "null":
        return Unsupported(f"field {name!r} is all-null (HF dtype 'null'); it holds no values")
    return Unsupported(f"field {name!r} has HF dtype {dtype!r}, which has no array form")


def _feature(f: Any, name: str) -> Any:
    import datasets as hd  # heavy; only a loader that already imported it calls this

    if isinstance(f, dict):
        return Struct({k: _feature(v, f"{name}.{k}") for k, v in f.items()})
    if isinstance(f, hd.ClassLabel):
        return Label(tuple(f.names))
    if isinstance(f, hd.Value):
        return _value(str(f.dtype), name)
    if isinstance(f, hd.Image):
        mode = f.mode
        channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(mode, 1 if mode in _MODE_DTYPE else None)
        return Image((None, None, channels), _MODE_DTYPE.get(mode, "uint8"), mode)
    if isinstance(f, hd.Audio):
        return Audio(f.sampling_rate, None, getattr(f, "num_channels", None))
    if isinstance(f, (hd.Array2D, hd.Array3D, hd.Array4D, hd.Array5D)):
        return Tensor(tuple(f.shape), str(f.dtype))
    if isinstance(f, (hd.List, hd.LargeList)):
        length = getattr(f, "length", -1)
        return Sequence(_feature(f.feature, name), None if length in (-1, None) else int(length))
    if isinstance(f, hd.Translation):
        return Struct({lang: Text() for lang in f.languages})
    return Unsupported(f"field {name!r} has HF feature {type(f).__name__}, which has no array form")


def fields_from_hf(features: Any) -> dict[str, Any]:
    """Returns the field of every HF feature (a ``datasets.Features`` or a plain dict of them).

    Never raises: a feature with no array form becomes ``Unsupported``, an error only if it
    is still selected when the Converter is built.

    ```python
    import datasets as hd
    from datarax_fn import _convert as cv
    f = cv.fields_from_hf(hd.Features({"x": hd.List(hd.Value("int64")), "d": hd.Value("decimal128(5, 2)")}))
    assert f["x"] == cv.Sequence(cv.Tensor((), "int64")) and isinstance(f["d"], cv.Unsupported)
    ```
    """
    return {k: _feature(f, k) for k, f in features.items()}
