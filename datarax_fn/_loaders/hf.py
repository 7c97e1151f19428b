"""Hugging Face ``datasets``: the HF configs and how an HF split parameterises the shared loader layer.

A map-style ``Dataset`` (memory-mapped Arrow: ``save_to_disk`` folders, prepared data files,
``Dataset`` objects) is a random-access backend; an ``IterableDataset`` (``streaming=True``
on hub names and data files) is a replay backend. ``datasets`` is imported inside the
functions that need it, so ``import datarax_fn`` stays light.

Over 400 lines: the two configs, their validation and ``from_hf``'s mode decision share one
plan of the split; reading an ``IterableDataset`` lives apart in ``hf_stream.py`` (parquet row
groups in ``hf_parquet.py``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import _convert as cv
from . import backends as bk
from . import hf_parquet as hp
from . import hf_stream as hs
from .config import (
    LoaderConfig,
    StreamingOptions,
    check_mode,
    configs_from_options,
    data_files,
    decide,
    flag,
    mapping,
    option,
    text,
)


@dataclasses.dataclass(frozen=True)
class HFEagerConfig(LoaderConfig):
    """Returns a validated description of an HF split to load whole into device memory.

    ``name`` is a hub name, a local folder of data files, a ``save_to_disk`` folder, or a
    builder (``"parquet"``, ``"csv"``, ``"json"``) used with ``data_files``. The shared
    options are those of every loader config (docs/hf.md lists them).

    ```python
    import datarax_fn as dfn
    cfg = dfn.HFEagerConfig(name="parquet", split="train", data_files={"train": "x.parquet"})
    ```
    """

    config_name: str | None = option(None, text, optional=True)
    data_files: Any = option(None, data_files, optional=True)
    revision: str | None = option(None, text, optional=True)
    cache_dir: str | None = option(None, text, optional=True)
    trust_remote_code: bool = option(False, flag)
    download_kwargs: Mapping[str, Any] | None = option(None, mapping, optional=True)


@dataclasses.dataclass(frozen=True)
class HFStreamingConfig(StreamingOptions, HFEagerConfig):
    """Returns a validated description of an HF split to stream from the host.

    Adds ``streaming=True`` (``False`` is an error: use ``HFEagerConfig``),
    ``shuffle_buffer_size`` (the shuffle window for data files), ``prefetch``, ``chunk_size``,
    ``num_epochs`` and ``partitions``. Ragged fields need ``max_length`` so that batch shapes
    are static.
    """


# ----------------------------------------------------------------------------- loading


_OFFLINE_LOCK = threading.RLock()  # re-entered when _offline and _no_load_count nest


@contextlib.contextmanager
def _offline(enabled: bool):
    """Makes ``datasets`` / ``huggingface_hub`` skip every network call inside the block."""
    if not enabled:
        yield
        return
    import datasets.config as dc  # lazy: datasets is optional and slow to import
    import huggingface_hub.constants as hc  # lazy: optional HF backend, imported on use

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
        os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(os.path.join(path, "state.json"))
    )


def _bounds(split: str, n: int | None, own: str | None, where: str) -> tuple[str, int, int | None]:
    """Returns ``(split name, first row, end row or None)`` of a split expression such as ``train[5:20]``."""
    import datasets as hd  # lazy: datasets is optional and slow to import

    try:
        parts = hd.ReadInstruction.from_spec(split)._relative_instructions  # noqa: SLF001 (no public parser)
    except (AssertionError, ValueError) as err:
        raise ValueError(f"{where}: split={split!r} is not a split expression like 'train' or 'train[:10%]' ({err}).") from None
    if len(parts) != 1:
        raise ValueError(f"{where}: split={split!r} joins splits; {where} holds one split ({own!r}). Load each and concatenate.")
    p = parts[0]
    if own is not None and p.splitname != own:
        raise ValueError(f"{where}: split={split!r} names {p.splitname!r}, but {where} holds split {own!r}.")
    if p.from_ is None and p.to is None:
        return p.splitname, 0, n
    if n is None and (p.unit == "%" or (p.from_ or 0) < 0 or (p.to or 0) < 0):
        raise ValueError(f"{where}: split={split!r} needs the split's size, which is unknown when streaming data "
                         "files; use absolute bounds like 'train[:1000]', or streaming=False.")
    if n is not None:
        (a,) = hd.ReadInstruction.from_spec(split).to_absolute({p.splitname: n})
        lo, hi = a.from_, a.to
    else:
        lo, hi = p.from_ or 0, p.to
    if hi is not None and hi <= lo:
        raise ValueError(f"{where}: split={split!r} selects no records (rows {lo} to {hi}); pick a non-empty slice.")
    return p.splitname, lo, hi


def _sliced(ds: Any, split: str, where: str) -> Any:
    """Returns the rows of a map-style ``Dataset`` that ``split`` selects (its name must be the dataset's)."""
    own = str(ds.split) if ds.split is not None else None
    _, lo, hi = _bounds(split, len(ds), own, where)
    if (lo, hi) != (0, len(ds)):
        ds = ds.select(range(lo, hi))  # a contiguous range: HF slices the Arrow table, no index mapping
    if not len(ds):
        raise bk.empty_split_error(where, split)
    return ds


def _split_name(split: str) -> str:
    """Returns the split name of a split expression (``"train"`` for ``"train[:10%]"``)."""
    return split.split("[", 1)[0].strip()


def _pick(dd: Any, split: str, where: str) -> Any:
    """Returns the rows of ``split`` (slices too) from a ``DatasetDict``."""
    base = _split_name(split)
    if base not in dd:
        raise ValueError(f"{where}: split={split!r} is not there; available splits are {list(dd)}.")
    ds = dd[base]
    return _sliced(ds, split, where) if ds.split is not None or "[" in split else ds


def _load(cfg: HFEagerConfig, streaming: bool) -> Any:
    """Returns the HF ``Dataset`` (or ``IterableDataset`` when streaming files) the config names."""
    import datasets as hd  # lazy: datasets is optional and slow to import

    if _is_saved_folder(cfg.name):
        where = f"the save_to_disk folder {cfg.name!r}"
        ds = hd.load_from_disk(cfg.name)
        return _pick(ds, cfg.split, where) if isinstance(ds, hd.DatasetDict) else _sliced(ds, cfg.split, where)
    if cfg.trust_remote_code:
        raise ValueError(
            f"trust_remote_code=True: datasets {hd.__version__} no longer runs dataset scripts, so remote "
            f"code cannot be trusted or run for {cfg.name!r}. Use a dataset with data files (parquet, csv, "
            "json) or its parquet conversion (revision='refs/convert/parquet')."
        )
    base = cfg.split
    if streaming:  # HF streams whole splits only: the slice is applied while reading
        base = _split_name(cfg.split)
    kwargs: dict[str, Any] = dict(name=cfg.config_name, data_dir=cfg.data_dir, data_files=cfg.data_files,
                                  revision=cfg.revision, cache_dir=cfg.cache_dir)
    if cfg.local_files_only:
        kwargs["download_config"] = hd.DownloadConfig(local_files_only=True, cache_dir=cfg.cache_dir)
    kwargs.update(cfg.download_kwargs or {})
    with _offline(cfg.local_files_only), _no_load_count(_local_data(cfg)):
        ds = hd.load_dataset(cfg.name, split=base, streaming=True, **kwargs) if streaming else _prepared(cfg.name, base, kwargs)
    if isinstance(ds, (hd.DatasetDict, hd.IterableDatasetDict)):
        if base not in ds:
            raise ValueError(f"{cfg.name!r}: split={cfg.split!r} is not there; available splits are {list(ds)}.")
        ds = ds[base]
    if isinstance(ds, hd.Dataset) and not len(ds):
        raise bk.empty_split_error(repr(cfg.name), cfg.split)
    return ds


def _prepared(path: str, split: str, kwargs: dict[str, Any]) -> Any:
    """Returns ``load_dataset(path, split=split, **kwargs)``, run step by step as ``load_dataset``
    does (builder, ``download_and_prepare``, ``as_dataset``) so that the builder's file reader
    verifies parquet page checksums and names the file it fails on."""
    import datasets as hd  # lazy: datasets is optional and slow to import
    from datasets.utils.info_utils import is_small_dataset  # load_dataset's own in-memory rule

    prepare = set(inspect.signature(hd.DatasetBuilder.download_and_prepare).parameters) - {"self"}
    build = set(inspect.signature(hd.load_dataset_builder).parameters)
    kwargs = dict(kwargs)
    keep = kwargs.pop("keep_in_memory", None)
    if kwargs.pop("save_infos", False):
        kwargs["verification_mode"] = "all_checks"
    builder = hd.load_dataset_builder(path, **{k: v for k, v in kwargs.items() if k in build or k not in prepare})
    hs.verify_pages(builder)
    for name in ("_generate_tables", "_generate_examples"):
        if hasattr(builder, name):
            setattr(builder, name, hs.checked_reader(getattr(builder, name), None))
    options = {k: v for k, v in kwargs.items() if k in prepare}
    options.setdefault("verification_mode", hd.VerificationMode.BASIC_CHECKS)
    try:
        builder.download_and_prepare(**options)
    except hd.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, bk.DamagedFileError):  # HF's wrapper names no file; ours does
            raise err.__cause__ from err.__cause__.__cause__
        raise
    return builder.as_dataset(split=split, in_memory=keep if keep is not None else is_small_dataset(builder.info.dataset_size))


