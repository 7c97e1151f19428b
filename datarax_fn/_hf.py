"""Hugging Face ``datasets`` sources: eager (``EagerSource``) and streaming (``StreamingSource``).

``datasets`` and PIL are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from . import _convert as cv
from ._budget import choose_mode, logger
from ._budget import memory_budget as _memory_budget
from ._shuffle import epoch_seed, permute

# ----------------------------------------------------------------------------- configs


def _check_common(cfg: Any) -> None:
    cls = type(cfg).__name__
    if not isinstance(cfg.name, str) or not cfg.name.strip():
        raise ValueError(f"{cls}: name must be a non-empty string (hub name, folder or builder); got name={cfg.name!r}.")
    if not isinstance(cfg.split, str) or not cfg.split.strip():
        raise ValueError(f"{cls}: split must be a non-empty string such as 'train' or 'train[:10%]'; got split={cfg.split!r}.")
    include, exclude = cv.check_key_options(cfg.include_keys, cfg.exclude_keys, cls)
    object.__setattr__(cfg, "include_keys", include)
    object.__setattr__(cfg, "exclude_keys", exclude)
    if not isinstance(cfg.trust_remote_code, bool):
        raise TypeError(f"{cls}: trust_remote_code must be True or False; got {cfg.trust_remote_code!r}.")
    if not isinstance(cfg.local_files_only, bool):
        raise TypeError(f"{cls}: local_files_only must be True or False; got {cfg.local_files_only!r}.")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise ValueError(f"{cls}: seed must be an int in [0, 2**32); got seed={cfg.seed!r}.")
    if cfg.transform is not None and not callable(cfg.transform):
        raise TypeError(f"{cls}: transform must be a function dict -> dict; got {type(cfg.transform).__name__}.")
    if cfg.download_kwargs is not None and not isinstance(cfg.download_kwargs, Mapping):
        raise TypeError(f"{cls}: download_kwargs must be a dict of load_dataset arguments; got {cfg.download_kwargs!r}.")
    ml = cfg.max_length
    if ml is not None:
        vals = ml.values() if isinstance(ml, Mapping) else [ml]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
            raise ValueError(f"{cls}: max_length must be an int >= 1 or a {{key: int >= 1}} dict; got max_length={ml!r}.")
    if cfg.data_files is not None and not isinstance(cfg.data_files, (str, list, tuple, Mapping)):
        raise TypeError(f"{cls}: data_files must be a path, a list of paths or a {{split: paths}} dict; got {cfg.data_files!r}.")


@dataclasses.dataclass(frozen=True)
class HFEagerConfig:
    """Returns a validated description of an HF split to load whole into device memory.

    ``name`` is a hub name, a local folder of data files, a ``save_to_disk`` folder, or a
    builder (``"parquet"``, ``"csv"``, ``"json"``) used with ``data_files``.

    ```python
    import datarax_fn as dfn
    cfg = dfn.HFEagerConfig(name="parquet", split="train", data_files={"train": "x.parquet"})
    ```
    """

    name: str
    split: str
    config_name: str | None = None
    data_dir: str | None = None
    data_files: Any = None
    revision: str | None = None
    cache_dir: str | None = None
    trust_remote_code: bool = False
    include_keys: Any = None
    exclude_keys: Any = None
    shuffle: bool = False
    seed: int = 0
    download_kwargs: Mapping[str, Any] | None = None
    local_files_only: bool = False
    transform: Callable[[dict], dict] | None = None
    max_length: int | Mapping[str, int] | None = None
    truncate: bool = False
    progress: bool | None = None
    num_threads: int | None = None

    def __post_init__(self):
        _check_common(self)


@dataclasses.dataclass(frozen=True)
class HFStreamingConfig(HFEagerConfig):
    """Returns a validated description of an HF split to stream from the host.

    Adds ``shuffle_buffer_size`` (records in HF's shuffle buffer), ``num_epochs`` (None:
    forever), ``prefetch`` (chunks read ahead) and ``chunk_size`` (records per chunk).
    Ragged fields need ``max_length`` so that batch shapes are static.
    """

    shuffle_buffer_size: int = 1000
    num_epochs: int | None = None
    prefetch: int = 2
    chunk_size: int = 512

    def __post_init__(self):
        _check_common(self)
        for field in ("shuffle_buffer_size", "prefetch", "chunk_size"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"HFStreamingConfig: {field} must be an int >= 1; got {field}={v!r}.")
        if self.num_epochs is not None and (not isinstance(self.num_epochs, int) or self.num_epochs < 1):
            raise ValueError(f"HFStreamingConfig: num_epochs must be None or an int >= 1; got num_epochs={self.num_epochs!r}.")


# ----------------------------------------------------------------------------- features


def fields_from_hf(features: Any, prefix: str = "") -> dict[str, Any]:
    """Returns the ``_convert`` field for every HF feature (a ``Features`` or dict)."""
    return {k: _field(f, f"{prefix}{k}") for k, f in features.items()}


def _field(f: Any, name: str) -> Any:
    import datasets as hd

    if isinstance(f, dict):
        return cv.Struct(fields_from_hf(f, f"{name}."))
    if isinstance(f, hd.ClassLabel):
        return cv.Label(tuple(f.names))
    if isinstance(f, hd.Image):
        return cv.Image(mode=f.mode)
    if isinstance(f, hd.Audio):
        return cv.Audio(f.sampling_rate)
    if isinstance(f, hd.Value):
        dt = f.dtype
        if dt in ("string", "large_string", "binary", "large_binary"):
            return cv.Text()
        if dt in ("bool", "float16", "float32", "float64", "int8", "int16", "int32", "int64",
                  "uint8", "uint16", "uint32", "uint64"):
            return cv.Tensor((), dt)
        raise ValueError(
            f"field {name!r}: HF dtype {dt!r} has no array conversion. Exclude it with exclude_keys, "
            "or cast it first (ds.cast_column) to a number or string."
        )
    if isinstance(f, (hd.Array2D, hd.Array3D, hd.Array4D, hd.Array5D)):
        return cv.Tensor(tuple(f.shape), f.dtype)
    if isinstance(f, (hd.List, hd.LargeList)):
        length = getattr(f, "length", -1)
        return cv.Sequence(_field(f.feature, name), None if length in (-1, None) else length)
    if isinstance(f, hd.Translation):
        return cv.Struct({lang: cv.Text() for lang in f.languages})
    raise ValueError(
        f"field {name!r}: HF feature {type(f).__name__} is not supported. Exclude it with exclude_keys "
        "or turn it into arrays with a transform."
    )


def _static_check(fields: Mapping[str, Any], max_length: Any, prefix: str = "") -> None:
    """Raises unless every ragged field has a max_length (streaming needs static shapes)."""
    for k, f in fields.items():
        name = f"{prefix}{k}"
        if isinstance(f, cv.Struct):
            _static_check(f.fields, max_length, f"{name}.")
            continue
        ragged = (
            isinstance(f, (cv.Text, cv.Audio))
            or (isinstance(f, cv.Sequence) and f.length is None)
            or (isinstance(f, cv.Tensor) and f.shape and f.shape[0] is None)
        )
        if ragged and cv._lookup(max_length, name) is None:
            raise ValueError(
                f"field {name!r}: a ragged {type(f).__name__} needs a fixed max_length when streaming, so "
                f"batch shapes are static. Pass max_length={{{name.split('.')[0]!r}: L}}, or exclude the field."
            )


# ----------------------------------------------------------------------------- loading


_OFFLINE_LOCK = threading.Lock()


@contextlib.contextmanager
def _offline(enabled: bool):
    """Makes ``datasets`` / ``huggingface_hub`` skip every network call inside the block."""
    if not enabled:
        yield
        return
    import datasets.config as dc
    import huggingface_hub.constants as hc

    with _OFFLINE_LOCK:
        saved = (dc.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE, getattr(dc, "HF_DATASETS_OFFLINE", None))
        dc.HF_HUB_OFFLINE = hc.HF_HUB_OFFLINE = True
        if hasattr(dc, "HF_DATASETS_OFFLINE"):
            dc.HF_DATASETS_OFFLINE = True
        try:
            yield
        finally:
            dc.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE = saved[0], saved[1]
            if saved[2] is not None:
                dc.HF_DATASETS_OFFLINE = saved[2]


def _is_saved_folder(path: str) -> bool:
    return os.path.isdir(path) and (
        os.path.exists(os.path.join(path, "dataset_dict.json"))
        or os.path.exists(os.path.join(path, "state.json"))
    )


def _pick_split(dd: Any, split: str, where: str) -> Any:
    if split not in dd:
        raise ValueError(f"split={split!r} is not in {where}; available splits are {list(dd)}.")
    return dd[split]


def _load(cfg: HFEagerConfig, streaming: bool) -> Any:
    """Returns an HF ``Dataset`` (or ``IterableDataset`` when streaming from the hub/files)."""
    import datasets as hd

    if _is_saved_folder(cfg.name):
        ds = hd.load_from_disk(cfg.name)
        if isinstance(ds, hd.DatasetDict):
            ds = _pick_split(ds, cfg.split, f"the save_to_disk folder {cfg.name!r}")
        return ds
    if cfg.trust_remote_code:
        raise ValueError(
            f"trust_remote_code=True: datasets {hd.__version__} no longer runs dataset scripts, so remote "
            f"code cannot be trusted or run for {cfg.name!r}. Use a dataset with data files (parquet, csv, "
            "json) or its parquet conversion (revision='refs/convert/parquet')."
        )
    kwargs: dict[str, Any] = dict(
        name=cfg.config_name, split=cfg.split, data_dir=cfg.data_dir, data_files=cfg.data_files,
        revision=cfg.revision, cache_dir=cfg.cache_dir, streaming=streaming,
    )
    if isinstance(kwargs["data_files"], tuple):
        kwargs["data_files"] = list(kwargs["data_files"])
    if cfg.local_files_only:
        kwargs["download_config"] = hd.DownloadConfig(local_files_only=True, cache_dir=cfg.cache_dir)
    kwargs.update(cfg.download_kwargs or {})
    with _offline(cfg.local_files_only):
        ds = hd.load_dataset(cfg.name, **kwargs)
    if isinstance(ds, (hd.DatasetDict, hd.IterableDatasetDict)):
        ds = _pick_split(ds, cfg.split, repr(cfg.name))
    return ds


def _fields_for(ds: Any, cfg: HFEagerConfig) -> dict[str, Any]:
    features = ds.features
    if features is None:  # some streamed json/csv sets resolve their schema lazily
        ds = ds._resolve_features()
        features = ds.features
    return cv.select_keys(fields_from_hf(features), cfg.include_keys, cfg.exclude_keys)


def _info(ds: Any, meta: Mapping[str, Any]) -> Any:
    """Returns a copy of the DatasetInfo whose Audio features carry the decoded sampling rate."""
    import datasets as hd

    info = copy.deepcopy(ds.info)
    for key, m in meta.items():
        if "." not in key and info.features is not None and key in info.features:
            f = info.features[key]
            if isinstance(f, hd.Audio) and f.sampling_rate is None:
                info.features[key] = hd.Audio(sampling_rate=m["sampling_rate"], decode=f.decode)
    return info


def _convert_table(table: Any, fields: Mapping[str, Any], cfg: Any, **kw: Any) -> tuple[dict, dict]:
    cols = {k: table.column(k) for k in fields}
    return cv.convert_with_meta(
        cols, fields, max_length=cfg.max_length, transform=cfg.transform, truncate=cfg.truncate,
        num_threads=cfg.num_threads, **kw,
    )


# ----------------------------------------------------------------------------- eager


def _eager_from_dataset(ds: Any, cfg: HFEagerConfig) -> Any:
    from ._eager import from_arrays

    fields = _fields_for(ds, cfg)
    table = ds.select_columns(list(fields)).with_format("arrow")[:]
    arrays, meta = _convert_table(table, fields, cfg, progress=cfg.progress, desc=f"{cfg.name}[{cfg.split}]")
    del table
    if not arrays or not len(next(iter(_leaf_arrays(arrays)))):
        raise ValueError(f"{cfg.name!r} split {cfg.split!r} has no records; an empty split cannot be iterated.")
    # Without a transform every leaf is a buffer the conversion just allocated (or a copy of an
    # Arrow view), held nowhere else: let device_put alias it rather than copy the whole split.
    fresh = cfg.transform is None
    if fresh:
        arrays = cv.owned_arrays(arrays)
    return from_arrays(arrays, shuffle=cfg.shuffle, seed=cfg.seed, name=f"hf:{cfg.name}/{cfg.split}",
                       info=_info(ds, meta), copy=not fresh)


def _leaf_arrays(tree: Mapping) -> Iterator[np.ndarray]:
    for v in tree.values():
        if isinstance(v, Mapping):
            yield from _leaf_arrays(v)
        else:
            yield v


def HFEagerSource(config: HFEagerConfig) -> Any:
    """Returns an ``EagerSource`` holding the whole HF split as device arrays.

    ```python
    import datasets, datarax_fn as dfn
    ds = datasets.Dataset.from_dict({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    state = dfn.from_hf(ds)
    state, batch = dfn.get_batch(state, 2)
    assert batch["x"].tolist() == [1.0, 2.0]
    ```
    """
    if not isinstance(config, HFEagerConfig) or isinstance(config, HFStreamingConfig):
        raise TypeError(f"HFEagerSource: expected an HFEagerConfig; got {type(config).__name__}.")
    return _eager_from_dataset(_load(config, streaming=False), config)


# ----------------------------------------------------------------------------- streaming


def _hash(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


class _Backend:
    """Shared parts of the two HF streaming backends."""

    def __init__(self, ds: Any, fields: dict, cfg: HFStreamingConfig, shuffle: bool, key: str):
        self.ds = ds.select_columns(list(fields))
        self.fields = fields
        self.cfg = cfg
        self.shuffle = shuffle
        self.key = key
        self.info = copy.deepcopy(ds.info)
        self._spec = None
        self._lock = threading.Lock()

    def _convert(self, table: Any) -> dict:
        arrays, meta = _convert_table(table, self.fields, self.cfg, progress=False)
        if meta and self._spec is None:
            self.info = _info(self, meta)  # self.info is a DatasetInfo; _info deep-copies it
        return arrays

    def element_spec(self) -> Any:
        import jax

        with self._lock:
            if self._spec is None:
                it = self.open(0, self.cfg.seed, 0)
                try:
                    first = next(it)
                finally:
                    it.close()
                self._spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), first)
            return self._spec

    def fingerprint(self) -> str:
        return _hash(self.key, sorted(self.fields), self.cfg.max_length, self.cfg.truncate, self.cfg.chunk_size,
                     self.cfg.shuffle_buffer_size)


class _MapBackend(_Backend):
    """Streams a map-style ``Dataset`` (memory-mapped Arrow) in the eager source's order.

    Random access makes resume exact and O(1) at any position, shuffled or not: epoch
    ``e`` reads records ``permute(i, N, seed, e)`` (the same order as the eager source).
    """

    def num_records(self) -> int:
        return len(self.ds)

    def open(self, epoch: int, seed: int, start: int) -> Iterator[dict]:
        n, step = len(self.ds), self.cfg.chunk_size
        arrow = self.ds.with_format("arrow")
        for lo in range(start, n, step):
            hi = min(lo + step, n)
            if self.shuffle:
                idx = permute(np.arange(lo, hi), n, seed, epoch)
                table = arrow[idx.tolist()]
            else:
                table = arrow[lo:hi]
            yield self._convert(table)


class _IterableBackend(_Backend):
    """Streams an HF ``IterableDataset``; shuffles with ``IterableDataset.shuffle``.

    Epoch ``e`` uses ``shuffle(seed=epoch_seed(seed, e), buffer_size)``. Resuming at
    position ``p`` replays epoch ``e`` from its start and drops ``p`` records as raw Arrow
    (no decoding): exact with shuffling, at the cost of reading ``p`` records again.
    """

    def num_records(self) -> int | None:
        splits = getattr(self.info, "splits", None) or {}
        split = splits.get(self.cfg.split) if hasattr(splits, "get") else None
        n = getattr(split, "num_examples", None)
        return int(n) if n else None

    def open(self, epoch: int, seed: int, start: int) -> Iterator[dict]:
        ds = self.ds
        if self.shuffle:
            # One input shard at a time: HF's multi-shard interleaving reads in extra threads and
            # sleeps 5 s whenever an iterator closes (datasets' workaround for apache/arrow#45214),
            # which would stall every epoch end and resume. Shard order is still shuffled.
            ds = ds.shuffle(seed=epoch_seed(seed, epoch), buffer_size=self.cfg.shuffle_buffer_size,
                            max_buffer_input_shards=1)
        skip = start
        for table in ds.with_format("arrow").iter(batch_size=self.cfg.chunk_size):
            if skip >= len(table):
                skip -= len(table)
                continue
            if skip:
                table, skip = table.slice(skip), 0
            yield self._convert(table)


def _streaming_from(ds: Any, cfg: HFStreamingConfig) -> Any:
    import datasets as hd

    from ._streaming import make_streaming

    fields = _fields_for(ds, cfg)
    if cfg.transform is None:
        _static_check(fields, cfg.max_length)
    if isinstance(ds, hd.Dataset):
        backend: _Backend = _MapBackend(ds, fields, cfg, cfg.shuffle, _hash("map", ds._fingerprint, cfg.split))
    else:
        key = _hash("iter", cfg.name, cfg.config_name, cfg.split, cfg.data_files, cfg.revision)
        backend = _IterableBackend(ds, fields, cfg, cfg.shuffle, key)
    return make_streaming(
        backend, shuffle=cfg.shuffle, seed=cfg.seed, name=f"hf:{cfg.name}/{cfg.split}",
        num_epochs=cfg.num_epochs, prefetch=cfg.prefetch,
    )


def HFStreamingSource(config: HFStreamingConfig) -> Any:
    """Returns a ``StreamingSource`` that reads the HF split on the host, chunk by chunk.

    Hub names and data files stream through ``load_dataset(..., streaming=True)``;
    ``save_to_disk`` folders and ``Dataset`` objects stream from their memory-mapped Arrow
    with random access (exact O(1) resume).
    """
    if not isinstance(config, HFStreamingConfig):
        raise TypeError(f"HFStreamingSource: expected an HFStreamingConfig; got {type(config).__name__}.")
    return _streaming_from(_load(config, streaming=True), config)


# ----------------------------------------------------------------------------- from_hf


def _estimate_nbytes(ds: Any, cfg: HFEagerConfig, sample: int = 32) -> int:
    """Returns the decoded size of the split, from converting its first ``sample`` rows."""
    fields = _fields_for(ds, cfg)
    m = min(sample, len(ds))
    if m == 0:
        return 0
    table = ds.select_columns(list(fields)).with_format("arrow")[:m]
    arrays, _ = _convert_table(table, fields, cfg, progress=False)
    per_row = sum(a.nbytes for a in _leaf_arrays(arrays)) / m
    return int(per_row * len(ds))


def from_hf(
    name: Any,
    split: str | None = None,
    *,
    streaming: bool | None = None,
    memory_budget: int | None = None,
    **options: Any,
) -> Any:
    """Returns an ``EagerSource`` or a ``StreamingSource`` for an HF split.

    ``name`` is a hub name, a folder, a builder name with ``data_files=``, or a
    ``datasets.Dataset`` / ``DatasetDict`` / ``IterableDataset`` object. ``options`` are
    the ``HFStreamingConfig`` fields. Mode: ``streaming=True`` streams, ``False`` loads
    eagerly; ``None`` loads eagerly when the decoded split fits ``memory_budget`` bytes
    (default: half the available memory) and streams otherwise, logging why on the
    ``"datarax_fn"`` logger. Choosing needs the split prepared on local disk (memory
    mapped, not in RAM); pass ``streaming=True`` to skip that for a huge hub dataset.

    ```python
    import datasets, datarax_fn as dfn
    ds = datasets.Dataset.from_dict({"text": ["a", "bc"], "label": [0, 1]})
    state = dfn.from_hf(ds, streaming=False)
    assert dfn.decode_text(state.data, "text") == ["a", "bc"]
    ```
    """
    import datasets as hd

    obj = None
    if not isinstance(name, str):
        obj = name
        if isinstance(obj, (hd.DatasetDict, hd.IterableDatasetDict)):
            if split is None:
                raise ValueError(f"from_hf: a DatasetDict needs split=; available splits are {list(obj)}.")
            obj = _pick_split(obj, split, "the DatasetDict")
        if not isinstance(obj, (hd.Dataset, hd.IterableDataset)):
            raise TypeError(f"from_hf: name must be a string or an HF Dataset; got {type(name).__name__}.")
        label = (obj.info.dataset_name if obj.info and obj.info.dataset_name else "dataset")
        name, split = label, split or (str(obj.split) if obj.split else "train")
    if split is None:
        raise ValueError("from_hf: split is required (e.g. split='train').")
    stream_fields = {f.name for f in dataclasses.fields(HFStreamingConfig)}
    unknown = set(options) - stream_fields
    if unknown:
        raise TypeError(f"from_hf: unknown options {sorted(unknown)}; valid options are {sorted(stream_fields - {'name', 'split'})}.")
    scfg = HFStreamingConfig(name=name, split=split, **options)
    eager_opts = {k: v for k, v in options.items() if k in {f.name for f in dataclasses.fields(HFEagerConfig)}}
    ecfg = HFEagerConfig(name=name, split=split, **eager_opts)

    if obj is not None and isinstance(obj, hd.IterableDataset):
        if streaming is False:
            raise ValueError("from_hf: an IterableDataset cannot load eagerly; pass a Dataset, or streaming=True.")
        logger.info("from_hf(%s, %s): streaming, because the input is an IterableDataset", name, split)
        return _streaming_from(obj, scfg)
    if streaming is True:
        logger.info("from_hf(%s, %s): streaming, because streaming=True", name, split)
        return _streaming_from(obj, scfg) if obj is not None else HFStreamingSource(scfg)
    ds = obj if obj is not None else _load(ecfg, streaming=False)
    if streaming is False:
        logger.info("from_hf(%s, %s): eager, because streaming=False", name, split)
        return _eager_from_dataset(ds, ecfg)
    budget = _memory_budget() if memory_budget is None else int(memory_budget)
    eager, reason = choose_mode(_estimate_nbytes(ds, ecfg), budget)
    logger.info("from_hf(%s, %s): %s, because %s", name, split, "eager" if eager else "streaming", reason)
    return _eager_from_dataset(ds, ecfg) if eager else _streaming_from(ds, scfg)


__all__ = ["HFEagerConfig", "HFStreamingConfig", "HFEagerSource", "HFStreamingSource", "from_hf", "fields_from_hf"]
