"""Cursors: the small JSON dict that records a stream's position, and the check that it fits a state.

A cursor is ``{"version", "kind", "index", "epoch", "seed", ...}`` plus every field that
shapes the stream (fingerprint, shuffle, stages); restoring one on another stream raises
and names each field that differs. A stream that filters or expands adds ``offset`` (records
served of the chunk at ``index``), and with partitions holds a list per position field, one
value per partition (:func:`check_chunk_cursor`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import INT32_MAX, check_seed, short_repr

CURSOR_VERSION = 1
# A real cursor is a few hundred bytes, a pipeline's nests its source's one level down.
# Restoring reads files users are sent, so anything far larger or deeper is refused
# before it is compared or quoted: a 100k-deep list would raise RecursionError, and a
# 50 MB field would be copied whole into the error message.
MAX_CURSOR_BYTES = 2**20
MAX_CURSOR_DEPTH = 32


def check_cursor_bounds(cursor: Any) -> None:
    """Raises ValueError when ``cursor`` nests deeper than ``MAX_CURSOR_DEPTH`` or holds over ``MAX_CURSOR_BYTES``.

    Walks without recursion and stops at the first bound passed, so it costs at most
    the bound, whatever the cursor holds.
    """
    size, stack = 0, [(cursor, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_CURSOR_DEPTH:
            raise ValueError(
                f"restore_cursor: this cursor nests deeper than {MAX_CURSOR_DEPTH} levels; a dfn.cursor dict is "
                "three deep at most. Pass the dict dfn.cursor(state) returned, unchanged (json.load of the saved file)."
            )
        if isinstance(value, dict):
            stack.extend((x, depth + 1) for pair in value.items() for x in pair)
        elif isinstance(value, (list, tuple)):
            stack.extend((x, depth + 1) for x in value)
        size += len(value) if isinstance(value, (str, bytes, dict, list, tuple)) else 8
        if size > MAX_CURSOR_BYTES:
            raise ValueError(
                f"restore_cursor: this cursor holds over {MAX_CURSOR_BYTES} bytes; a dfn.cursor dict holds a few "
                "hundred. Pass the dict dfn.cursor(state) returned, unchanged (json.load of the saved file)."
            )


def ints(value: Any) -> int | list[int]:
    """Returns a 0-d array as an int, a 1-d one (a value per partition) as a list of ints."""
    return int(value) if np.ndim(value) == 0 else [int(x) for x in np.ravel(value)]


def make_cursor(kind: str, index: Any, epoch: Any, seed: int, partitions: int = 1, **fields: Any) -> dict[str, Any]:
    """Returns a version-1 cursor: ``{"version", "kind", "index", "epoch", "seed", **fields}``.

    ``partitions`` is recorded only above 1, so an unpartitioned stream's cursor is the same
    dict as before partitions existed. ``index`` and ``epoch`` are ints, or one per partition.
    """
    more = {"partitions": int(partitions)} if partitions != 1 else {}
    return {"version": CURSOR_VERSION, "kind": kind, "index": ints(index), "epoch": ints(epoch),
            "seed": int(seed), **fields, **more}


def check_cursor(cursor: Any, kind: str, expected: dict[str, Any], num_records: int | None,
                 partitions: int = 1) -> tuple[int, int]:
    """Returns ``(index, epoch)`` of ``cursor`` after checking it belongs to this stream.

    ``expected`` maps every field that shapes the stream (fingerprint, seed, shuffle, ...)
    to this state's value; all differences are reported in one ``ValueError``. A cursor
    without ``partitions`` has one (see ``make_cursor``); a partitioned stream moves only by
    multiples of its partitions, so a position between them is refused.
    """
    cursor = _checked(cursor, kind, expected, partitions, ("index", "epoch", "seed"))
    if "offset" in cursor:
        raise ValueError(
            "restore_cursor: this cursor has an offset: it was saved on a stream that filters or expands its "
            "records (filter=, or a transform that changes the row count), and this stream keeps one record per "
            "input row. Rebuild the state with the same filter and transform as when the cursor was saved."
        )
    index, epoch = int(cursor["index"]), int(cursor["epoch"])
    upper = INT32_MAX if num_records is None else num_records - 1
    if not (0 <= index <= upper and 0 <= epoch <= INT32_MAX):
        raise ValueError(
            f"restore_cursor: index={index}, epoch={epoch} are out of range (index in [0, {upper}], "
            "epoch in [0, 2**31 - 1])."
        )
    total = None if num_records is None else epoch * num_records + index
    if partitions > 1 and total % partitions:
        raise ValueError(
            f"restore_cursor: the cursor is {total} records into the stream (epoch={epoch}, index={index}), "
            f"which is not a multiple of partitions={partitions}; a partitioned stream only moves by "
            "batches that are multiples of it. Restore the dict dfn.cursor(state) returned, unchanged."
        )
    return index, epoch


def check_chunk_cursor(cursor: Any, kind: str, expected: dict[str, Any],
                       lengths: list[int | None]) -> tuple[list[tuple[int, int, int]], int]:
    """Returns every partition's ``(epoch, index, offset)`` of the cursor of a stream that filters or expands,
    and ``served`` (the records the stream has served since it began).

    ``lengths`` are the partitions' input rows (one entry per partition; None: unknown). With
    one partition the fields are ints, with more a list of one int per partition (``served``: one int).
    """
    parts = len(lengths)
    if isinstance(cursor, dict) and "offset" not in cursor and "index" in cursor:
        raise ValueError(
            "restore_cursor: this cursor has no offset: it was saved on a stream that keeps one record per input "
            "row, and this stream filters or expands its records (filter=, or a transform that changes the row "
            "count). Rebuild the state with the same filter and transform as when the cursor was saved."
        )
    cursor = _checked(cursor, kind, expected, parts, ("offset", "index", "epoch", "seed", "served"),
                      per_partition=parts > 1)
    served = int(cursor["served"])
    if not 0 <= served <= INT32_MAX or served % parts:
        raise ValueError(f"restore_cursor: served={served} is out of range (in [0, 2**31 - 1], a multiple of "
                         f"partitions={parts}); restore the dict dfn.cursor(state) returned, unchanged.")
    pos = list(zip(*([cursor[k]] if parts == 1 else cursor[k] for k in ("epoch", "index", "offset"))))
    for c, ((epoch, index, offset), n) in enumerate(zip(pos, lengths)):
        upper = INT32_MAX if n is None else n
        if not (0 <= index <= upper and 0 <= epoch <= INT32_MAX and 0 <= offset <= INT32_MAX):
            where = f" of partition {c}" if parts > 1 else ""
            raise ValueError(
                f"restore_cursor: index={index}, epoch={epoch}, offset={offset}{where} are out of range (index in "
                f"[0, {upper}], epoch and offset in [0, 2**31 - 1])."
            )
    return [(int(e), int(i), int(o)) for e, i, o in pos], served


def _checked(cursor: Any, kind: str, expected: dict[str, Any], partitions: int, names: tuple[str, ...],
             per_partition: bool = False) -> dict[str, Any]:
    """Returns ``cursor`` (with ``partitions``) after the checks every cursor passes: its type, size,
    version, kind, fields, their types (``per_partition``: position fields are lists of one int per
    partition) and the fields that shape the stream."""
    if not isinstance(cursor, dict):
        raise TypeError(f"restore_cursor: cursor must be the dict from dfn.cursor(state); got {type(cursor).__name__}.")
    check_cursor_bounds(cursor)
    cursor = {"partitions": 1, **cursor}
    expected = {**expected, "partitions": partitions}
    version = cursor.get("version")
    if version != CURSOR_VERSION:
        raise ValueError(
            f"restore_cursor: this cursor has version={short_repr(version)}; this datarax_fn reads version "
            f"{CURSOR_VERSION} only (cursors saved before versioning have none). Save a new cursor with "
            "dfn.cursor(state), or restore the checkpointed PyTree instead."
        )
    if cursor.get("kind") != kind:
        raise ValueError(
            f"restore_cursor: this cursor has kind={short_repr(cursor.get('kind'))} and cannot restore a {kind!r} "
            "state; restore each state from its own dfn.cursor (a pipeline's cursor holds its source's under 'source')."
        )
    missing = sorted({*names, *expected} - set(cursor))
    if missing:
        raise ValueError(f"restore_cursor: the cursor lacks {missing}; pass the dict from dfn.cursor(state).")
    for name in names:
        value = cursor[name]
        listed = per_partition and name not in ("seed", "served")  # the stream's, not a partition's
        values = value if listed and isinstance(value, list) else [value]
        if listed and (not isinstance(value, list) or len(value) != partitions):
            raise TypeError(
                f"restore_cursor: cursor[{name!r}] must be a list of {partitions} ints, one per partition; got "
                f"{short_repr(value)}."
            )
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
            raise TypeError(
                f"restore_cursor: cursor[{name!r}] must be an int; got {type(value).__name__} {short_repr(value)}."
            )
    check_seed(cursor["seed"], "restore_cursor")
    diffs = [f"{k} (cursor {short_repr(cursor[k])}, this state {short_repr(v)})"
             for k, v in expected.items() if cursor[k] != v]
    if diffs:
        raise ValueError(
            "restore_cursor: the cursor was saved on a different stream; it differs in "
            + "; ".join(diffs)
            + ". Rebuild the state with the same data, options and seed as when the cursor was saved."
        )
    return cursor
