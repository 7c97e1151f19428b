"""TensorFlow Datasets: the TFDS configs and how a prepared TFDS split parameterises the shared loader layer.

array_record splits are random-access backends (``tfds.data_source``; TensorFlow is never
imported); tfrecord splits are replay backends (``tf.data``, read in file order and shuffled
by the shared windowed bijection, so TensorFlow's global seed plays no part). Images and
audio arrive encoded (``tfds.decode.SkipDecoding``), so the conversion layer decodes them the
same way for every backend and file format; dropped features are skipped by the decoders.

TensorFlow is imported lazily, only on the tf.data paths, and kept off GPUs.

Over 400 lines: the configs, the split plan, both readers and ``from_tfds`` share the plan
and the config's split expression; the row-level helpers already live in ``tfds_columns``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .. import _convert as cv
from . import backends as bk
from .config import (
    LoaderConfig,
    StreamingOptions,
    check_mode,
    configs_from_options,
    decide,
    flag,
    mapping,
    option,
    positive,
    text,
    validate,
)
from .tfds_columns import batched, rows_to_columns, tf_columns, tf_module, tfds_module
from .tfds_files import (
    SplitFiles,
    checked_batches,
    damaged_tfrecord,
    read_records,
    split_files,
)


def _split(v: Any) -> Any:
    if isinstance(v, str):
        return text(v)
    if type(v).__name__ == "ReadInstruction":  # tfds.core.ReadInstruction, without importing tfds
        return v
    return text(v)  # raises the TypeError


# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class TFDSEagerConfig(LoaderConfig):
    """Returns a validated config for :func:`TFDSEagerSource` (frozen; errors name the field).

    Adds to the shared options: ``split`` may be a ``tfds.core.ReadInstruction``;
    ``as_supervised`` keeps only the dataset's ``supervised_keys`` under their own names;
    ``try_gcs`` / ``download`` allow the network (both off); ``download_and_prepare_kwargs``
    and ``beam_num_workers`` tune preparing.
    """

    split: Any = option("train", _split)
    as_supervised: bool = option(False, flag)
    try_gcs: bool = option(False, flag)
    download: bool = option(False, flag)
    download_and_prepare_kwargs: Mapping[str, Any] | None = option(None, mapping, optional=True)
    beam_num_workers: int = option(1, positive)

    def __post_init__(self) -> None:
        validate(self)
        cls = type(self).__name__
        if self.try_gcs and self.data_dir is not None:
            raise ValueError(
                f"{cls}: try_gcs and data_dir are exclusive (try_gcs reads gs://tfds-data/datasets); got "
                f"try_gcs=True, data_dir={self.data_dir!r}. Drop one of them."
            )
        if self.local_files_only and (self.download or self.try_gcs):
            raise ValueError(
                f"{cls}: local_files_only=True forbids network access, but got download={self.download!r}, "
                f"try_gcs={self.try_gcs!r}. Set those to False, or local_files_only=False."
            )


@dataclasses.dataclass(frozen=True)
class TFDSStreamingConfig(StreamingOptions, TFDSEagerConfig):
    """Returns a validated config for :func:`TFDSStreamingSource`: the shared streaming options added."""


# ----------------------------------------------------------------------------- builder and plan


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a config resolves to: the builder, the selected fields and how to read them."""

    builder: Any
    fields: dict[str, Any]  # selected conversion fields
    opts: dict[str, Any]  # conversion options for them
    keep: frozenset[str]  # their dotted leaf paths
    array_record: bool  # random access through tfds.data_source (no TensorFlow)
    n: int  # records of the split (slices applied)
    identity: bk.FileIdentity  # every data file's size and mtime as the source was built


@contextlib.contextmanager
def _no_download_retries() -> Iterator[None]:
    """Makes a user-requested download fail fast instead of retrying for minutes."""
    from tensorflow_datasets.core.download import downloader  # lazy: TFDS is optional and slow to import

    old = downloader.MAX_RETRIES
    downloader.MAX_RETRIES = 0
    try:
        yield
    finally:
        downloader.MAX_RETRIES = old


