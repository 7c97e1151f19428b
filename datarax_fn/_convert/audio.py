"""Audio: clips -> float32 samples in [-1, 1], one scale for every backend.

Integer PCM is divided by ``2**(bits - 1)`` (exact for up to 24 bits). Encoded clips are read
by libsndfile (``soundfile``: WAV, FLAC, OGG, ...) when installed, else WAV by the stdlib.
"""

from __future__ import annotations

import io
import os
import wave
from collections.abc import Mapping
from typing import Any

import numpy as np

from .columns import is_arrow, null_error, plain_arrow


def scale(x: np.ndarray) -> np.ndarray:
    """Returns samples as float32 in [-1, 1]: integer PCM divided by ``2**(bits - 1)``."""
    x = np.asarray(x)
    if x.dtype.kind == "u":  # unsigned PCM is offset by half its range (8-bit WAV)
        half = 2.0 ** (8 * x.dtype.itemsize - 1)
        return ((x.astype(np.float64) - half) / half).astype(np.float32)
    if x.dtype.kind == "i":
        return (x.astype(np.float64) / 2.0 ** (8 * x.dtype.itemsize - 1)).astype(np.float32)
    return x.astype(np.float32, copy=False)


def _wav_stdlib(src: Any, name: str, row: int) -> tuple[np.ndarray, int]:
    try:
        with wave.open(src, "rb") as w:
            sr, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as err:
        raise ValueError(
            f"field {name!r}: row {row} is not a PCM WAV file ({err}). Install soundfile to read "
            f"FLAC/OGG, pass a transform that decodes it, or exclude_keys=[{name!r}]."
        ) from err
    if width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 2**23, v - 2**24, v)).astype(np.float32) / float(2**23)
    else:
        x = scale(np.frombuffer(raw, {1: np.uint8, 2: "<i2", 4: "<i4"}[width]))
    return x.reshape(-1, ch), sr


def read(data: Any, name: str, row: int) -> tuple[np.ndarray, int]:
    """Returns ``(samples (T, C) float32, sampling rate)`` of one encoded clip or path."""
    src = data if isinstance(data, (str, os.PathLike)) else io.BytesIO(bytes(data))
    try:
        import soundfile as sf  # optional: adds FLAC/OGG; the stdlib reads WAV without it
    except ImportError:
        return _wav_stdlib(src, name, row)
    try:
        x, sr = sf.read(src, dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 (libsndfile raises its own error type)
        raise ValueError(
            f"field {name!r}: row {row} is not an audio file libsndfile reads ({err}). Pass a transform "
            f"that decodes it, or exclude_keys=[{name!r}]."
        ) from err
    return x, sr


def clips(col: Any, field: Any, name: str, row0: int) -> tuple[list[np.ndarray], set]:
    """Returns every clip as float32 ``(T,)`` or ``(T, C)``, and the sampling rates seen."""
    if is_arrow(col):
        arr = plain_arrow(col)
        if arr.null_count:
            raise null_error(name, row0 + int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]))
        col = arr.to_pylist()
    out, rates = [], set()
    for i, v in enumerate(col):
        sr = field.sampling_rate
        if v is None:
            raise null_error(name, row0 + i)
        if isinstance(v, Mapping) and v.get("array") is not None:
            x, sr = scale(np.asarray(v["array"])), v.get("sampling_rate", sr)
        elif isinstance(v, Mapping):
            src = v.get("bytes") if v.get("bytes") is not None else v.get("path")
            if src is None:
                raise null_error(name, row0 + i)
            x, sr = read(src, name, row0 + i)
        elif isinstance(v, (bytes, bytearray, memoryview, str)):
            x, sr = read(v, name, row0 + i)
        else:
            x = scale(np.asarray(v if field.dtype is None else np.asarray(v, field.dtype)))
        if x.ndim == 2 and x.shape[1] == 1 and field.channels in (None, 1):
            x = x[:, 0]
        if field.sampling_rate is not None and sr is not None and sr != field.sampling_rate:
            raise ValueError(
                f"field {name!r}: row {row0 + i} has sampling rate {sr}, the feature declares "
                f"{field.sampling_rate}. datarax_fn does not resample (and a transform sees no rates): declare "
                f"the files' rate (for an HF Dataset: ds.cast_column({name!r}, datasets.Audio(sampling_rate={sr}))), "
                f"or leave the field out with exclude_keys=[{name!r}]."
            )
        out.append(x)
        rates.add(sr)
    rates.discard(None)
    return out, rates
