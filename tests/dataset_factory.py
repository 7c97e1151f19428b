"""Real datasets built from a backend-neutral schema: HF parquet + ``save_to_disk``, TFDS in both formats.

A schema is a ``{name: Spec}`` dict of the small frozen dataclasses below; a row is a
``{name: value}`` dict in canonical form (NumPy scalars, ``str``, ``bytes``, lists, dicts,
:class:`Picture`, int16 audio arrays, ``None``). The same schema and rows give

* ``hf_features`` / ``build_hf``: a parquet file (read back with ``load_dataset("parquet")``) and a
  ``save_to_disk`` folder;
* ``tfds_feature`` / ``build_tfds``: a ``GeneratorBasedBuilder`` prepared in ``tfrecord`` or
  ``array_record`` under a data_dir, with TFDS's prepare-time shuffle disabled so that records
  keep the generated order in every backend.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import wave
from typing import Any

import numpy as np

NUM_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64")
MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


@dataclasses.dataclass(frozen=True)
class Num:
    dtype: str


@dataclasses.dataclass(frozen=True)
class Label:
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Str:
    pass


@dataclasses.dataclass(frozen=True)
class Bin:
    pass


@dataclasses.dataclass(frozen=True)
class Seq:
    inner: Any
    length: int | None = None  # None: ragged


@dataclasses.dataclass(frozen=True)
class Struct:
    fields: tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Array:
    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass(frozen=True)
class Img:
    """An image field. ``mode`` is the declared mode (None: HF ``Image()`` with rows of ``modes``)."""

    mode: str | None
    modes: tuple[str, ...]
    hw: tuple[int, int]
    dtype: str = "uint8"
    fmt: str = "png"


@dataclasses.dataclass(frozen=True)
class Aud:
    sampling_rate: int


@dataclasses.dataclass(frozen=True, eq=False)
class Picture:
    """An image value: its pixels (H, W, C) and, for uint8 images, their PNG or JPEG bytes."""

    pixels: np.ndarray
    encoded: bytes
    mode: str


# ----------------------------------------------------------------------------- encoding


def encode_image(pixels: np.ndarray, fmt: str = "png") -> bytes:
    """Returns ``pixels`` (H, W) or (H, W, C) encoded by PIL as PNG or JPEG."""
    import PIL.Image  # heavy, only for the image fields

    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
    return buf.getvalue()


def decode_image(encoded: bytes, mode: str | None = None) -> np.ndarray:
    """Returns PIL's decode of ``encoded`` as (H, W, C), converted to ``mode`` when given."""
    import PIL.Image  # heavy, only for the image fields

    im = PIL.Image.open(io.BytesIO(encoded))
    im.load()
    if mode is not None and im.mode != mode:
        im = im.convert(mode)
    arr = np.asarray(im)
    return arr[..., None] if arr.ndim == 2 else arr


