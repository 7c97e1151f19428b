"""TensorFlow Datasets sources: eager (whole split in device memory) and streaming (tf.data).

A TFDS dataset becomes the same state as every other backend:

* ``TFDSEagerSource(config)`` loads the split vectorised -- one whole-split tensor per
  feature from ``tf.data`` (tfrecord datasets), or batched random access through
  ``tfds.data_source`` (array_record datasets, no TensorFlow needed) -- converts it on the
  host with the shared conversion layer and returns ``dfn.from_arrays(...)``'s ``EagerSource``.
* ``TFDSStreamingSource(config)`` returns a ``StreamingSource`` whose backend reads a
  ``tf.data`` pipeline (shuffle seeded from ``(seed, epoch)``, a fixed prefetch) or, for
  array_record, reads records in the order of the project's own keyed ``permute``.
* ``from_tfds(name, split)`` picks one of the two from the split's size.

TFDS features map to the conversion layer's ``Field`` types (:func:`tfds_fields`), so the
same feature gives the same array from TFDS and from Hugging Face.

Nothing global changes: TensorFlow is imported lazily, only on the tf.data paths, and is
kept off GPUs (``tf.config.set_visible_devices([], "GPU")``) so JAX keeps the accelerator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from . import _convert as cv
from . import _budget
from ._budget import choose_mode, logger
from ._shuffle import epoch_seed, permute
from ._eager import EagerSource, from_arrays

_SHAPE = "__shape__"  # tf.data side leaf holding the true shape of a ragged feature


# ----------------------------------------------------------------------------- lazy imports


def _hide_gpus(tf: Any) -> None:
    """Keeps TensorFlow off GPUs so that JAX owns them; harmless if TF already started."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialised by someone else: leave them alone
        if tf.config.get_visible_devices("GPU"):
            logger.warning(
                "datarax_fn: TensorFlow was initialised with GPUs visible before datarax_fn could "
                "hide them; TF may reserve GPU memory. Call tf.config.set_visible_devices([], 'GPU') "
                "before using TensorFlow."
            )


def _tf() -> Any:
    """Returns the ``tensorflow`` module, imported on first use with GPUs hidden from it."""
    first = "tensorflow" not in sys.modules
    import tensorflow as tf

    if first or tf.config.get_visible_devices("GPU"):
        _hide_gpus(tf)
    return tf


def _tfds() -> Any:
    """Returns ``tensorflow_datasets`` (which does not import TensorFlow by itself)."""
    if "tensorflow" in sys.modules:  # tfds may touch TF devices; make sure GPUs stay hidden
        _tf()
    import tensorflow_datasets as tfds

    return tfds


# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class TFDSEagerConfig:
    """Returns a validated config for :func:`TFDSEagerSource` (frozen; errors name the field).

    Args:
      name: the TFDS name, e.g. ``"mnist"`` or ``"imdb_reviews/plain_text:1.0.0"``.
      split: any TFDS split expression: ``"train"``, ``"train[:10%]"``, ``"train+test"``.
      data_dir: where the prepared dataset lives (TFDS's default when ``None``).
      as_supervised: keep only the dataset's ``supervised_keys``, under their own names
        (``text``/``label`` for imdb_reviews, ``image``/``label`` for mnist).
      try_gcs: read from TFDS's public GCS bucket (network); exclusive with ``data_dir``.
      download: download and prepare when missing (network). ``False`` by default.
      download_and_prepare_kwargs: extra kwargs for ``builder.download_and_prepare``.
      beam_num_workers: Apache Beam workers when preparing a Beam dataset (>= 1).
      include_keys / exclude_keys: top-level features to keep / drop (exclusive).
      shuffle, seed: shuffle every epoch with the keyed bijection of ``(seed, epoch)``.
      local_files_only: forbid every network access (implies no download, no GCS).
      transform: host function on NumPy column chunks, applied during conversion.
      max_length, truncate: padding of ragged features and text (see the conversion layer).
    """

    name: str
    split: str = "train"
    data_dir: str | None = None
    as_supervised: bool = False
    try_gcs: bool = False
    download: bool = False
    download_and_prepare_kwargs: Mapping[str, Any] | None = None
    beam_num_workers: int = 1
    include_keys: tuple[str, ...] | None = None
    exclude_keys: tuple[str, ...] | None = None
    shuffle: bool = False
    seed: int = 0
    local_files_only: bool = False
    transform: Callable[[dict], dict] | None = None
    max_length: int | Mapping[str, int] | None = None
    truncate: bool = False

    def __post_init__(self) -> None:
        _validate(self)


