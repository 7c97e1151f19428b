"""Reading an HF ``IterableDataset``: each reader's own copy, its data files, replaying it from the start.

Parquet streams seek by row group instead (``hf_parquet.py``). HF has no public view of a
stream's files; the functions here reach them through the examples-iterable chain
(``_ex_iterable`` / ``ex_iterable``, the innermost iterable's ``generate_tables_fn`` and ``kwargs``). Each use says why;
tests/test_hf.py::test_hf_stream_internals_the_loader_reads_are_there fails when HF moves one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from . import backends as bk


def table_columns(table: Any) -> bk.Columns:
    return {k: table.column(k) for k in table.column_names}


def file_reader(ds: Any) -> Any:
    """Returns the innermost examples iterable of an ``IterableDataset``: the one that opens the
    data files (HF's ``ArrowExamplesIterable`` / ``ExamplesIterable``, their ``kwargs["files"]``
    listing the files), or None.

    HF has no public view of a stream's files; the chain of ``ex_iterable`` attributes is the
    one way to them. tests/test_hf.py::test_hf_stream_internals_the_loader_reads_are_there
    fails when HF moves them.
    """
    it, seen = getattr(ds, "_ex_iterable", None), 0
    while it is not None and seen < 32:
        if "files" in (getattr(it, "kwargs", None) or {}):
            return it
        it, seen = getattr(it, "ex_iterable", None), seen + 1
    return None


def stream_files(ds: Any) -> list[str]:
    """Returns the files an ``IterableDataset`` reads (from its innermost examples iterable)."""
    it = file_reader(ds)
    return [str(f) for f in it.kwargs["files"] or ()] if it is not None else []


def checked_reader(fn: Callable, identity: bk.FileIdentity | None) -> Callable:
    """Returns HF's file reader ``fn`` (a builder's ``_generate_tables`` / ``_generate_examples``,
    called once per shard with the shard's ``files``) that checks each file's identity as it
    opens it and names the file (and row group) when the reader fails on it."""

    def read_files(**kwargs: Any) -> Any:
        files = [str(f) for f in kwargs.get("files") or ()]
        for f in files if identity is not None else ():
            identity.check(f)
        groups = kwargs.get("row_groups_list")
        items = fn(**kwargs)
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except Exception as err:  # noqa: BLE001 (any reader failure: the file is what the user can fix)
                # When preparing, HF hands all files at once in a tracked_list that remembers the one being read.
                current = getattr(kwargs.get("files"), "last_item", None)
                named = [str(current)] if current is not None else files
                one = len(files) == 1 and groups and groups[0] is not None and len(groups[0]) == 1
                raise bk.damaged_file_error(" / ".join(named) or "a data file", err,
                                            f"row group {groups[0][0]}" if one else "") from err
            yield item

    return read_files


def verify_pages(builder: Any) -> None:
    """Makes HF's parquet builder verify page checksums (pyarrow skips them by default, so a
    flipped bit in a page that carries a CRC would decode to other values)."""
    from datasets.packaged_modules.parquet.parquet import Parquet  # HF's own parquet reader

    if isinstance(builder, Parquet) and getattr(builder.config, "fragment_scan_options", "") is None:
        import pyarrow.dataset as pds  # a dependency of datasets

        builder.config.fragment_scan_options = pds.ParquetFragmentScanOptions(page_checksum_verification=True)


def guard_files(ds: Any, identity: bk.FileIdentity) -> Any:
    """Returns ``ds`` (an owned copy) whose file reader checks each file's identity when it opens
    it, verifies parquet page checksums and names the file in the errors of a damaged one."""
    it = file_reader(ds)
    name = next((a for a in ("generate_tables_fn", "generate_examples_fn") if hasattr(it, a)), None)
    if name is None:
        return ds
    fn = getattr(it, name)
    verify_pages(getattr(fn, "__self__", None))
    setattr(it, name, checked_reader(fn, identity))
    return ds


def own(stream: Any) -> Any:
    """Returns a copy of an ``IterableDataset`` whose iteration state is its own.

    HF keeps the progress of an iteration on the examples-iterable objects themselves (their
    ``_state_dict``, reset by every new iteration and read back by ``map`` / ``filter`` to
    resume), and ``select_columns`` / ``with_format`` / ``shard`` copies share those objects.
    Two readers over one object (two sources built from it, two partitions, a probe and a
    reader) would step on each other's positions, so every reader iterates its own copy.
    The copy shares the hub filesystem's process-wide cache (each ``IterableDataset`` holds a
    reference to it, and other readers' threads grow it while this one copies).
    tests/test_hf.py::test_hf_stream_internals_the_loader_reads_are_there checks these internals.
    """
    from huggingface_hub import HfFileSystem  # a dependency of datasets

    cache = getattr(HfFileSystem, "_cache", None)
    try:
        return copy.deepcopy(stream, {} if cache is None else {id(cache): cache})
    except Exception as err:  # noqa: BLE001 (any failure means the stream cannot be owned)
        raise ValueError(
            f"from_hf: cannot copy this IterableDataset ({type(err).__name__}: {err}), and sources sharing one "
            "would read each other's positions. Build it from data files or a Dataset (load_dataset(..., "
            "streaming=True) on the files), or pass a Dataset with streaming=True."
        ) from err


def replay_reader(stream: Any, first: int, last: int | None, chunk: int) -> Callable:
    """Returns ``read_range(lo, hi)`` that iterates the stream from its start (json, csv, text,
    and streams whose rows have no metadata): a resume costs every row before ``lo``."""

    def read_range(lo: int, hi: int | None) -> Any:
        skip = first + lo
        left = None if hi is None and last is None else (hi if hi is not None else last - first) - lo
        for table in own(stream).iter(batch_size=chunk):
            if skip >= len(table):
                skip -= len(table)
                continue
            if skip:
                table, skip = table.slice(skip), 0
            if left is not None:
                table, left = table.slice(0, left), left - min(left, len(table))
            if len(table):
                yield table_columns(table)
            if left == 0:
                return

    return read_range


__all__ = ["checked_reader", "table_columns", "stream_files", "file_reader", "guard_files", "own", "replay_reader", "verify_pages"]
