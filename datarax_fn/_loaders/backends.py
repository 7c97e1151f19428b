"""The two streaming backend kinds that HF and TFDS parameterise, and the shared eager tail.

* :class:`RandomAccessBackend` reads records by index (an Arrow map-style ``Dataset``, a
  TFDS array_record data source). Epoch ``e`` visits ``permute(i, N, seed, e)``: the eager
  source's order, and resume is O(1) at any position.
* :class:`ReplayBackend` reads file-order row ranges (an HF ``IterableDataset``, TFDS
  tfrecord through ``tf.data``), seeking by the backend's shard lengths where it has them.
  Shuffling (:mod:`replay_order`) visits the shards in a keyed order and applies a keyed
  bijection within windows of ``shuffle_buffer_size`` records, computed here with NumPy, so
  the order depends on ``(seed, epoch)`` alone, never on a backend's or TensorFlow's global
  random state. A resume re-reads at most the position's window.

Both implement ``open_partition`` over the canonical partitions of ``_layout.partitions``.

A backend only supplies raw column chunks; conversion, the element spec and the fingerprint
are shared here. Columns are dicts keyed by field name whose values are pyarrow arrays,
NumPy arrays, Python lists, or dicts of those.

Over 400 lines: both backend kinds and the shared eager tail use one fingerprint, one
conversion step and the file checks; splitting them would spread one contract over files.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from .._eager.source import EagerSource, from_arrays
from .._pipeline.fingerprint import Unfingerprintable, fingerprint as code_fingerprint
from .._layout.partitions import check_partitions, partition_offsets
from .._state.shuffle import permute
from .._streaming.source import StreamingSource, make_streaming
from .._streaming.workers import Deferred
from .. import _convert as cv
from .._convert.columns import is_arrow, rows_of, slice_rows, take_rows  # one row counter, slicer, taker, Arrow test
from .config import conversion_options
from .replay_order import tape

Columns = dict[str, Any]


# ----------------------------------------------------------------------------- columns


def concat_rows(parts: list[Mapping[str, Any]]) -> Columns:
    """Returns the row-wise concatenation of column dicts of the same structure."""
    if len(parts) == 1:
        return dict(parts[0])
    out: Columns = {}
    for k, v in parts[0].items():
        vals = [p[k] for p in parts]
        if isinstance(v, Mapping):
            out[k] = concat_rows(vals)
        elif is_arrow(v):
            import pyarrow as pa  # a dependency of both backends; only Arrow columns get here

            out[k] = pa.chunked_array([c for x in vals for c in (x.chunks if hasattr(x, "chunks") else [x])])
        elif isinstance(v, np.ndarray):
            out[k] = np.concatenate(vals)
        else:
            out[k] = [x for part in vals for x in part]
    return out


def _windows(chunks: Iterable[Columns], sizes: Iterable[int]) -> Iterator[Columns]:
    """Yields consecutive windows of the given ``sizes`` (the last one shorter if the rows run out)."""
    chunks = iter(chunks)
    pending: list[Columns] = []
    have = 0
    for size in sizes:
        while have < size:
            chunk = next(chunks, None)
            if chunk is None:
                break
            pending.append(chunk)
            have += rows_of(chunk)
        if not have:
            return
        joined, take = concat_rows(pending), min(size, have)
        yield slice_rows(joined, 0, take)
        have -= take
        pending = [slice_rows(joined, take, take + have)] if have else []


# ----------------------------------------------------------------------------- fingerprints


def digest(value: Any) -> str:
    """Returns a short stable hash of ``repr(value)``."""
    return hashlib.blake2b(repr(value).encode(), digest_size=6).hexdigest()


def file_stats(paths: Iterable[str]) -> list[tuple]:
    """Returns ``(path, size, mtime_ns)`` of each local file (remote paths stay as they are)."""
    out = []
    for p in sorted(set(map(str, paths))):
        try:
            st = os.stat(p)
            out.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((p,))
    return out


class FileIdentity:
    """The ``(size, mtime_ns)`` of each local data file as the source was built.

    ``check(path)`` runs where a reader opens a file: a file rewritten since the build would
    switch the data in the middle of a stream (the fingerprint only refuses stale cursors).
    """

    def __init__(self, stats: Iterable[tuple]):
        self.recorded = {s[0]: s[1:] for s in stats if len(s) == 3}

    def check(self, path: str) -> None:
        """Raises ``RuntimeError`` naming ``path`` when its size or mtime differ from the build's."""
        was = self.recorded.get(str(path))
        if was is None:
            return
        try:
            st = os.stat(path)
            now: tuple = (st.st_size, st.st_mtime_ns)
        except OSError as err:
            raise RuntimeError(f"{path}: the data file is gone since the source was built ({err}). "
                               "Restore the file or rebuild the source.") from err
        if now != was:
            raise RuntimeError(
                f"{path}: the data file changed since the source was built (size {was[0]} -> {now[0]} bytes, "
                f"mtime_ns {was[1]} -> {now[1]}); reading on would mix two versions of the data. Rebuild the "
                "source (cursors taken before the change are refused by the fingerprint)."
            )