@dataclasses.dataclass(frozen=True)
class TFDSStreamingConfig(TFDSEagerConfig):
    """Returns a validated config for :func:`TFDSStreamingSource`; adds the streaming knobs.

    Args:
      shuffle_buffer_size: tf.data shuffle buffer (tfrecord datasets). array_record datasets
        shuffle globally with the keyed bijection and ignore it.
      prefetch_buffer: a fixed number of converted chunks read ahead (default 2, never AUTOTUNE).
      read_chunk_size: records read and converted per chunk.
      num_epochs: stop after this many epochs (``None``: forever).
    """

    shuffle_buffer_size: int = 10_000
    prefetch_buffer: int = 2
    read_chunk_size: int = 256
    num_epochs: int | None = None

    def __post_init__(self) -> None:
        _validate(self)
        for fld in ("shuffle_buffer_size", "prefetch_buffer", "read_chunk_size"):
            v = getattr(self, fld)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                extra = " (a fixed size; AUTOTUNE is not allowed so memory stays bounded)" if fld == "prefetch_buffer" else ""
                raise ValueError(f"{type(self).__name__}: {fld} must be an int >= 1{extra}; got {fld}={v!r}.")
        if self.num_epochs is not None and (
            isinstance(self.num_epochs, bool) or not isinstance(self.num_epochs, int) or self.num_epochs < 1
        ):
            raise ValueError(f"{type(self).__name__}: num_epochs must be None or an int >= 1; got num_epochs={self.num_epochs!r}.")


def _validate(cfg: TFDSEagerConfig) -> None:
    cls = type(cfg).__name__
    for fld in ("name", "split"):
        v = getattr(cfg, fld)
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{cls}: {fld} must be a non-empty string; got {fld}={v!r}.")
    if cfg.try_gcs and cfg.data_dir is not None:
        raise ValueError(
            f"{cls}: try_gcs and data_dir are exclusive (try_gcs reads gs://tfds-data/datasets); got "
            f"try_gcs=True, data_dir={cfg.data_dir!r}. Drop one of them."
        )
    if cfg.local_files_only and (cfg.download or cfg.try_gcs):
        raise ValueError(
            f"{cls}: local_files_only=True forbids network access, but got download={cfg.download!r}, "
            f"try_gcs={cfg.try_gcs!r}. Set those to False, or local_files_only=False."
        )
    include, exclude = cv.check_key_options(cfg.include_keys, cfg.exclude_keys, cls)
    object.__setattr__(cfg, "include_keys", include)
    object.__setattr__(cfg, "exclude_keys", exclude)
    b = cfg.beam_num_workers
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise ValueError(f"{cls}: beam_num_workers must be an int >= 1; got beam_num_workers={b!r}.")
    s = cfg.seed
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2**32:
        raise ValueError(f"{cls}: seed must be an int in [0, 2**32); got seed={s!r}.")
    if cfg.transform is not None and not callable(cfg.transform):
        raise TypeError(f"{cls}: transform must be a callable dict -> dict; got transform={cfg.transform!r}.")
    if cfg.download_and_prepare_kwargs is not None and not isinstance(cfg.download_and_prepare_kwargs, Mapping):
        raise TypeError(
            f"{cls}: download_and_prepare_kwargs must be a dict; got {cfg.download_and_prepare_kwargs!r}."
        )


# ----------------------------------------------------------------------------- TFDS features -> Fields


def tfds_fields(features: Any, name: str = "") -> Any:
    """Returns the conversion layer's ``Field`` for a TFDS ``FeatureConnector``.

    ``FeaturesDict`` -> ``Struct``, ``ClassLabel`` -> ``Label``, ``Text`` -> ``Text``,
    ``Image`` -> ``Image``, ``Audio`` -> ``Audio``, ``Sequence(x)`` -> ``Sequence`` (a
    ``Sequence`` of a dict is TFDS's dict of sequences, so it maps to a ``Struct`` of
    ``Sequence``), everything else (``Tensor``, ``Scalar``, ``Video``, ``BBoxFeature``, ...)
    -> ``Tensor(shape, dtype)`` from its tensor info.
    """
    F = _tfds().features
    label = name or "<root>"
    if isinstance(features, F.FeaturesDict):
        return cv.Struct({k: tfds_fields(v, f"{name}.{k}" if name else k) for k, v in features.items()})
    if isinstance(features, F.ClassLabel):
        return cv.Label(tuple(features.names))
    if isinstance(features, F.Text):
        return cv.Text()
    if isinstance(features, F.Image):
        return cv.Image(tuple(features.shape))
    if isinstance(features, F.Audio):
        return cv.Audio(features.sample_rate)
    if isinstance(features, F.Sequence):
        inner, length = features.feature, features._length  # noqa: SLF001 (no public accessor)
        if isinstance(inner, F.FeaturesDict):
            return cv.Struct({k: cv.Sequence(tfds_fields(v, f"{label}.{k}"), length) for k, v in inner.items()})
        return cv.Sequence(tfds_fields(inner, label), length)
    info = features.get_tensor_info()
    if isinstance(info, Mapping):  # a custom connector holding several tensors
        return cv.Struct({k: _info_field(v, f"{label}.{k}") for k, v in info.items()})
    return _info_field(info, label)


