"""The data files of a TFDS split: which file and record each selected row is, and the checks on them.

A split expression reads its records from files in a fixed order (the split's
``file_instructions``). :class:`SplitFiles` maps a selection row back to its file and its
record there, so that

* a damaged file (a flipped bit, a cut) raises ``DamagedFileError`` naming the file and the
  record, where TensorFlow says only ``corrupted record at <byte>`` and array_record
  ``Corrupted Riegeli/records file``, and a tfrecord file cut at a frame boundary (which
  TensorFlow reads as a shorter file) is named with the count its metadata promised;
* a file rewritten since the source was built raises naming it (``FileIdentity``), checked
  on the files of every chunk after it is read and before it is used, so a stream never
  hands on records of the new file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import backends as bk


class SplitFiles:
    """The files a split expression reads, in order: ``paths[i]`` holds the selection rows
    ``starts[i] .. starts[i + 1] - 1``, its records ``skips[i]`` on (``counts[i]`` in the file)."""

    def __init__(self, instructions: Sequence[Any], identity: bk.FileIdentity):
        kept = [fi for fi in instructions if fi.take]
        self.paths = [str(fi.filename) for fi in kept]
        self.skips = [int(fi.skip) for fi in kept]
        self.counts = [int(fi.examples_in_shard) for fi in kept]
        self.starts = np.concatenate([[0], np.cumsum([int(fi.take) for fi in kept])]).astype(np.int64)
        self.identity = identity

    def file_of(self, rows: np.ndarray) -> np.ndarray:
        """Returns the index into ``paths`` of each selection row."""
        return np.searchsorted(self.starts, np.asarray(rows, np.int64), side="right") - 1

    def where(self, row: int) -> tuple[str, int]:
        """Returns ``(file, record in that file)`` of selection row ``row``."""
        i = int(self.file_of(np.array([row]))[0])
        return self.paths[i], self.skips[i] + row - int(self.starts[i])

    def check(self, rows: np.ndarray) -> None:
        """Raises ``RuntimeError`` naming the first file of ``rows`` changed since the build."""
        for i in np.unique(self.file_of(rows)).tolist():
            self.identity.check(self.paths[i])

    def check_range(self, lo: int, hi: int) -> None:
        """:meth:`check` for the rows ``lo .. hi - 1`` (every file they span)."""
        if hi > lo:
            first, last = self.file_of(np.array([lo, hi - 1])).tolist()
            self.check(self.starts[first : last + 1])


def split_files(info: Any, split: Any, identity: bk.FileIdentity) -> SplitFiles | None:
    """Returns the files of ``split`` (a split expression or ``ReadInstruction``), or None where
    the metadata lists none (an unprepared split, catalog metadata under ``mock_data``)."""
    try:
        return SplitFiles(info.splits[split].file_instructions, identity)
    except Exception:  # noqa: BLE001 (no file instructions: there is nothing to name or check)
        return None


# ----------------------------------------------------------------------------- array_record


def read_records(source: Any, keys: list[int], files: SplitFiles | None) -> list:
    """Returns the ``tfds.data_source`` rows ``keys``: a changed file raises ``RuntimeError``
    naming it, a damaged one ``DamagedFileError`` naming it and the record."""
    try:
        rows = source.__getitems__(keys)
    except Exception as err:  # any reader failure: the file is what the user can fix
        if files is None:
            raise
        files.check(np.asarray(keys))  # a rewritten file explains the failure better
        raise _damaged_key(source, keys, files, err)  # its cause: the failing record's own error
    if files is not None:
        files.check(np.asarray(keys))
    return rows


def _damaged_key(source: Any, keys: list[int], files: SplitFiles, err: Exception) -> Exception:
    """Returns the error naming the first of ``keys`` that fails alone (re-read one at a time)."""
    for k in keys:
        try:
            source[k]
        except Exception as one:  # noqa: BLE001 (the reader's own error, kept as the cause)
            path, record = files.where(k)
            out = bk.damaged_file_error(path, one, f"record {record}")
            out.__cause__ = one
            return out
    return err


# ----------------------------------------------------------------------------- tfrecord


def checked_batches(batches: Iterator[Any], files: SplitFiles | None, at: list[int], rows_of: Any) -> Iterator[Any]:
    """Yields ``batches``, each after checking that the files it was read from did not change
    since the build; ``at[0]`` is the selection row of the next batch (updated as they go)."""
    for batch in batches:
        k = rows_of(batch)
        if files is not None:
            files.check_range(at[0], at[0] + k)
        at[0] += k
        yield batch


def damaged_tfrecord(files: SplitFiles, tf: Any, row: int = 0) -> tuple[str, str] | None:
    """Returns ``(file, where)`` of the first record TensorFlow cannot read in ``files`` (raw
    frames only: nothing decoded), or of a file holding fewer records than its metadata says;
    None when every file reads whole. The scan starts at the file of selection row ``row``
    (where reading stopped), then wraps around: a short file is only noticed at the end."""
    j = int(files.file_of(np.array([min(row, int(files.starts[-1]) - 1)]))[0]) if len(files.paths) else 0
    order = list(range(j, len(files.paths))) + list(range(j))
    for path, count in {files.paths[i]: files.counts[i] for i in order}.items():  # a file read twice: once
        i = 0
        try:
            for _ in tf.data.TFRecordDataset(path):
                i += 1
        except tf.errors.OpError:
            return path, f"record {i}"
        if i != count:
            return path, f"record {i} (the file ends there; its metadata says {count} records)"
    return None


__all__ = ["SplitFiles", "checked_batches", "damaged_tfrecord", "read_records", "split_files"]