def _local_data(cfg: HFEagerConfig) -> bool:
    """Returns whether the config names local data only: a local folder, or a packaged builder
    (``"parquet"``, ``"csv"``...) over data files that are all local paths."""
    if os.path.isdir(cfg.name):
        return True
    files = cfg.data_files
    if files is None:
        return False
    paths = [p for v in (files.values() if isinstance(files, Mapping) else [files])
             for p in ([v] if isinstance(v, (str, os.PathLike)) else v)]
    return bool(paths) and all("://" not in str(p) for p in paths)


@contextlib.contextmanager
def _no_load_count(enabled: bool):
    """Skips ``datasets``' download-count ping (a HEAD request to its S3 bucket, made whenever a
    builder module is resolved unless offline) inside the block: local data makes no network
    attempt. ``datasets.config`` is set, not the environment, and restored on exit."""
    if not enabled:
        yield
        return
    import datasets.config as dc  # lazy: datasets is optional and slow to import

    with _OFFLINE_LOCK:
        saved = dc.HF_UPDATE_DOWNLOAD_COUNTS
        dc.HF_UPDATE_DOWNLOAD_COUNTS = False
        try:
            yield
        finally:
            dc.HF_UPDATE_DOWNLOAD_COUNTS = saved


# ----------------------------------------------------------------------------- schema and columns