def _open_builder(cfg: TFDSEagerConfig) -> Any:
    tfds = tfds_module()
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
                try_download_gcs=bool(cfg.try_gcs), beam_options=_beam_options(cfg.beam_num_workers))
        with _no_download_retries():
            builder.download_and_prepare(**kwargs)
    return builder


def _beam_options(workers: int) -> Any:
    if workers == 1:
        return None
    try:
        from apache_beam.options.pipeline_options import PipelineOptions  # only to prepare Beam datasets
    except ImportError as err:
        raise ImportError(f"beam_num_workers={workers} needs apache_beam to prepare the dataset; install "
                          "apache-beam or set beam_num_workers=1.") from err
    return PipelineOptions(flags=[f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"])


def _not_prepared(cfg: TFDSEagerConfig, builder: Any, err: Exception) -> FileNotFoundError:
    return FileNotFoundError(
        f"TFDS dataset name={cfg.name!r} is not prepared under data_dir={str(builder.data_dir)!r}, and "
        f"download={cfg.download!r}. Prepare it once (builder.download_and_prepare() or `tfds build`), "
        "point data_dir at a prepared copy, or pass download=True (network)."
        f" TFDS said: {str(err).splitlines()[0]}"
    )


def _split_size(info: Any, cfg: TFDSEagerConfig) -> int | None:
    """Returns the records the split expression selects; raises for an empty or reversed slice."""
    if not info.splits:  # not prepared (the reader says so), or catalog metadata under mock_data
        return None
    try:
        n = int(info.splits[cfg.split].num_examples)
    except KeyError as err:
        raise ValueError(f"{cfg.name!r}: split={str(cfg.split)!r} is not there; available splits are "
                         f"{list(info.splits)}.") from err
    except Exception:  # e.g. catalog metadata under mock_data: the reader counts the records
        return None
    if n <= 0 and info.splits.total_num_examples:
        raise bk.empty_split_error(repr(cfg.name), cfg.split)
    return n or None


def _plan(cfg: TFDSEagerConfig) -> _Plan:
    builder = _open_builder(cfg)
    info = builder.info
    features = info.features
    fields = schema = cv.fields_from_tfds(features)
    if cfg.as_supervised:
        sk = info.supervised_keys
        if not sk or not all(isinstance(k, str) for k in sk):
            raise ValueError(
                f"as_supervised=True but TFDS dataset {cfg.name!r} declares {'nested ' if sk else 'no '}supervised_keys "
                f"{sk!r}; set as_supervised=False and pick features with include_keys (available: {list(fields)})."
            )
        fields = {k: fields[k] for k in sk if k in fields}
    fields, opts = bk.select(fields, cfg, schema)
    fmt = getattr(info.file_format, "value", info.file_format)
    paths = [p for s in info.splits.values() for p in s.filepaths] if info.splits else []
    return _Plan(builder, fields, opts, frozenset(cv.read_paths(fields)), fmt in ("array_record", "parquet"),
                 _split_size(info, cfg) or 0, bk.FileIdentity(bk.file_stats(paths)))


def _files(plan: _Plan, split: Any) -> SplitFiles | None:
    return split_files(plan.builder.info, split, plan.identity)


def _walk_features(features: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Yields ``(dotted path, parent dict path tuple, feature)`` for every leaf feature."""
    F = tfds_module().features
    for k, f in features.items():
        path = f"{prefix}{k}"
        inner = f.feature if isinstance(f, F.Sequence) else f
        if isinstance(inner, F.FeaturesDict):
            yield from _walk_features(inner, f"{path}.")
        else:
            yield path, f, inner


def _decoders(plan: _Plan, partial: bool) -> Any:
    """Returns TFDS decoders: images and audio stay encoded; dropped features are skipped.

    ``partial`` (tf.data) reads only the kept features (``PartialDecoding``); the data source
    has no partial parse, so it skips decoding the dropped ones instead.
    """
    tfds = tfds_module()
    F = tfds.features
    keep_tree: dict = {}
    skip_tree: dict = {}
    for path, feature, inner in _walk_features(plan.builder.info.features):
        kept = path in plan.keep or any(path.startswith(p + ".") or p.startswith(path + ".") for p in plan.keep)
        encoded = isinstance(inner, (F.Image, F.Audio))
        node_k, node_s, parts = keep_tree, skip_tree, path.split(".")
        for part in parts[:-1]:
            node_k, node_s = node_k.setdefault(part, {}), node_s.setdefault(part, {})
        if kept:
            node_k[parts[-1]] = True
        if encoded and (kept or not partial):  # the data source skips only these; other dropped ones decode cheaply
            node_s[parts[-1]] = tfds.decode.SkipDecoding()
    skip_tree = _prune(skip_tree)
    if partial:
        return tfds.decode.PartialDecoding(keep_tree, decoders=skip_tree or None)
    return skip_tree or None


def _prune(tree: dict) -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            v = _prune(v)
            if not v:
                continue
        out[k] = v
    return out


def _data_fingerprint(plan: _Plan) -> Any:
    info = plan.builder.info
    splits = {str(k): (list(s.shard_lengths), int(s.num_bytes)) for k, s in info.splits.items()}
    files = [os.path.join(str(plan.builder.data_dir), f) for f in _listdir(str(plan.builder.data_dir))]
    return (info.full_name, str(info.file_format), splits, getattr(info, "download_checksums", None), bk.file_stats(files))


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


# ----------------------------------------------------------------------------- reading columns


def _data_source(plan: _Plan, cfg: TFDSEagerConfig) -> Any:
    """Returns the random-access ``tfds.data_source`` of the split (no TensorFlow)."""
    try:
        return plan.builder.as_data_source(split=cfg.split, decoders=_decoders(plan, partial=False))
    except AssertionError as err:
        raise _not_prepared(cfg, plan.builder, err) from err


def _tf_dataset(plan: _Plan, cfg: TFDSEagerConfig, one_shot: bool = False, split: Any = None) -> Any:
    """Returns ``split`` (default the config's) as an unbatched ``tf.data.Dataset`` of the kept
    features, in file order: shards one after the other, as ``tfds.data_source`` reads them."""
    tf_module()
    tfds = tfds_module()
    read_config = tfds.ReadConfig(try_autocache=False, skip_prefetch=not one_shot, interleave_cycle_length=1)
    try:
        return plan.builder.as_dataset(split=cfg.split if split is None else split, shuffle_files=False,
                                       decoders=_decoders(plan, partial=True), read_config=read_config)
    except AssertionError as err:
        raise _not_prepared(cfg, plan.builder, err) from err


def _shard_pieces(info: Any, split: Any) -> tuple[list[tuple[str, int, int]], np.ndarray] | None:
    """Returns ``(pieces, shard bounds)`` of a split expression, or None without shard lengths.

    ``pieces`` are the ``(split name, first row, end row)`` ranges the expression selects, in
    order; the bounds are the selection's rows where a new tfrecord file starts, from 0 to its end.
    """
    tfds = tfds_module()
    try:
        parts = (split if not isinstance(split, str) else tfds.core.ReadInstruction.from_spec(split)).to_absolute(info.splits)
        lengths = {p.splitname: list(info.splits[p.splitname].shard_lengths) for p in parts}
    except Exception:  # catalog metadata (mock_data), unprepared splits: no shard lengths to seek by
        return None
    if not all(lengths.values()):
        return None
    pieces, bounds, at = [], [0], 0
    for p in parts:
        ends = np.cumsum(lengths[p.splitname])
        lo, hi = p.from_ or 0, int(ends[-1]) if p.to is None else p.to
        pieces.append((p.splitname, lo, hi))
        bounds += [at + int(e) - lo for e in ends if lo < e < hi] + [at + hi - lo]
        at += hi - lo
    return pieces, np.asarray(bounds, np.int64)


def _seek(pieces: list[tuple[str, int, int]], ranges: list[tuple[int, int]]) -> Any:
    """Returns the ``tfds.core.ReadInstruction`` of the selection rows ``ranges``, in order: TFDS
    skips whole files and seeks inside the first file of each range (raw records, nothing decoded)."""
    tfds = tfds_module()
    out = None
    for lo, hi in ranges:
        at = 0
        for name, a, b in pieces:
            x, y = max(lo - at, 0), min(hi - at, b - a)
            if y > x:
                ri = tfds.core.ReadInstruction(name, from_=a + x, to=a + y, unit="abs")
                out = ri if out is None else out + ri
            at += b - a
    return out


def _tfrecords(plan: _Plan, ds: Any, size: int, split: Any, first: int = 0) -> Iterator[Any]:
    """Yields the batches of ``size`` of the tf.data dataset ``ds`` over ``split`` (its rows from
    ``first`` on). A file changed since the build raises ``RuntimeError`` naming it; a damaged
    one ``DamagedFileError`` naming it and its record (TensorFlow names neither)."""
    tf = tf_module()
    files, at = _files(plan, split), [first]
    try:
        yield from checked_batches(batched(ds, size), files, at, lambda b: int(tf.nest.flatten(b)[0].shape[0]))
    except tf.errors.OpError as err:
        if files is None:
            raise
        files.check_range(0, int(files.starts[-1]))  # a rewritten file explains the failure better
        found = damaged_tfrecord(files, tf, at[0])
        if found is None:
            raise
        raise bk.damaged_file_error(found[0], err, found[1]) from err


def _read_all(plan: _Plan, cfg: TFDSEagerConfig) -> bk.Columns:
    """Returns the whole split as host columns (images and audio still encoded)."""
    if plan.array_record:
        source, files = _data_source(plan, cfg), _files(plan, cfg.split)
        rows = [r for lo in range(0, len(source), 16_384)
                for r in read_records(source, list(range(lo, min(lo + 16_384, len(source)))), files)]
        return rows_to_columns(rows, plan.fields) if rows else {}
    ds = _tf_dataset(plan, cfg, one_shot=True)
    n = int(ds.cardinality())
    chunks = [tf_columns(b, plan.fields) for b in _tfrecords(plan, ds, n if n > 0 else 8192, cfg.split)]
    return bk.concat_rows(chunks) if chunks else {}


# ----------------------------------------------------------------------------- sources


def _label(cfg: TFDSEagerConfig) -> str:
    return f"tfds:{cfg.name}:{cfg.split}"


def TFDSEagerSource(config: TFDSEagerConfig) -> Any:  # noqa: N802 (called like a class: it builds the source a config describes)
    """Returns an ``EagerSource`` holding the whole split, converted and moved to the device once.

    tfrecord splits are read as one whole-split batch through ``tf.data``; array_record splits
    through batched ``tfds.data_source`` access (TensorFlow is not imported).
    ``dataset_info(state)`` gives the TFDS ``DatasetInfo``.
    """
    if not isinstance(config, TFDSEagerConfig) or config.streaming:
        raise TypeError(f"TFDSEagerSource needs a TFDSEagerConfig; got {type(config).__name__}.")
    return _eager(_plan(config), config)


def _eager(plan: _Plan, cfg: TFDSEagerConfig, columns: bk.Columns | None = None) -> Any:
    columns = _read_all(plan, cfg) if columns is None else columns
    return bk.eager_source(columns, plan.fields, plan.opts, cfg, name=_label(cfg), info=lambda meta: plan.builder.info)


def _backend(plan: _Plan, cfg: TFDSStreamingConfig) -> bk.Backend:
    data, info = _data_fingerprint(plan), plan.builder.info
    if plan.array_record:
        source, files = _data_source(plan, cfg), _files(plan, cfg.split)
        n = len(source)
        if not n:
            raise bk.empty_split_error(repr(cfg.name), cfg.split)

        def read(idx: np.ndarray) -> bk.Columns:
            return rows_to_columns(read_records(source, idx.tolist(), files), plan.fields)

        conv = bk.converter(plan.fields, plan.opts, read(np.arange(min(n, cfg.chunk_size))), static=True)
        return bk.RandomAccessBackend(read, n, conv, data=data, split=cfg.split, info=info, cfg=cfg)

    seekable = _shard_pieces(info, cfg.split)
    if seekable is not None:
        pieces, bounds = seekable
        n = int(bounds[-1])

        def read_ranges(ranges: list[tuple[int, int | None]]) -> Iterator[bk.Columns]:
            # One tf.data pipeline for all the ranges: building one costs more than reading a window.
            split = _seek(pieces, [(lo, n if hi is None else hi) for lo, hi in ranges])
            for batch in _tfrecords(plan, _tf_dataset(plan, cfg, split=split), cfg.chunk_size, split):
                yield tf_columns(batch, plan.fields)
    else:  # no shard lengths: replay with tf.data's skip
        base, bounds = _tf_dataset(plan, cfg), None
        card = int(base.cardinality())
        n = card if card > 0 else (plan.n or None)

        def read_range(lo: int, hi: int | None) -> Iterator[bk.Columns]:
            ds = base.skip(lo) if lo else base
            for batch in _tfrecords(plan, ds if hi is None else ds.take(hi - lo), cfg.chunk_size, cfg.split, lo):
                yield tf_columns(batch, plan.fields)

        read_ranges = bk.range_by_range(read_range)

    probe = next(read_ranges([(0, None if n is None else min(n, cfg.chunk_size))]), None)
    if probe is None:
        raise bk.empty_split_error(repr(cfg.name), cfg.split)
    conv = bk.converter(plan.fields, plan.opts, probe, static=True)
    return bk.ReplayBackend(read_ranges, n, conv, shard_bounds=bounds, data=data, split=cfg.split, info=info, cfg=cfg)


def TFDSStreamingSource(config: TFDSStreamingConfig) -> Any:  # noqa: N802 (called like a class: it builds the source a config describes)
    """Returns a ``StreamingSource`` reading the split chunk by chunk on the host.

    array_record splits read by random access in the eager source's keyed order (O(1)
    resume); tfrecord splits read through ``tf.data`` in file order, their files in a keyed
    order and records shuffled within windows of ``shuffle_buffer_size`` (a resume seeks by
    ``shard_lengths`` and re-reads at most one window).
    """
    if not isinstance(config, TFDSStreamingConfig):
        raise TypeError(f"TFDSStreamingSource needs a TFDSStreamingConfig; got {type(config).__name__}.")
    return bk.streaming_source(_backend(_plan(config), config), config, _label(config))


def from_tfds(name: str, split: Any = "train", *, streaming: bool | None = None, memory_budget: int | None = None,
              **options: Any) -> Any:
    """Returns an ``EagerSource`` when the split fits the memory budget, else a ``StreamingSource``.

    Arguments:
      name: the TFDS dataset, e.g. ``"mnist"``.
      split: a split expression (``"train[:10%]"``, ``"train+test"``) or a ``tfds.core.ReadInstruction``.
      streaming: ``True`` streams, ``False`` loads eagerly, ``None`` decides from the split's
        decoded size against ``memory_budget`` bytes (default: half the available memory): its
        record count from the split info, each record sized from the first 256 (nothing else
        is read); an unknown count streams.
      **options: the ``TFDSStreamingConfig`` options.

    Returns:
      The state; the mode and why are logged on the ``"datarax_fn"`` logger.
    """
    streaming, memory_budget = check_mode("from_tfds", streaming, memory_budget)
    ecfg, scfg = configs_from_options(TFDSEagerConfig, TFDSStreamingConfig, "from_tfds", name=name, split=split,
                                      **options)
    if streaming:
        decide("from_tfds", f"{name}, {split}", True, memory_budget, lambda: None)
        return TFDSStreamingSource(scfg)
    plan = _plan(ecfg)
    if decide("from_tfds", f"{name}, {split}", streaming, memory_budget, lambda: _estimate(plan, ecfg)):
        return bk.streaming_source(_backend(plan, scfg), scfg, _label(scfg))
    return _eager(plan, ecfg)


def _estimate(plan: _Plan, cfg: TFDSEagerConfig) -> tuple[int | None, str]:
    """Returns the split's decoded size from its metadata (the record count) and its first records."""
    k = min(plan.n, bk.SAMPLE_ROWS) if plan.n else bk.SAMPLE_ROWS
    if plan.array_record:
        source = _data_source(plan, cfg)
        rows = read_records(source, list(range(min(k, len(source)))), _files(plan, cfg.split))
        sample = rows_to_columns(rows, plan.fields) if rows else None
    else:
        sample = next((tf_columns(b, plan.fields) for b in _tfrecords(plan, _tf_dataset(plan, cfg).take(k), k, cfg.split)), None)
    return bk.sampled_nbytes(plan.fields, plan.opts, sample, plan.n or None)


__all__ = ["TFDSEagerConfig", "TFDSEagerSource", "TFDSStreamingConfig", "TFDSStreamingSource", "from_tfds"]