def _info_field(info: Any, name: str) -> Any:
    dtype = np.dtype(info.np_dtype)
    if dtype.kind in "OSU":
        if tuple(info.shape) == ():
            return cv.Text()
        raise ValueError(
            f"field {name!r}: a string tensor of shape {tuple(info.shape)} has no array form. Exclude it "
            "with exclude_keys, or pass a transform that tokenises it."
        )
    return cv.Tensor(tuple(info.shape), dtype.name)


def _conv_field(feature: Any, name: str) -> Any:
    """Returns the Field ``convert`` gets for the *decoded* TFDS values of ``feature``.

    TFDS already decodes images to uint8 arrays, so a fixed-shape image converts as a plain
    uint8 ``Tensor`` (a zero-copy pass-through; the result equals the ``Image`` rule), and
    sequences convert as tensors with a ragged leading axis.
    """
    F = _tfds().features
    if isinstance(features := feature, F.FeaturesDict):
        return cv.Struct({k: _conv_field(v, f"{name}.{k}") for k, v in features.items()})
    if isinstance(feature, (F.ClassLabel, F.Text)):
        return tfds_fields(feature, name)
    if isinstance(feature, F.Image):
        shape = tuple(feature.shape)
        return cv.Tensor(shape, "uint8") if None not in shape else cv.Image(shape)
    if isinstance(feature, F.Audio):
        return cv.Tensor(tuple(feature.shape), "float32")
    if isinstance(feature, F.Sequence):
        inner = feature.feature
        if isinstance(inner, F.FeaturesDict):
            return cv.Struct({k: _seq_leaf(F.Sequence(v, length=feature._length), f"{name}.{k}") for k, v in inner.items()})  # noqa: SLF001
        return _seq_leaf(feature, name)
    info = feature.get_tensor_info()
    if isinstance(info, Mapping):
        return cv.Struct({k: _info_field(v, f"{name}.{k}") for k, v in info.items()})
    return _info_field(info, name)


def _seq_leaf(feature: Any, name: str) -> Any:
    info = feature.get_tensor_info()
    if isinstance(info, Mapping) or np.dtype(info.np_dtype).kind in "OSU":
        raise ValueError(
            f"field {name!r}: a Sequence of {type(feature.feature).__name__} has no array form. Exclude it "
            "with exclude_keys, or pass a transform that turns it into numbers."
        )
    shape = tuple(info.shape)
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"field {name!r}: shape {shape} is ragged beyond the first axis (a nested Sequence); only a "
            "ragged leading axis can be padded. Exclude it with exclude_keys."
        )
    return cv.Tensor(shape, np.dtype(info.np_dtype).name)


