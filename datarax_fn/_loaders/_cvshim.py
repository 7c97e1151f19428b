"""TEMPORARY: the conversion contract's names over the old conversion module (deleted at the merge)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _convert as _old
from .._convert import Audio, Image, Label, Sequence, Struct, Tensor, Text, check_key_options, decode_text, owned_arrays  # noqa: F401


class Converter:
    def __init__(self, fields, *, max_length=None, truncate=False, image_mode=None, transform=None, probe=None,
                 static=False, num_threads=None):
        self.fields = dict(fields)
        self.kw = dict(max_length=max_length, transform=transform, truncate=truncate, num_threads=num_threads)
        self.meta: dict = {}
        if static and transform is None:
            _static_check(self.fields, max_length)
        self.element_spec = None if probe is None else _old.element_spec_of(self(probe))

    def __call__(self, columns, row0=0):
        arrays, meta = _old.convert_with_meta({k: columns[k] for k in self.fields}, self.fields, progress=False, **self.kw)
        self.meta.update(meta)
        return arrays


def _static_check(fields, max_length, prefix=""):
    for k, f in fields.items():
        name = f"{prefix}{k}"
        if isinstance(f, Struct):
            _static_check(f.fields, max_length, f"{name}.")
            continue
        ragged = (isinstance(f, (Text, Audio)) or (isinstance(f, Sequence) and f.length is None)
                  or (isinstance(f, Tensor) and f.shape and f.shape[0] is None))
        if ragged and _old._lookup(max_length, name) is None:
            raise ValueError(f"field {name!r}: a ragged {type(f).__name__} needs max_length when streaming.")


def select(fields, include_keys=None, exclude_keys=None):
    return _old.select_keys(fields, include_keys, exclude_keys)


def read_paths(fields):
    return list(fields)


def estimate_nbytes(conv, columns):
    arrays = conv(columns) if isinstance(conv, Converter) else _old.convert({k: columns[k] for k in conv}, conv)
    return int(sum(a.nbytes for a in _leaves(arrays)))


def _leaves(tree):
    for v in tree.values():
        yield from (_leaves(v) if isinstance(v, Mapping) else [v])


def fields_from_hf(features, prefix=""):
    return {k: _hf_field(f, f"{prefix}{k}") for k, f in features.items()}


def _hf_field(f, name):
    import datasets as hd

    if isinstance(f, dict):
        return Struct(fields_from_hf(f, f"{name}."))
    if isinstance(f, hd.ClassLabel):
        return Label(tuple(f.names))
    if isinstance(f, hd.Image):
        return Image(mode=f.mode)
    if isinstance(f, hd.Audio):
        return Audio(f.sampling_rate)
    if isinstance(f, hd.Value):
        if f.dtype in ("string", "large_string", "binary", "large_binary"):
            return Text()
        return Tensor((), f.dtype)
    if isinstance(f, (hd.Array2D, hd.Array3D, hd.Array4D, hd.Array5D)):
        return Tensor(tuple(f.shape), f.dtype)
    if isinstance(f, (hd.List, hd.LargeList)):
        length = getattr(f, "length", -1)
        return Sequence(_hf_field(f.feature, name), None if length in (-1, None) else length)
    raise ValueError(f"field {name!r}: unsupported")


def fields_from_tfds(features):
    import tensorflow_datasets as tfds

    F = tfds.features
    return {k: _tfds_field(v, k, F) for k, v in features.items()}


def _tfds_field(feature, name, F):
    if isinstance(feature, F.FeaturesDict):
        return Struct({k: _tfds_field(v, f"{name}.{k}", F) for k, v in feature.items()})
    if isinstance(feature, F.ClassLabel):
        return Label(tuple(feature.names))
    if isinstance(feature, F.Text):
        return Text()
    if isinstance(feature, F.Image):
        return Image(tuple(feature.shape))
    if isinstance(feature, F.Audio):
        return Tensor(tuple(feature.shape), "float32")
    if isinstance(feature, F.Sequence) and isinstance(feature.feature, F.FeaturesDict):
        return Struct({k: _tfds_field(F.Sequence(v, length=feature._length), f"{name}.{k}", F) for k, v in feature.feature.items()})
    info = feature.get_tensor_info()
    dtype = np.dtype(info.np_dtype)
    if dtype.kind in "OSU":
        return Text()
    return Tensor(tuple(info.shape), dtype.name)