def encode_wav(samples: np.ndarray, sampling_rate: int) -> bytes:
    """Returns mono int16 ``samples`` as WAV bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sampling_rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def decode_wav(data: bytes) -> np.ndarray:
    """Returns the int16 samples of a mono 16-bit WAV."""
    with wave.open(io.BytesIO(data), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)


# ----------------------------------------------------------------------------- HF


def hf_feature(spec: Any) -> Any:
    """Returns the HF feature declaring ``spec``."""
    import datasets as hd  # heavy backend

    if isinstance(spec, Num):
        return hd.Value(spec.dtype)
    if isinstance(spec, Label):
        return hd.ClassLabel(names=list(spec.names))
    if isinstance(spec, Str):
        return hd.Value("string")
    if isinstance(spec, Bin):
        return hd.Value("binary")
    if isinstance(spec, Seq):
        return hd.List(hf_feature(spec.inner), length=-1 if spec.length is None else spec.length)
    if isinstance(spec, Struct):
        return {k: hf_feature(v) for k, v in spec.fields}
    if isinstance(spec, Array):
        cls = {2: hd.Array2D, 3: hd.Array3D}[len(spec.shape)]
        return cls(shape=spec.shape, dtype=spec.dtype)
    if isinstance(spec, Img):
        return hd.Image(mode=spec.mode)
    if isinstance(spec, Aud):
        return hd.Audio(sampling_rate=spec.sampling_rate)
    raise TypeError(f"unknown spec {spec!r}")


def hf_features(schema: dict[str, Any]) -> Any:
    """Returns the HF ``Features`` of ``schema``."""
    import datasets as hd  # heavy backend

    return hd.Features({k: hf_feature(v) for k, v in schema.items()})


def hf_value(spec: Any, v: Any) -> Any:
    """Returns canonical value ``v`` in the form HF encodes."""
    if v is None:
        return None
    if isinstance(spec, Num):
        return v.item()
    if isinstance(spec, Seq):
        return [hf_value(spec.inner, x) for x in v]
    if isinstance(spec, Struct):
        return {k: hf_value(s, v[k]) for k, s in spec.fields}
    if isinstance(spec, Array):
        return v.tolist()
    if isinstance(spec, Img):
        return {"bytes": v.encoded, "path": None}
    if isinstance(spec, Aud):
        return {"bytes": encode_wav(v, spec.sampling_rate), "path": None}
    return v


def build_hf(root: str, schema: dict[str, Any], rows: list[dict]) -> dict[str, str]:
    """Returns ``{"parquet": file, "disk": folder}``: the rows written by HF both ways.

    Audio columns are written as their ``{bytes, path}`` storage and cast to ``Audio`` after,
    because HF's audio encoder needs torchcodec.
    """
    import datasets as hd  # heavy backend

    audio = [k for k, s in schema.items() if isinstance(s, Aud)]
    wav_storage = {"bytes": hd.Value("binary"), "path": hd.Value("string")}
    storage = {k: wav_storage if k in audio else hf_feature(s) for k, s in schema.items()}
    columns = {k: [hf_value(s, r[k]) for r in rows] for k, s in schema.items()}
    ds = hd.Dataset.from_dict(columns, features=hd.Features(storage))
    for k in audio:
        ds = ds.cast_column(k, hf_feature(schema[k]))
    out = {"parquet": os.path.join(root, "train.parquet"), "disk": os.path.join(root, "saved")}
    ds.to_parquet(out["parquet"])
    ds.save_to_disk(out["disk"])
    return out


# ----------------------------------------------------------------------------- TFDS


def tfds_feature(spec: Any) -> Any:
    """Returns the TFDS feature declaring ``spec``."""
    import tensorflow_datasets as tfds  # heavy backend

    f = tfds.features
    if isinstance(spec, Num):
        return f.Scalar(np.dtype(spec.dtype))
    if isinstance(spec, Label):
        return f.ClassLabel(names=list(spec.names))
    if isinstance(spec, Str):
        return f.Text()
    if isinstance(spec, Bin):
        return f.Tensor(shape=(), dtype=np.object_)
    if isinstance(spec, Seq):
        return f.Sequence(tfds_feature(spec.inner), length=spec.length)
    if isinstance(spec, Struct):
        return f.FeaturesDict({k: tfds_feature(v) for k, v in spec.fields})
    if isinstance(spec, Array):
        return f.Tensor(shape=spec.shape, dtype=np.dtype(spec.dtype))
    if isinstance(spec, Img):
        return f.Image(shape=(*spec.hw, MODE_CHANNELS[spec.mode]), dtype=np.dtype(spec.dtype), encoding_format=spec.fmt)
    if isinstance(spec, Aud):
        return f.Audio(shape=(None,), dtype=np.int16, sample_rate=spec.sampling_rate)
    raise TypeError(f"unknown spec {spec!r}")


def tfds_value(spec: Any, v: Any) -> Any:
    """Returns canonical value ``v`` in the form the TFDS feature encodes."""
    if isinstance(spec, Seq):
        return [tfds_value(spec.inner, x) for x in v]
    if isinstance(spec, Struct):
        return {k: tfds_value(s, v[k]) for k, s in spec.fields}
    if isinstance(spec, Img):
        if spec.dtype == "uint8":  # the very bytes HF stores, so JPEG pixels can agree
            return io.BytesIO(v.encoded)
        return v.pixels
    return v


_names = itertools.count()


def build_tfds(root: str, schema: dict[str, Any], rows: list[dict], file_formats=("tfrecord", "array_record")) -> tuple[str, dict[str, str]]:
    """Returns ``(name, {file_format: data_dir})`` of a new builder prepared in each format."""
    import tensorflow_datasets as tfds  # heavy backend

    features = {k: tfds_feature(s) for k, s in schema.items()}

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, r in enumerate(rows):  # fresh values per prepare: encoded images are read-once files
            yield i, {k: tfds_value(s, r[k]) for k, s in schema.items()}

    cls = type(
        f"DfnFuzz{next(_names)}x{os.getpid()}",
        (tfds.core.GeneratorBasedBuilder,),
        {"VERSION": tfds.core.Version("1.0.0"), "__module__": __name__, "_info": _info,
         "_split_generators": _split_generators, "_generate_examples": _generate_examples},
    )
    dirs = {}
    for fmt in file_formats:
        dirs[fmt] = os.path.join(root, fmt)
        cls(data_dir=dirs[fmt], file_format=fmt).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return cls.name, dirs
