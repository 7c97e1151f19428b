"""The TFDS mapper: a ``FeaturesDict`` -> ``dict[str, Field]``, faithful to what is declared."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .fields import Audio, Image, Label, Sequence, Struct, Tensor, Text, Unsupported


def _tensor_info(info: Any, name: str) -> Any:
    """Returns the field of one tensor: numbers keep shape and dtype; strings nest as Sequences."""
    dtype = np.dtype(info.np_dtype)
    shape = tuple(info.shape)
    if dtype.kind in "OSU":
        field: Any = Text()
        for d in reversed(shape):
            field = Sequence(field, d)
        return field
    if dtype.kind not in "biuf":
        return Unsupported(f"field {name!r} has TFDS dtype {dtype}, which has no array form")
    return Tensor(shape, dtype.name)


def _connector(feature: Any, name: str) -> Any:
    import tensorflow_datasets as tfds  # heavy; only a loader that already imported it calls this

    F = tfds.features
    if isinstance(feature, F.FeaturesDict):
        return Struct({k: _connector(v, f"{name}.{k}") for k, v in feature.items()})
    if isinstance(feature, F.ClassLabel):
        return Label(tuple(feature.names))
    if isinstance(feature, F.Text):
        return Text()
    if isinstance(feature, F.Image):
        return Image(tuple(feature.shape), np.dtype(feature.np_dtype).name, None, feature.encoding_format)
    if isinstance(feature, F.Audio):
        shape = tuple(feature.shape)
        channels = shape[1] if len(shape) == 2 else None
        return Audio(feature.sample_rate, np.dtype(feature.np_dtype).name, channels)
    if isinstance(feature, F.Sequence):
        inner, length = feature.feature, feature._length  # noqa: SLF001 (no public accessor)
        if isinstance(inner, F.FeaturesDict):  # TFDS stores a sequence of dicts as a dict of sequences
            return Struct({k: Sequence(_connector(v, f"{name}.{k}"), length) for k, v in inner.items()})
        return Sequence(_connector(inner, name), length)
    try:
        info = feature.get_tensor_info()
    except Exception as err:  # noqa: BLE001 (a custom connector may not describe itself)
        return Unsupported(f"field {name!r}: TFDS feature {type(feature).__name__} has no tensor info ({err})")
    if isinstance(info, Mapping):  # a custom connector holding several tensors
        return Struct({k: _tensor_info(v, f"{name}.{k}") for k, v in info.items()})
    return _tensor_info(info, name)


def fields_from_tfds(features: Any) -> dict[str, Any]:
    """Returns the field of every feature of a TFDS ``FeaturesDict`` (or a dict of connectors).

    Never raises: a feature with no array form becomes ``Unsupported``, an error only if it
    is still selected when the Converter is built.
    """
    return {k: _connector(f, k) for k, f in features.items()}