# ----------------------------------------------------------------------------- builder / plan


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything resolved from a config: the builder, the keys and their fields."""

    builder: Any
    split: str
    keys: tuple[str, ...]  # top-level features read (the supervised keys under as_supervised)
    fields: dict[str, Any]  # descriptive Fields (tfds_fields)
    conv: dict[str, Any]  # Fields handed to convert for the decoded values
    array_record: bool  # random access through tfds.data_source (no TensorFlow)
    num_records: int | None


@contextlib.contextmanager
def _no_download_retries() -> Iterator[None]:
    """Makes a user-requested download fail fast instead of retrying for minutes."""
    from tensorflow_datasets.core.download import downloader

    old = downloader.MAX_RETRIES
    downloader.MAX_RETRIES = 0
    try:
        yield
    finally:
        downloader.MAX_RETRIES = old


def _open_builder(cfg: TFDSEagerConfig) -> Any:
    tfds = _tfds()
    try:
        builder = tfds.builder(cfg.name, data_dir=cfg.data_dir, try_gcs=bool(cfg.try_gcs))
    except tfds.core.registered.DatasetNotFoundError as err:
        raise ValueError(
            f"name={cfg.name!r}: TFDS has no such dataset in its catalog or in data_dir={cfg.data_dir!r}. "
            "Check the spelling (tfds.list_builders(with_community_datasets=False) lists the catalog "
            "offline), or point data_dir at a folder holding a prepared copy."
        ) from err
    if cfg.download:
        kwargs = dict(cfg.download_and_prepare_kwargs or {})
        if "download_config" not in kwargs:
            kwargs["download_config"] = tfds.download.DownloadConfig(
                try_download_gcs=bool(cfg.try_gcs), beam_options=_beam_options(cfg.beam_num_workers)
            )
        with _no_download_retries():
            builder.download_and_prepare(**kwargs)
    return builder


def _beam_options(workers: int) -> Any:
    if workers == 1:
        return None
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError as err:
        raise ImportError(
            f"beam_num_workers={workers} needs apache_beam to prepare the dataset; install apache-beam "
            "or set beam_num_workers=1."
        ) from err
    return PipelineOptions(flags=[f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"])


def _not_prepared(cfg: TFDSEagerConfig, builder: Any, err: Exception) -> FileNotFoundError:
    return FileNotFoundError(
        f"TFDS dataset name={cfg.name!r} is not prepared under data_dir={str(builder.data_dir)!r}, and "
        f"download={cfg.download!r}. Prepare it once (builder.download_and_prepare() or `tfds build`), "
        "point data_dir at a prepared copy, or pass download=True (network)."
        f" TFDS said: {str(err).splitlines()[0]}"
    )


def _plan(cfg: TFDSEagerConfig) -> _Plan:
    builder = _open_builder(cfg)
    info = builder.info
    features = info.features
    available = list(features.keys())
    if cfg.as_supervised:
        sk = info.supervised_keys
        if not sk:
            raise ValueError(
                f"as_supervised=True but TFDS dataset {cfg.name!r} declares no supervised_keys; set "
                f"as_supervised=False and pick features with include_keys (available: {available})."
            )
        if not all(isinstance(k, str) for k in sk):
            raise ValueError(
                f"as_supervised=True: {cfg.name!r} has nested supervised_keys {sk!r}; use include_keys "
                f"with top-level features instead (available: {available})."
            )
        available = [k for k in sk if k in features]
    fields = {k: tfds_fields(features[k], k) for k in available}
    fields = cv.select_keys(fields, cfg.include_keys, cfg.exclude_keys)
    keys = tuple(fields)
    conv = {k: _conv_field(features[k], k) for k in keys}
    fmt = info.file_format
    array_record = fmt is not None and getattr(fmt, "value", fmt) in ("array_record", "parquet")
    return _Plan(builder, cfg.split, keys, fields, conv, array_record, _split_len(info, cfg.split))


def _split_len(info: Any, split: str) -> int | None:
    try:
        n = int(info.splits[split].num_examples)
    except Exception:  # unknown split names (e.g. mocked datasets): the reader counts them
        return None
    return n or None


def _data_source(plan: _Plan, cfg: TFDSEagerConfig) -> Any:
    """Returns the random-access ``tfds.data_source`` of the planned split (no TensorFlow)."""
    tfds = _tfds()
    features = plan.builder.info.features
    # Skip TFDS's per-record PIL decode of fixed-size images: the conversion layer decodes the
    # raw bytes in parallel threads instead.
    decoders = {k: tfds.decode.SkipDecoding() for k, f in features.items() if isinstance(f, tfds.features.Image)}
    try:
        return plan.builder.as_data_source(split=plan.split, decoders=decoders or None)
    except AssertionError as err:
        raise _not_prepared(cfg, plan.builder, err) from err


def _ds_fields(plan: _Plan) -> dict[str, Any]:
    """Returns convert's Fields for data-source rows (images arrive encoded)."""
    tfds = _tfds()
    features = plan.builder.info.features
    return {k: (cv.Image(tuple(features[k].shape)) if isinstance(features[k], tfds.features.Image) else f) for k, f in plan.conv.items()}


