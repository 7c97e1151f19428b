"""Seeking an HF parquet stream by row group, read with pyarrow a batch at a time.

HF's parquet reader decodes a whole row group before it yields a row (its batch is the row
group, and pyarrow's dataset scanner decodes row groups whole), so a reader open in each of
``C`` partitions held ``C`` decoded row groups (``Dataset.to_parquet`` writes ~100 MB ones).
Here the same rows are read with ``pyarrow.parquet.ParquetFile.iter_batches``, which decodes
``batch`` rows at a time, and cast as HF casts them: to the builder's features (its
``_cast_table``), then to the stream's own (its formatting step), so the values are HF's.

Memory per piece of a row group a partition reads: the piece's decoded rows when they fit
``READ_AHEAD`` bytes per column (read at once, then the reader is handed on), else one open
reader (about a dictionary and a page per column, 1 MB each as pyarrow writes them) and one batch. Parquet has no row index inside a
row group: starting at row ``r`` decodes the rows before it. A reader left where a piece
ended is kept (:class:`Readers`) for the piece that starts there (partition ``c + 1``
starts where partition ``c`` ends), so opening ``C`` partitions of one row group decodes it
about once, not ``C / 2`` times.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import backends as bk
from .hf_stream import checked_reader, table_columns

READ_BUFFER = 1 << 16  # bytes pyarrow reads from a file at a time: a reader holds about a page, not a column chunk
READ_AHEAD = 2 << 20  # decoded bytes per column of a piece read at once: an open reader holds about a page and a dictionary per column
KEPT_READERS = 4  # readers kept open where a piece ended, for the piece that starts there


@dataclasses.dataclass(frozen=True)
class ParquetGroups:
    """The row groups of a parquet stream, in stream order, and how to read and cast their rows."""

    files: list[str]  # the file of each row group
    groups: list[int]  # each row group's index inside its file
    lengths: np.ndarray  # rows of each row group
    meta: dict[str, Any]  # each file's parquet metadata, read once, shared by every reader
    columns: list[str]
    file_features: Any  # the builder's features of ``columns``
    features: Any  # the stream's features of ``columns``
    options: dict[str, Any]  # ParquetFile options: the builder's scan options that change what is read
    opener: Callable  # the builder's ``open`` (fsspec's for remote files)

    def __post_init__(self):  # Features.arrow_schema is built anew on every access: once here, not per batch
        object.__setattr__(self, "_schemas", (self.file_features.arrow_schema, self.features.arrow_schema))

    def cast(self, table: Any) -> Any:
        """Returns ``table`` cast as HF's reader casts it."""
        from datasets.table import cast_table_to_features, table_cast  # HF's own casts

        file_schema, schema = self._schemas
        table = table_cast(table, file_schema)
        return table if table.schema == schema else cast_table_to_features(table, self.features)


class GroupReader:
    """pyarrow's reader of row group ``k``, positioned at its row ``at``."""

    def __init__(self, groups: ParquetGroups, k: int, batch: int):
        import pyarrow.parquet as pq  # a dependency of datasets

        path, self.k, self.at, self._rest = groups.files[k], k, 0, None
        self._stack = contextlib.ExitStack()
        local = "://" not in path and os.path.isfile(path)  # pyarrow's own file reads without the GIL
        source = path if local else self._stack.enter_context(groups.opener(path, "rb"))
        pf = self._stack.enter_context(contextlib.closing(pq.ParquetFile(source, metadata=groups.meta[path], **groups.options)))
        self._batches = pf.iter_batches(batch_size=batch, row_groups=[groups.groups[k]], columns=groups.columns,
                                        use_threads=False)

    def read(self, skip: int, stop: int) -> Iterator[Any]:
        """Yields the record batches of rows ``[skip, stop)`` (``skip >= at``); the rows before are decoded, not kept."""
        while self.at < stop:
            rb = self._rest if self._rest is not None else next(self._batches, None)
            if rb is None:
                return
            self._rest = None
            first = self.at
            self.at += rb.num_rows
            if self.at > stop:  # the rest of the batch starts the next piece
                self._rest, self.at = rb.slice(stop - first), stop
                rb = rb.slice(0, stop - first)
            if self.at > skip:
                yield rb.slice(max(skip - first, 0))

    def close(self) -> None:
        self._stack.close()


class Readers:
    """Readers left where a piece ended, at most ``KEPT_READERS``, handed to the piece that starts at or after there.

    Pieces are read on the stream's reader thread and at build time on the caller's: the lock
    guards the handing over; a reader is used by one piece at a time.
    """

    def __init__(self, groups: ParquetGroups, batch: int):
        self.groups, self.batch = groups, batch
        self._kept: collections.OrderedDict[int, GroupReader] = collections.OrderedDict()
        self._lock = threading.Lock()

    def take(self, k: int, skip: int) -> GroupReader:
        """Returns a reader of row group ``k`` at or before row ``skip``: a kept one, or a new one at row 0."""
        with self._lock:
            kept = self._kept.get(k)
            if kept is not None and kept.at <= skip:
                return self._kept.pop(k)
        return GroupReader(self.groups, k, self.batch)

    def keep(self, reader: GroupReader) -> None:
        """Keeps ``reader`` for the piece that starts where it stands (closing the oldest past the limit)."""
        if reader.at >= self.groups.lengths[reader.k]:
            reader.close()
            return
        with self._lock:
            old = self._kept.pop(reader.k, None)
            self._kept[reader.k] = reader
            evicted = self._kept.popitem(last=False)[1] if len(self._kept) > KEPT_READERS else None
        for r in (old, evicted):
            if r is not None:
                r.close()

    def piece(self, files: list[str], row_groups_list: list[tuple[int]], k: int, skip: int, stop: int) -> Iterator[Any]:
        """Yields row group ``k``'s rows ``[skip, stop)`` as cast tables (``files`` / ``row_groups_list``
        name them for :func:`checked_reader`'s errors)."""
        import pyarrow as pa  # a dependency of datasets

        reader = self.take(k, skip)
        try:
            batches = reader.read(skip, stop)
            first = next(batches, None)
            if first is None:
                self.keep(reader)
                return
            small = first.nbytes * (stop - skip) <= READ_AHEAD * len(self.groups.columns) * max(first.num_rows, 1)
            if small:  # read it now and hand the reader on
                held = collections.deque([first, *batches])
                self.keep(reader)
                reader = None
                while held:  # each batch let go once it is handed out
                    yield self.groups.cast(pa.Table.from_batches([held.popleft()]))
                return
            yield self.groups.cast(pa.Table.from_batches([first]))
            for rb in batches:
                yield self.groups.cast(pa.Table.from_batches([rb]))
            self.keep(reader)
            reader = None
        finally:
            if reader is not None:  # stopped early or failed: its position is not worth keeping
                reader.close()