class DamagedFileError(ValueError):
    """A data file a backend could not read; the message names the file, the cause is the backend's error."""


def damaged_file_error(path: str, err: BaseException, where: str = "") -> DamagedFileError:
    """Returns the error for a file a backend could not read: it names the file (and ``where``
    inside it, when known); raise it ``from err`` so the backend's own error stays the cause."""
    at = f" at {where}" if where else ""
    return DamagedFileError(f"{path}: reading the data file failed{at} ({type(err).__name__}: {err}). The file is damaged "
                      "or truncated: replace it, or leave it out of the data files.")


def _code_digest(fn: Any) -> str:
    """Returns a short hash of what ``fn`` computes (its code and closed-over values), else of its name."""
    try:
        return code_fingerprint(fn, "filter")[:12]
    except Unfingerprintable:  # it closes over an object whose computation cannot be read
        return digest((getattr(fn, "__module__", None), getattr(fn, "__qualname__", type(fn).__name__)))


def _spec_summary(spec: Any) -> Any:
    if isinstance(spec, Mapping):
        return sorted((k, _spec_summary(v)) for k, v in spec.items())
    return (tuple(spec.shape), str(spec.dtype))


# ----------------------------------------------------------------------------- backend kinds


class Backend:
    """What both kinds share: converting raw chunks, the element spec, the fingerprint, ``info``.

    ``fingerprint()`` is ``"data=...,order=...,schema=...,split=..."``: one short hash per
    named part, so a mismatch shows which part differs; ``fingerprint_parts()`` gives the dict.
    ``open(epoch, seed, start)`` is ``open_partition(0, 1, epoch, seed, start)``.
    """

    def __init__(self, conv: Any, n: int | None, data: Any, split: Any, info: Any, cfg: Any, order: Any):
        self.conv, self.n, self.info, self.cfg = conv, n, info, cfg
        self.chunk_size = cfg.chunk_size
        self.shuffle = cfg.shuffle
        self._parts = {
            "data": digest(data),
            "split": digest(str(split)),
            "schema": digest((_spec_summary(conv.element_spec), cfg.max_length, cfg.truncate, cfg.image_mode)),
            "order": digest(order),
        }
        if getattr(cfg, "filter", None) is not None:  # a part only then: streams without one keep their fingerprint
            self._parts["filter"] = _code_digest(cfg.filter)

    def num_records(self) -> int | None:
        return self.n

    def changes_rows(self) -> bool:
        """Returns whether a chunk's records may differ in number from the input rows it was read from."""
        return bool(self.conv.changes_rows)

    def element_spec(self) -> Any:
        return self.conv.element_spec

    def fingerprint_parts(self) -> dict[str, str]:
        return dict(self._parts)

    def fingerprint(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self._parts.items()))

    def open(self, epoch: int, seed: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        """Returns the converted chunks of ``epoch`` from stream position ``start`` on."""
        return self.open_partition(0, 1, epoch, seed, start)

    def open_partition(self, partition: int, partitions: int, epoch: int, seed: int,
                       start: int) -> Iterator[dict[str, np.ndarray]]:
        """Yields converted chunks of partition ``partition`` of ``partitions``, its epoch ``epoch``,
        from its position ``start`` on (``seed`` is the partition's own seed)."""
        for chunk in self.open_deferred(partition, partitions, epoch, seed, start):
            yield chunk.run()

    def open_deferred(self, partition: int, partitions: int, epoch: int, seed: int,
                      start: int) -> Iterator[Deferred]:
        """Yields the chunks of :meth:`open_partition` as deferred work, read in order here and
        prepared (taken, decoded, transformed, converted) wherever the streaming reader runs them."""
        raise NotImplementedError

    def bounds(self, partition: int, partitions: int) -> tuple[int, int | None]:
        """Returns the file-order rows ``[lo, hi)`` of a partition (``hi`` None: length unknown)."""
        if partitions == 1:
            return 0, self.n
        if self.n is None:
            raise ValueError(f"partitions={partitions} needs the number of records, which this stream does not know.")
        off = partition_offsets(self.n, partitions)
        return int(off[partition]), int(off[partition + 1])

    def convert(self, columns: Columns, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Returns the converted chunk whose records are the split's file-order ``rows``.

        Errors name the split's row: a shuffled chunk that fails is converted again one row
        at a time, so the error comes from the row at fault under its own number.
        """
        rows = np.asarray(rows)
        try:
            return self.conv(columns, int(rows[0]))
        except (ValueError, TypeError) as err:
            if len(rows) < 2 or (rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all()):
                raise
            for i, row in enumerate(rows.tolist()):
                try:
                    self.conv(take_rows(columns, np.array([i])), row)
                except type(err) as one:
                    raise one from None
            err.add_note(f"The chunk's records are the split's rows {rows[:16].tolist()}{' ...' if len(rows) > 16 else ''}.")
            raise


class RandomAccessBackend(Backend):
    """Streams by random access: ``read(indices) -> columns`` over ``n`` records.

    Partition ``c`` of length ``L`` at offset ``off`` reads ``off + permute(i, L, seed, epoch)``
    at position ``i`` (``off + i`` unshuffled): with one partition, the eager source's order.
    """

    def __init__(self, read: Callable[[np.ndarray], Columns], n: int, conv: Any, *, data: Any, split: Any,
                 info: Any, cfg: Any):
        super().__init__(conv, n, data, split, info, cfg, order=("random-access", cfg.shuffle))
        self.read = read

    def open_deferred(self, partition: int, partitions: int, epoch: int, seed: int,
                      start: int) -> Iterator[Deferred]:
        lo, hi = self.bounds(partition, partitions)
        n, step = hi - lo, self.chunk_size
        for first in range(start, n, step):
            pos = np.arange(first, min(first + step, n))
            rows = lo + (permute(pos, n, seed, epoch) if self.shuffle else pos)
            yield Deferred(len(rows), functools.partial(self._read_convert, rows))

    def _read_convert(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return self.convert(self.read(rows), rows)


# The split's file-order row of every record, carried through windowing as one more column.
_ROW = ("datarax_fn", "row")


class ReplayBackend(Backend):
    """Streams in file order: ``read_ranges([(lo, hi), ...])`` yields column chunks of those rows, in order.

    ``shard_bounds`` are the file rows where the backend can seek cheaply (parquet row groups,
    tfrecord files), from 0 to ``n``; None when it knows none (``read_ranges`` then replays
    from the start). Shuffled epochs follow :mod:`replay_order`: the partition's shards in a
    keyed order, records permuted within windows of ``shuffle_buffer_size``. Resuming seeks to
    the window's first shard piece and re-reads at most one window.
    """

    def __init__(self, read_ranges: Callable[[list[tuple[int, int | None]]], Iterator[Columns]], n: int | None,
                 conv: Any, *, shard_bounds: np.ndarray | None, data: Any, split: Any, info: Any, cfg: Any):
        window = cfg.shuffle_buffer_size if cfg.shuffle else None
        seeks = None if shard_bounds is None else np.asarray(shard_bounds, np.int64)
        order = ("shard-window", window) if seeks is None else ("shard-window", window, seeks.tolist())
        super().__init__(conv, n, data, split, info, cfg, order=order)
        self.read_ranges, self.window, self.shard_bounds = read_ranges, window, seeks

    def open_deferred(self, partition: int, partitions: int, epoch: int, seed: int,
                      start: int) -> Iterator[Deferred]:
        lo, hi = self.bounds(partition, partitions)
        if not self.shuffle:
            row = lo + start
            for cols in self.read_ranges([(lo + start, hi)]):
                for first in range(0, rows_of(cols), self.chunk_size):
                    part = slice_rows(cols, first, first + self.chunk_size)
                    k = rows_of(part)
                    yield Deferred(k, functools.partial(self.convert, part, np.arange(row, row + k)))
                    row += k
            return
        t = tape(self.shard_bounds, lo, hi, self.window, seed, epoch)
        k0, at = t.window_at(start)
        skip = start - at  # the resumed window is read whole, from its first piece
        for k, win in enumerate(_windows(self._tape_from(t, at), t.window_sizes(k0)), k0):
            rows = win.pop(_ROW)
            order = t.order(k, len(rows))
            for first in range(skip, len(rows), self.chunk_size):
                idx = order[first : first + self.chunk_size]
                yield Deferred(len(idx), functools.partial(self._take_convert, win, idx, rows[idx]))
            skip = 0

    def _take_convert(self, win: Columns, idx: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
        return self.convert(take_rows(win, idx), rows)

    def _tape_from(self, t: Any, position: int) -> Iterator[Columns]:
        """Yields the tape's records from ``position`` on, each chunk with its file rows under ``_ROW``."""
        pieces = list(t.pieces(position))
        firsts = np.array([lo for lo, _ in pieces], np.int64)
        known = all(hi is not None for _, hi in pieces)
        ends = np.cumsum([hi - lo for lo, hi in pieces]) if known else np.array([np.iinfo(np.int64).max])
        at = 0
        for cols in self.read_ranges(pieces):
            pos = np.arange(at, at + rows_of(cols))
            j = np.searchsorted(ends, pos, side="right")
            yield {**cols, _ROW: firsts[j] + pos - np.where(j > 0, ends[j - 1], 0)}
            at = int(pos[-1]) + 1 if len(pos) else at
        if known and at != ends[-1]:
            raise RuntimeError(
                f"the data gave {at} rows where its metadata promised {int(ends[-1])} (from row {pieces[0][0]} on); "
                "the files changed while reading, or their metadata is wrong. Rebuild the source."
            )


def range_by_range(read_range: Callable[[int, int | None], Iterator[Columns]]) -> Callable:
    """Returns ``read_ranges`` for a backend that reads one range ``[lo, hi)`` at a time."""

    def read_ranges(ranges: list[tuple[int, int | None]]) -> Iterator[Columns]:
        for lo, hi in ranges:
            yield from read_range(lo, hi)

    return read_ranges


# ----------------------------------------------------------------------------- building states


def select(fields: Mapping[str, Any], cfg: Any, schema: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns ``(selected fields, conversion options)``; per-field options of dropped features left out.

    ``max_length`` / ``image_mode`` dicts may name features of ``schema`` (default ``fields``)
    that the selection drops (one options dict for several selections); names of no feature at
    all still reach the Converter, which rejects them.
    """
    selected = cv.select(fields, cfg.include_keys, cfg.exclude_keys)
    every, kept = cv.read_paths(schema or fields), cv.read_paths(selected)

    def names(paths: list[str], key: str) -> bool:
        return any(p == key or p.startswith(key + ".") for p in paths)

    opts = conversion_options(cfg)
    for opt in ("max_length", "image_mode"):
        value = opts[opt]
        if isinstance(value, Mapping):
            opts[opt] = {k: v for k, v in value.items() if names(kept, k) or not names(every, k)} or None
    return selected, opts


def converter(fields: Mapping[str, Any], opts: Mapping[str, Any], probe: Columns | None, static: bool) -> Any:
    """Returns the conversion layer's ``Converter`` for the selected ``fields`` and options from :func:`select`."""
    return cv.Converter(fields, probe=probe, static=static, **opts)


def probe_of(columns: Columns, rows: int = 256) -> Columns:
    """Returns the first rows of ``columns``: the probe that fixes a transform's output spec."""
    return slice_rows(columns, 0, min(rows, rows_of(columns)))


SAMPLE_ROWS = 256  # the first records that stand for the split when the mode is decided


def sampled_nbytes(fields: Mapping[str, Any], opts: Mapping[str, Any], sample: Columns | None,
                   n: int | None) -> tuple[int | None, str]:
    """Returns ``(bytes, how)``: the decoded size of ``n`` records estimated from ``sample``, the
    split's first records (None when ``n`` or the sample is unknown: the split then streams)."""
    k = 0 if sample is None else rows_of(sample)
    if n is None or not k:
        return None, "the metadata gives no record count" if n is None else "no record could be read"
    size = cv.estimate_nbytes(converter(fields, opts, probe_of(sample), static=False), sample)
    return int(size * n / k), f"{n:,} records from the metadata, sized from the first {k}; nothing else was read"


def empty_split_error(what: str, split: Any) -> ValueError:
    return ValueError(f"{what}: split={str(split)!r} has no records; pick a split or slice that selects at least one.")


def eager_source(columns: Columns, fields: Mapping[str, Any], opts: Mapping[str, Any], cfg: Any, *, name: str,
                 info: Callable[[Mapping[str, Any]], Any]) -> EagerSource:
    """Returns an ``EagerSource`` of the converted ``columns`` (the whole split); ``info(conv.meta)`` is its info."""
    if not rows_of(columns):
        raise empty_split_error(name, cfg.split)
    check_partitions(cfg.partitions, rows_of(columns), name)
    n = rows_of(columns)
    conv = converter(fields, opts, probe_of(columns), static=False)
    bar = None
    if cfg.progress or (cfg.progress is None and n >= 20_000 and any(isinstance(f, cv.Image) for f in fields.values())):
        from tqdm.auto import tqdm  # optional display dependency, only when a bar is shown

        bar = tqdm(total=n, desc=name, unit="rec", leave=False)
    try:
        arrays = conv(columns, 0)
    finally:
        if bar is not None:
            bar.update(n)
            bar.close()
    # Without a transform every leaf is freshly converted (or copied off a foreign buffer by
    # owned_arrays) and held nowhere else, so device_put may alias it instead of copying.
    fresh = cfg.transform is None
    if fresh:
        arrays = cv.owned_arrays(arrays)
    elif not rows_of(arrays):
        raise ValueError(f"{name}: the transform returned no rows; an eager source needs at least one record.")
    return from_arrays(arrays, shuffle=cfg.shuffle, seed=cfg.seed, name=name, info=info(conv.meta), copy=not fresh,
                       partitions=cfg.partitions)


def streaming_source(backend: Backend, cfg: Any, name: str) -> StreamingSource:
    """Returns a ``StreamingSource`` at the start of ``backend``'s stream, over ``cfg.partitions`` partitions."""
    return make_streaming(backend, shuffle=cfg.shuffle, seed=cfg.seed, name=name, num_epochs=cfg.num_epochs,
                          prefetch=cfg.prefetch, partitions=check_partitions(cfg.partitions, backend.num_records(), name),
                          num_workers=cfg.num_workers)


__all__ = [
    "Backend", "RandomAccessBackend", "ReplayBackend", "concat_rows", "converter", "digest", "eager_source", "probe_of",
    "DamagedFileError", "FileIdentity", "damaged_file_error", "empty_split_error", "file_stats", "range_by_range", "sampled_nbytes", "select", "streaming_source", "take_rows",
]