def _rows_to_columns(rows: list[dict], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Returns columns from data-source rows, shaped for ``convert`` by each Field."""
    return {k: _column([r[k] for r in rows], f) for k, f in fields.items()}


def _column(values: list, field: Any) -> Any:
    if isinstance(field, cv.Struct):
        return {k: _column([v[k] for v in values], sub) for k, sub in field.fields.items()}
    if isinstance(field, cv.Tensor):
        shape = tuple(field.shape)
        if shape and shape[0] is None and None not in shape[1:]:
            items = [np.asarray(v, field.dtype).reshape((-1, *shape[1:])) for v in values]
            lengths = np.fromiter((len(a) for a in items), np.int64, len(items))
            flat = np.concatenate(items) if items else np.zeros((0, *shape[1:]), field.dtype)
            return _ragged_arrow(lengths, flat)
        if None not in shape:
            return np.asarray(values, field.dtype) if values else np.zeros((0, *shape), field.dtype)
    return values


def _ragged_arrow(lengths: np.ndarray, flat: np.ndarray) -> Any:
    """Returns a pyarrow list array of rows ``flat[off[i]:off[i+1]]`` (inner axes fixed).

    ``convert`` pads an Arrow list column to ``max_length`` even when every row of a chunk
    has the same length, so streamed chunks keep one shape (Python lists of equal-length rows
    would be stacked unpadded). pyarrow is a dependency of tensorflow_datasets.
    """
    import pyarrow as pa

    arr = pa.array(np.ascontiguousarray(flat).reshape(-1))
    for d in reversed(flat.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, int(d))
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), arr)


def _field_at(fields: Mapping[str, Any], path: tuple) -> Any:
    f: Any = cv.Struct(fields)
    for k in path:
        f = f.fields[k] if isinstance(f, cv.Struct) else None
    return f


# ----------------------------------------------------------------------------- tf.data reading


def _tf_dataset(plan: _Plan, cfg: TFDSEagerConfig, one_shot: bool = False) -> Any:
    """Returns the split as an unbatched ``tf.data.Dataset`` of the planned keys, in file order.

    ``one_shot`` (the eager whole-split read) keeps TFDS's own prefetch after decoding; a
    stream never does, so its only read-ahead is the fixed ``prefetch_buffer``.
    """
    _tf()
    tfds = _tfds()
    features = plan.builder.info.features
    decoders = None
    if set(plan.keys) != set(features.keys()):  # never decode features that are dropped
        decoders = tfds.decode.PartialDecoding({k: True for k in plan.keys})
    read_config = tfds.ReadConfig(try_autocache=False, skip_prefetch=not one_shot)
    try:
        ds = plan.builder.as_dataset(
            split=plan.split, shuffle_files=False, decoders=decoders, read_config=read_config
        )
    except AssertionError as err:
        raise _not_prepared(cfg, plan.builder, err) from err
    keys = plan.keys
    if set(ds.element_spec) != set(keys):
        ds = ds.map(lambda ex: {k: ex[k] for k in keys})
    return ds


def _flatten(tree: Mapping[str, Any], prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out += _flatten(v, (*prefix, k))
        else:
            out.append(((*prefix, k), v))
    return out


def _ragged_paths(spec: Mapping[str, Any]) -> list[tuple]:
    """Returns the paths of leaves whose per-record shape is not fully known."""
    tf = _tf()
    paths = []
    for path, s in _flatten(spec):
        if isinstance(s, tf.RaggedTensorSpec) or not isinstance(s, tf.TensorSpec):
            raise ValueError(
                f"field {'.'.join(path)!r}: TFDS yields a {type(s).__name__} (a nested ragged Sequence); "
                "only a ragged leading axis can be padded. Exclude it with exclude_keys."
            )
        if not s.shape.is_fully_defined():
            paths.append(path)
    return paths


def _batched(ds: Any, batch: int, ragged: list[tuple], drop_remainder: bool = False) -> Any:
    """Returns ``ds`` batched; ragged leaves are padded and their true shapes ride along."""
    tf = _tf()
    if not ragged:
        return ds.batch(batch, drop_remainder=drop_remainder)

    def with_shapes(ex):
        shapes = {"/".join(p): tf.shape(_get(ex, p)) for p in ragged}
        return {**ex, _SHAPE: shapes}

    return ds.map(with_shapes).padded_batch(batch, drop_remainder=drop_remainder)


def _get(tree: Any, path: tuple) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: dict, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        tree = tree[k]
    tree[path[-1]] = value


def _to_numpy(x: Any) -> np.ndarray:
    """Returns a host NumPy view of a CPU tensor: zero-copy through DLPack where it applies."""
    if x.dtype.is_numeric or x.dtype.is_bool:
        try:
            return np.from_dlpack(x)
        except (TypeError, BufferError, RuntimeError):
            pass
    return x.numpy()


def _columns(batch: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Returns host columns of a tf batch; ragged leaves lose their padding again (exactly).

    A ragged leading axis becomes an Arrow list column (vectorised); other unknown dims
    (images of different sizes) become one array per record for ``convert`` to judge.
    """
    shapes = batch.get(_SHAPE, {})
    out: dict[str, Any] = {}
    for path, t in _flatten({k: v for k, v in batch.items() if k != _SHAPE}):
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = _to_numpy(t)
    for joined, shp in shapes.items():
        path = tuple(joined.split("/"))
        padded, sizes = _get(out, path), _to_numpy(shp)
        field = _field_at(fields, path)
        if isinstance(field, cv.Tensor) and None not in tuple(field.shape)[1:] and padded.ndim >= 2:
            lengths = sizes[:, 0].astype(np.int64)
            mask = np.arange(padded.shape[1])[None, :] < lengths[:, None]
            _set(out, path, _ragged_arrow(lengths, padded[mask]))
        else:
            _set(out, path, [padded[i][tuple(slice(0, int(d)) for d in sizes[i])] for i in range(len(sizes))])
    return out


# ----------------------------------------------------------------------------- eager


def _convert(columns: Mapping[str, Any], fields: Mapping[str, Any], cfg: TFDSEagerConfig) -> dict[str, Any]:
    return cv.convert(columns, fields, max_length=cfg.max_length, transform=cfg.transform, truncate=cfg.truncate)


def _load_columns_tf(plan: _Plan, cfg: TFDSEagerConfig) -> dict[str, Any]:
    """Returns the whole split as host columns, read with one batch over every record."""
    tf = _tf()
    ds = _tf_dataset(plan, cfg, one_shot=True)
    ragged = _ragged_paths(ds.element_spec)
    n = int(ds.cardinality())
    if n > 0:
        return _columns(tf.data.Dataset.get_single_element(_batched(ds, n, ragged)), plan.conv)
    # Unknown length (e.g. a filtered or mocked split): read in chunks and concatenate.
    chunks = [_columns(b, plan.conv) for b in _batched(ds, 8192, ragged)]
    if not chunks:
        raise ValueError(f"split={cfg.split!r} of {cfg.name!r} has no records; an eager source needs N > 0.")
    return _concat_columns(chunks)


def _concat_columns(chunks: list[dict]) -> dict:
    out = {}
    for k, v in chunks[0].items():
        parts = [c[k] for c in chunks]
        if isinstance(v, dict):
            out[k] = _concat_columns(parts)
        elif isinstance(v, list):
            out[k] = [x for p in parts for x in p]
        elif isinstance(v, np.ndarray):
            out[k] = np.concatenate(parts)
        else:  # an Arrow list column
            import pyarrow as pa

            out[k] = pa.concat_arrays(parts)
    return out


def _load_columns_ds(plan: _Plan, cfg: TFDSEagerConfig, chunk: int = 16_384) -> dict[str, Any]:
    source = _data_source(plan, cfg)
    n = len(source)
    rows: list = []
    for lo in range(0, n, chunk):
        rows += source.__getitems__(list(range(lo, min(lo + chunk, n))))
    return _rows_to_columns(rows, _ds_fields(plan))


def TFDSEagerSource(config: TFDSEagerConfig) -> EagerSource:  # noqa: N802 (the users' seed API name)
    """Returns an ``EagerSource`` holding the whole split, converted and moved to the device once.

    tfrecord datasets are read as one whole-split tensor per feature through ``tf.data``;
    array_record datasets through batched ``tfds.data_source`` access (TensorFlow is not
    imported). ``dataset_info(state)`` gives the TFDS ``DatasetInfo``. For example
    ``TFDSEagerSource(TFDSEagerConfig(name="mnist", split="train[:10%]", data_dir=...))``
    gives 6,000 records of uint8 ``(28, 28, 1)`` images and int32 labels.
    """
    if not isinstance(config, TFDSEagerConfig) or isinstance(config, TFDSStreamingConfig):
        raise TypeError(f"TFDSEagerSource needs a TFDSEagerConfig; got {type(config).__name__}.")
    plan = _plan(config)
    if plan.array_record:
        arrays = _convert(_load_columns_ds(plan, config), _ds_fields(plan), config)
    else:
        arrays = _convert(_load_columns_tf(plan, config), plan.conv, config)
    if not arrays or not len(next(iter(_flatten(arrays)))[1]):
        raise ValueError(f"split={config.split!r} of {config.name!r} has no records; an eager source needs N > 0.")
    # Without a transform every leaf is freshly converted (or copied off a TF tensor by
    # owned_arrays) and held nowhere else, so device_put may alias it instead of copying.
    fresh = config.transform is None
    if fresh:
        arrays = cv.owned_arrays(arrays)
    return from_arrays(
        arrays, shuffle=config.shuffle, seed=int(config.seed), name=f"tfds:{config.name}:{config.split}",
        info=plan.builder.info, copy=not fresh,
    )


# ----------------------------------------------------------------------------- streaming backends


class _Backend:
    """Shared parts of the two TFDS streaming backends."""

    plan: _Plan
    cfg: TFDSStreamingConfig

    def fingerprint(self) -> str:
        """Returns a hash of what fixes the stream: dataset, version, split, keys and options."""
        c, info = self.cfg, self.plan.builder.info
        # Sorted: a registered builder class and a ReadOnlyBuilder list features in different orders.
        ml = sorted(c.max_length.items()) if isinstance(c.max_length, Mapping) else c.max_length
        parts = (info.full_name, c.split, sorted(self.plan.keys), self.num_records(), c.as_supervised, ml,
                 c.truncate, c.shuffle_buffer_size if not self.plan.array_record else None)
        return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


class _TFDataBackend(_Backend):
    """Streams a tfrecord split through tf.data: shuffle(seed of (seed, epoch)), skip, batch, prefetch.

    Exact resume replays the epoch's shuffled order up to ``start`` with ``skip``: the cost is
    reading and decoding ``start`` records (no conversion, nothing leaves TensorFlow).
    """

    def __init__(self, plan: _Plan, cfg: TFDSStreamingConfig):
        self.plan, self.cfg = plan, cfg
        self.info = plan.builder.info
        base = _tf_dataset(plan, cfg)
        self._ragged = _ragged_paths(base.element_spec)
        n = int(base.cardinality())
        self._n = n if n > 0 else plan.num_records
        first = next(iter(_batched(base.take(1), 1, self._ragged)), None)
        if first is None:
            raise ValueError(f"split={cfg.split!r} of {cfg.name!r} has no records.")
        self._spec = cv.element_spec_of(_convert(_columns(first, plan.conv), plan.conv, cfg))

    def num_records(self) -> int | None:
        return self._n

    def element_spec(self) -> dict[str, Any]:
        return self._spec

    def open(self, epoch: int, seed: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        cfg = self.cfg
        ds = _tf_dataset(self.plan, cfg)
        if cfg.shuffle:
            ds = ds.shuffle(cfg.shuffle_buffer_size, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False)
        if start:
            ds = ds.skip(start)
        ds = _batched(ds, cfg.read_chunk_size, self._ragged).prefetch(cfg.prefetch_buffer)
        for batch in ds:
            yield _convert(_columns(batch, self.plan.conv), self.plan.conv, cfg)


class _DataSourceBackend(_Backend):
    """Streams an array_record split by random access in the order of ``permute(., n, seed, epoch)``.

    Exact resume is O(1): the record at epoch position ``p`` is ``permute(p, n, seed, epoch)``,
    so a restored state reads from ``start`` directly; nothing is replayed.
    """

    def __init__(self, plan: _Plan, cfg: TFDSStreamingConfig):
        self.plan, self.cfg = plan, cfg
        self.info = plan.builder.info
        self._source = _data_source(plan, cfg)
        self._fields = _ds_fields(plan)
        self._n = len(self._source)
        if not self._n:
            raise ValueError(f"split={cfg.split!r} of {cfg.name!r} has no records.")
        self._spec = cv.element_spec_of(self._read(np.arange(1)))

    def num_records(self) -> int:
        return self._n

    def element_spec(self) -> dict[str, Any]:
        return self._spec

    def _read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        rows = self._source.__getitems__(idx.tolist())
        return _convert(_rows_to_columns(rows, self._fields), self._fields, self.cfg)

    def open(self, epoch: int, seed: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        n, chunk = self._n, self.cfg.read_chunk_size
        for lo in range(start, n, chunk):
            pos = np.arange(lo, min(lo + chunk, n))
            yield self._read(permute(pos, n, seed, epoch) if self.cfg.shuffle else pos)


def _streaming_checks(plan: _Plan, cfg: TFDSStreamingConfig) -> None:
    """Streaming batches need static shapes: ragged and text fields need ``max_length``."""
    need = []

    def walk(f: Any, name: str, top: str) -> None:
        if isinstance(f, cv.Struct):
            for k, sub in f.fields.items():
                walk(sub, f"{name}.{k}", top)
        elif isinstance(f, cv.Text) or (isinstance(f, cv.Tensor) and f.shape and f.shape[0] is None):
            if cv._lookup(cfg.max_length, name) is None:  # noqa: SLF001 (shared rule for nested names)
                need.append(name)
        elif isinstance(f, cv.Image) and None in f.shape and cfg.transform is None:
            need.append(name)

    for k, f in plan.conv.items():
        walk(f, k, k)
    if need:
        raise ValueError(
            f"TFDSStreamingConfig: fields {need} have a variable length (text, ragged sequences or "
            "images of different sizes), and streamed batches need static shapes. Pass max_length="
            f"{{{need[0].split('.')[0]!r}: L}} (or max_length=L) to pad them with an int32 '<key>_length' "
            "leaf (truncate=True to cut longer rows), a transform that makes them fixed, or exclude them."
        )


def _backend(config: TFDSStreamingConfig) -> Any:
    plan = _plan(config)
    _streaming_checks(plan, config)
    return (_DataSourceBackend if plan.array_record else _TFDataBackend)(plan, config)


def TFDSStreamingSource(config: TFDSStreamingConfig) -> Any:  # noqa: N802 (the users' seed API name)
    """Returns a ``StreamingSource`` reading the split chunk by chunk on the host.

    tfrecord datasets stream through ``tf.data`` (``shuffle`` with a buffer of
    ``shuffle_buffer_size`` seeded from ``(seed, epoch)``, then a fixed ``prefetch``);
    resuming replays the epoch with ``skip`` (cost: reading ``position`` records).
    array_record datasets stream by random access in the order of the keyed ``permute``
    (a full shuffle, the eager source's order); resuming costs nothing.
    """
    if not isinstance(config, TFDSStreamingConfig):
        raise TypeError(f"TFDSStreamingSource needs a TFDSStreamingConfig; got {type(config).__name__}.")
    from ._streaming import make_streaming

    return make_streaming(
        _backend(config), shuffle=config.shuffle, seed=int(config.seed),
        name=f"tfds:{config.name}:{config.split}", num_epochs=config.num_epochs, prefetch=config.prefetch_buffer,
    )


# ----------------------------------------------------------------------------- from_tfds


def _estimated_bytes(plan: _Plan) -> int | None:
    """Returns the bytes the converted split needs: from fixed feature shapes, else the file size."""
    info = plan.builder.info
    n = plan.num_records
    if n is None:
        return None
    per = 0
    for _, ti in _flatten({k: info.features[k].get_tensor_info() for k in plan.keys}):
        shape = tuple(ti.shape)
        if None in shape or np.dtype(ti.np_dtype).kind in "OSU":
            per = None
            break
        per += int(np.prod(shape, dtype=np.int64)) * min(np.dtype(ti.np_dtype).itemsize, 4)
    if per is not None:
        return per * n
    total_n = info.splits.total_num_examples
    total_b = sum(int(s.num_bytes) for s in info.splits.values())
    if not total_n or not total_b:
        return None
    return int(total_b * n / total_n * 2)  # decoded text/ragged rows are about twice the records


def from_tfds(
    name: str,
    split: str = "train",
    *,
    eager: bool | None = None,
    memory_budget: int | None = None,
    **options: Any,
) -> Any:
    """Returns an ``EagerSource`` when the split fits the memory budget, else a ``StreamingSource``.

    Args:
      name, split: the TFDS dataset and split expression.
      eager: ``True`` / ``False`` forces the mode; ``None`` decides from the split's size
        (fixed feature shapes x records, else the files' ``num_bytes``) against the budget.
      memory_budget: bytes (default: half the available memory, the rule ``from_hf`` uses).
      **options: ``TFDSStreamingConfig`` fields; eager mode ignores the streaming-only ones.

    The choice and its reason are logged on ``logging.getLogger("datarax_fn")``.
    """
    stream_fields = {f.name for f in dataclasses.fields(TFDSStreamingConfig)}
    eager_fields = {f.name for f in dataclasses.fields(TFDSEagerConfig)}
    unknown = set(options) - stream_fields
    if unknown:
        raise TypeError(
            f"from_tfds: unknown options {sorted(unknown)}; valid options are {sorted(stream_fields - {'name', 'split'})}."
        )
    ecfg = TFDSEagerConfig(name=name, split=split, **{k: v for k, v in options.items() if k in eager_fields})
    scfg = TFDSStreamingConfig(name=name, split=split, **options)
    if eager is None:
        budget = _budget.memory_budget() if memory_budget is None else int(memory_budget)
        eager, reason = choose_mode(_estimated_bytes(_plan(ecfg)), budget)
    else:
        reason = f"eager={eager} was asked for"
    logger.info("from_tfds(%s, %s): %s, because %s", name, split, "eager" if eager else "streaming", reason)
    return TFDSEagerSource(ecfg) if eager else TFDSStreamingSource(scfg)


__all__ = [
    "TFDSEagerConfig",
    "TFDSEagerSource",
    "TFDSStreamingConfig",
    "TFDSStreamingSource",
    "from_tfds",
    "tfds_fields",
]