def seek_reader(groups: ParquetGroups, ends: np.ndarray, first: int, n: int, chunk: int,
                identity: bk.FileIdentity | None) -> Callable:
    """Returns ``read_range(lo, hi)`` over row groups: it reads from the group holding row ``lo``
    on, group by group, ``chunk`` rows at a time; the split slice is rows ``first + [0, n)``."""
    readers = Readers(groups, chunk)
    piece = checked_reader(readers.piece, identity)  # checks each file as it opens, names it in errors

    def read_range(lo: int, hi: int | None) -> Any:
        row, end = first + lo, first + (n if hi is None else hi)
        k = int(np.searchsorted(ends, row, side="right")) - 1
        while row < end:
            for table in piece(files=[groups.files[k]], row_groups_list=[(groups.groups[k],)], k=k,
                               skip=int(row - ends[k]), stop=int(min(ends[k + 1], end) - ends[k])):
                yield table_columns(table)
            row, k = int(ends[k + 1]), k + 1

    return read_range


def _scan_options(builder: Any) -> dict[str, Any]:
    """Returns the ``ParquetFile`` options that read as the builder's ``fragment_scan_options`` do."""
    opts = builder.config.fragment_scan_options
    out: dict[str, Any] = {"pre_buffer": False, "buffer_size": READ_BUFFER, "page_checksum_verification": True,
                           "arrow_extensions_enabled": False}  # the scanner's defaults; checksums as verify_pages sets them
    for name in ("page_checksum_verification", "arrow_extensions_enabled", "thrift_string_size_limit",
                 "thrift_container_size_limit", "decryption_properties"):
        if opts is not None and getattr(opts, name, None) is not None:
            out[name] = getattr(opts, name)
    return out


def parquet_row_groups(stream: Any) -> ParquetGroups | None:
    """Returns the row groups of a parquet stream, or None unless its rows can be read by row group.

    The stream must read parquet files through HF's parquet builder without ``filters`` and
    without ``map`` / ``filter`` / ``shuffle`` / ``skip`` / node splits of its own (those
    streams are replayed); ``select_columns`` and ``with_format`` are fine. Row counts come
    from the parquet footers, read once here. The builder, its config and the files it reads
    are HF internals; tests/test_hf.py::test_hf_stream_internals_the_loader_reads_are_there checks them.
    """
    import datasets as hd  # lazy: datasets is optional and slow to import
    import datasets.iterable_dataset as hi  # lazy: datasets is optional and slow to import
    import pyarrow.parquet as pq  # a dependency of datasets
    from datasets.packaged_modules.parquet.parquet import Parquet  # HF's own parquet reader

    if getattr(stream, "_distributed", None) is not None or not stream.features:
        return None
    it = stream._ex_iterable  # noqa: SLF001 (the files a stream reads are not public)
    while isinstance(it, hi.SelectColumnsIterable):
        it = it.ex_iterable
    builder = getattr(getattr(it, "generate_tables_fn", None), "__self__", None)
    if not isinstance(it, hi.ArrowExamplesIterable) or not isinstance(builder, Parquet) or builder.config.filters:
        return None
    files = [str(f) for f in it.kwargs.get("files") or ()]
    chosen = it.kwargs.get("row_groups_list") or [None] * len(files)
    columns = list(stream.features)
    if not files or not builder.info.features or any(c not in builder.info.features for c in columns):
        return None
    # The builder's module-level open: xopen (hub, fsspec URLs) when HF streams, else the builtin.
    opener = getattr(sys.modules[type(builder).__module__], "open", open)
    meta: dict[str, Any] = {}
    out_files, groups, lengths = [], [], []
    for f, picked in zip(files, chosen):
        if f not in meta:
            try:
                with opener(f, "rb") as fh:
                    meta[f] = pq.ParquetFile(fh).metadata
            except Exception as err:  # noqa: BLE001 (a footer pyarrow cannot read: name the file)
                raise bk.damaged_file_error(f, err, "its footer (the parquet metadata)") from err
            if not set(columns) <= set(meta[f].schema.to_arrow_schema().names):
                return None  # HF fills in a column a file lacks; that stream is replayed
        for g in range(meta[f].num_row_groups) if picked is None else picked:
            out_files.append(f)
            groups.append(int(g))
            lengths.append(meta[f].row_group(g).num_rows)
    return ParquetGroups(out_files, groups, np.asarray(lengths, np.int64), meta, columns,
                         hd.Features({c: builder.info.features[c] for c in columns}),
                         hd.Features({c: stream.features[c] for c in columns}), _scan_options(builder), opener)


__all__ = ["READ_AHEAD", "GroupReader", "ParquetGroups", "Readers", "parquet_row_groups", "seek_reader"]