def _fields(ds: Any, cfg: HFEagerConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns ``(selected fields, conversion options)``; the input's ``with_format(columns=...)`` narrows them."""
    features = ds.features
    if features is None:  # some streamed json/csv sets resolve their schema lazily
        features = ds._resolve_features().features  # noqa: SLF001
    fmt = getattr(ds, "format", None) or {}
    if fmt.get("type") == "custom":
        raise ValueError(
            "from_hf: the Dataset has a with_transform/set_transform formatting, which works on Python rows "
            "and cannot run on Arrow chunks. Pass the function as transform= instead (it gets each chunk as "
            "columns: images as arrays, text as str), or call ds.reset_format() first."
        )
    fields = cv.fields_from_hf(features)
    shown = fmt.get("columns")
    if shown is not None and not fmt.get("output_all_columns"):
        fields = {k: f for k, f in fields.items() if k in shown}
    return bk.select(fields, cfg)


def _top(fields: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(p.split(".")[0] for p in cv.read_paths(fields)))


def _info(info: Any, meta: Mapping[str, Any]) -> Any:
    """Returns a copy of the DatasetInfo whose features carry what conversion decided: an Audio
    feature the decoded sampling rate, an Image feature without a mode the mode a stream's
    first images decided (``image_mode`` in the converter's ``meta``)."""
    import datasets as hd  # lazy: datasets is optional and slow to import

    info = copy.deepcopy(info)
    for key, m in meta.items():
        f = info.features.get(key) if info.features is not None else None
        if isinstance(f, hd.Audio) and f.sampling_rate is None and "sampling_rate" in m:
            info.features[key] = hd.Audio(sampling_rate=m["sampling_rate"], decode=f.decode)
        if isinstance(f, hd.Image) and f.mode is None and "image_mode" in m:
            info.features[key] = hd.Image(mode=m["image_mode"], decode=f.decode)
    return info


def _label(cfg: HFEagerConfig) -> str:
    return f"hf:{cfg.name}/{cfg.split}"


def _eager(ds: Any, cfg: HFEagerConfig) -> Any:
    fields, opts = _fields(ds, cfg)
    columns = hs.table_columns(ds.select_columns(_top(fields)).with_format("arrow")[:])
    return bk.eager_source(columns, fields, opts, cfg, name=_label(cfg), info=lambda meta: _info(ds.info, meta))


def _map_backend(ds: Any, fields: dict, opts: dict, cfg: HFStreamingConfig) -> bk.Backend:
    arrow = ds.select_columns(_top(fields)).with_format("arrow")

    def read(idx: np.ndarray) -> bk.Columns:
        lo = int(idx[0])
        contiguous = idx[-1] - lo == len(idx) - 1 and (len(idx) < 2 or bool((np.diff(idx) == 1).all()))
        return hs.table_columns(arrow[lo : lo + len(idx)] if contiguous else arrow[idx.tolist()])

    conv = bk.converter(fields, opts, read(np.arange(min(cfg.chunk_size, len(ds)))), static=True)
    data = (ds._fingerprint, bk.file_stats(f["filename"] for f in ds.cache_files))  # noqa: SLF001
    return bk.RandomAccessBackend(read, len(ds), conv, data=data, split=cfg.split, info=_info(ds.info, conv.meta), cfg=cfg)


def _stream_rows(ds: Any, stream: Any, cfg: HFStreamingConfig) -> tuple[Any, np.ndarray | None, int, int | None, int | None]:
    """Returns ``(row groups, their ends, first row, end row, records)`` of an HF stream's split.

    The row groups (None unless the stream reads parquet by row group) come from the parquet
    footers; without them the count is the split info's (None when unknown)."""
    groups = hp.parquet_row_groups(stream)
    ends = None if groups is None else np.concatenate([[0], np.cumsum(groups.lengths)])
    if ends is not None:
        total: int | None = int(ends[-1])
    else:
        known = (getattr(ds.info, "splits", None) or {}).get(_split_name(cfg.split))
        total = int(known.num_examples) if known is not None and known.num_examples else None
    first, last = _bounds(cfg.split, total, None, repr(cfg.name))[1:]
    n = last - first if last is not None else (None if total is None else total - first)
    return groups, ends, first, last, n


def _replay_backend(ds: Any, fields: dict, opts: dict, cfg: HFStreamingConfig) -> bk.Backend:
    files = bk.file_stats(hs.stream_files(ds))
    identity = bk.FileIdentity(files)
    stream = ds.select_columns(_top(fields)).with_format("arrow")
    groups, ends, first, last, n = _stream_rows(ds, stream, cfg)
    if groups is not None:
        read_range, bounds = hp.seek_reader(groups, ends, first, n, cfg.chunk_size, identity), np.clip(ends - first, 0, n)
    else:
        stream = hs.guard_files(hs.own(stream), identity)
        read_range, bounds = hs.replay_reader(stream, first, last, cfg.chunk_size), None
    probe = next(read_range(0, None if n is None else min(n, cfg.chunk_size)), None)
    if probe is None:
        raise bk.empty_split_error(repr(cfg.name), cfg.split)
    conv = bk.converter(fields, opts, probe, static=True)
    data = (cfg.name, cfg.config_name, cfg.revision, cfg.data_files, files)
    return bk.ReplayBackend(bk.range_by_range(read_range), n, conv, shard_bounds=bounds, data=data, split=cfg.split,
                            info=_info(ds.info, conv.meta), cfg=cfg)


def _streaming(ds: Any, cfg: HFStreamingConfig) -> Any:
    import datasets as hd  # lazy: datasets is optional and slow to import

    kind: Callable = _map_backend if isinstance(ds, hd.Dataset) else _replay_backend
    if isinstance(ds, hd.IterableDataset):
        ds = hs.own(ds)  # resolving the features below may iterate it
    return bk.streaming_source(kind(ds, *_fields(ds, cfg), cfg), cfg, _label(cfg))


def HFEagerSource(config: HFEagerConfig) -> Any:  # noqa: N802 (called like a class: it builds the source a config describes)
    """Returns an ``EagerSource`` holding the whole HF split as device arrays.

    ```python
    import datasets, datarax_fn as dfn
    ds = datasets.Dataset.from_dict({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    state = dfn.from_hf(ds)
    state, batch = dfn.get_batch(state, 2)
    assert batch["x"].tolist() == [1.0, 2.0]
    ```
    """
    if not isinstance(config, HFEagerConfig) or config.streaming:
        raise TypeError(f"HFEagerSource: expected an HFEagerConfig; got {type(config).__name__}.")
    return _eager(_load(config, streaming=False), config)


def HFStreamingSource(config: HFStreamingConfig) -> Any:  # noqa: N802 (called like a class: it builds the source a config describes)
    """Returns a ``StreamingSource`` that reads the HF split on the host, chunk by chunk.

    Hub names and data files stream through ``load_dataset(..., streaming=True)``: parquet
    resumes by row group (rows counted from the parquet metadata), json / csv / text replay
    from the start; ``save_to_disk`` folders stream from their memory-mapped Arrow by random
    access (O(1) resume).
    """
    if not isinstance(config, HFStreamingConfig):
        raise TypeError(f"HFStreamingSource: expected an HFStreamingConfig; got {type(config).__name__}.")
    return _streaming(_load(config, streaming=True), config)


def _estimate(ds: Any, cfg: HFEagerConfig) -> int:
    fields, opts = _fields(ds, cfg)
    columns = hs.table_columns(ds.select_columns(_top(fields)).with_format("arrow")[:])
    return cv.estimate_nbytes(bk.converter(fields, opts, bk.probe_of(columns), static=False), columns)


def _sampled_estimate(ds: Any, cfg: HFStreamingConfig) -> tuple[int | None, str]:
    """Returns the decoded size of an HF stream's split from its metadata (parquet footers or the
    split info give the record count) and its first ``SAMPLE_ROWS`` records; nothing else is read.

    Parquet is sampled with pyarrow (the first rows of the first row group, a batch at a time),
    other files through HF's stream: its first block."""
    ds = hs.own(ds)
    fields, opts = _fields(ds, cfg)
    stream = ds.select_columns(_top(fields)).with_format("arrow")
    groups, ends, first, last, n = _stream_rows(ds, stream, cfg)
    k = min(bk.SAMPLE_ROWS, n or bk.SAMPLE_ROWS)
    if groups is not None:
        read_range = hp.seek_reader(groups, ends, first, n, k, None)
    else:
        read_range = hs.replay_reader(stream, first, last, k)
    return bk.sampled_nbytes(fields, opts, next(read_range(0, k), None), n)


def _load_dataset_forms(name: Any, split: Any, options: dict[str, Any]) -> tuple[Any, Any]:
    """Returns ``(dataset, split)`` from ``from_hf``'s arguments, taking ``load_dataset``'s forms too.

    ``from_hf(path, name, split=...)``, ``from_hf(path, name=..., split=...)`` and
    ``from_hf(path=..., name=..., split=...)`` mean what they mean to ``load_dataset``: ``name``
    is the config (``config_name``). ``from_hf(dataset, split)`` keeps its meaning (the second
    positional is the split unless ``split=`` is also given), and ``name=`` alone names the dataset.
    Moves the config into ``options["config_name"]``.
    """
    path, kw_name, kw_split = options.pop("path", None), options.pop("name", None), options.pop("split", None)
    if path is not None:
        if name is not None:
            raise TypeError(f"from_hf: the dataset is given twice, {name!r} and path={path!r}; pass one of them.")
        name = path
    elif name is None and kw_name is not None:
        name, kw_name = kw_name, None
    if name is None:
        raise TypeError("from_hf: name the dataset: from_hf(path, split, ...) with a hub name, a folder, a builder "
                        "('parquet', 'csv', 'json') with data_files=, or a Dataset object.")
    configs = {}
    if kw_split is not None:
        if split is not None:
            configs["the second positional argument"] = split  # load_dataset(path, name, split=...)
        split = kw_split
    if kw_name is not None:
        configs["name="] = kw_name
    if options.get("config_name") is not None:
        configs["config_name="] = options["config_name"]
    if len(configs) > 1:
        raise TypeError(f"from_hf: the config is given more than once ({', '.join(f'{k} {v!r}' for k, v in configs.items())}); "
                        "pass it once, as config_name= (load_dataset's name=).")
    if configs:
        options["config_name"] = next(iter(configs.values()))
    return name, split


def from_hf(name: Any = None, split: str | None = None, /, *, streaming: bool | None = None,
            memory_budget: int | None = None, **options: Any) -> Any:
    """Returns an ``EagerSource`` or a ``StreamingSource`` for an HF split.

    Arguments:
      name: a hub name, a folder, a builder name with ``data_files=``, or a ``datasets.Dataset``
        / ``DatasetDict`` / ``IterableDataset`` object (``path=`` also names it).
      split: a split expression (``"test"``, ``"train[:10%]"``, ``"train[5:20]"``); for a
        ``Dataset`` object its own split (default: all of it). ``load_dataset``'s forms work
        too: ``from_hf(path, config, split=...)`` and ``from_hf(path, name=config, split=...)``
        take the config as ``config_name``.
      streaming: ``True`` streams, ``False`` loads eagerly, ``None`` loads eagerly when the
        decoded split fits ``memory_budget`` bytes (default: half the available memory). For a
        name, the size is estimated before anything is prepared: the record count from the
        parquet footers or the split info, each record sized from the first 256 (an unknown
        count streams); a ``Dataset`` object is sized from all its rows (its longest included).
      **options: the ``HFStreamingConfig`` options.

    Returns:
      The state; the mode and why are logged on the ``"datarax_fn"`` logger.

    ```python
    import datasets, datarax_fn as dfn
    ds = datasets.Dataset.from_dict({"text": ["a", "bc"], "label": [0, 1]})
    state = dfn.from_hf(ds, streaming=False)
    assert dfn.decode_text(state.data, "text") == ["a", "bc"]
    ```
    """
    import datasets as hd  # lazy: datasets is optional and slow to import

    name, split = _load_dataset_forms(name, split, options)
    streaming, memory_budget = check_mode("from_hf", streaming, memory_budget)
    obj = None
    if not isinstance(name, (str, os.PathLike)):
        obj, picked = name, isinstance(name, hd.DatasetDict)
        if isinstance(obj, (hd.DatasetDict, hd.IterableDatasetDict)):
            if split is None:
                raise ValueError(f"from_hf: a DatasetDict needs split=; available splits are {list(obj)}.")
            obj = _pick(obj, split, "the DatasetDict") if isinstance(obj, hd.DatasetDict) else obj[_split_name(split)]
        if not isinstance(obj, (hd.Dataset, hd.IterableDataset)):
            raise TypeError(f"from_hf: name must be a string or an HF Dataset; got {type(name).__name__}.")
        name = obj.info.dataset_name if obj.info and obj.info.dataset_name else "dataset"
        split = split or (str(obj.split) if obj.split else "train")
        if isinstance(obj, hd.Dataset) and not picked:
            obj = _sliced(obj, split, "the Dataset")
    ecfg, scfg = configs_from_options(HFEagerConfig, HFStreamingConfig, "from_hf", name=name,
                                      split="train" if split is None else split, **options)
    if isinstance(obj, hd.IterableDataset):
        if streaming is False:
            raise ValueError("from_hf: an IterableDataset cannot load eagerly; pass a Dataset, or streaming=True.")
        streaming = True
    label = f"{ecfg.name}, {ecfg.split}"
    if streaming:
        decide("from_hf", label, True, memory_budget, lambda: None)
        return _streaming(obj, scfg) if obj is not None else HFStreamingSource(scfg)
    if streaming is None and obj is None:  # decide before preparing: from the metadata and the first rows
        ds = _load(scfg, streaming=True)
        if isinstance(ds, hd.IterableDataset):
            if decide("from_hf", label, None, memory_budget, lambda: _sampled_estimate(ds, scfg)):
                return _streaming(ds, scfg)
            return _eager(_load(ecfg, streaming=False), ecfg)
    ds = obj if obj is not None else _load(ecfg, streaming=False)
    if decide("from_hf", label, streaming, memory_budget, lambda: _estimate(ds, ecfg)):
        return _streaming(ds, scfg)
    return _eager(ds, ecfg)


__all__ = ["HFEagerConfig", "HFStreamingConfig", "HFEagerSource", "HFStreamingSource", "from_hf"]
