"""Packing: variable-length sequences laid first-fit into fixed-length rows, with segment ids and positions.

The layout is grain's ``FirstFitPackIterDataset`` (with ``shuffle_bins=False``) and MaxText's:
records are read in the source's stream order into a *group* of ``num_bins`` empty rows; each
record goes to the first row where every packed field still fits; the first record that fits
in no row closes the group, whose non-empty rows are served in row order, and opens the next
group. A packed row holds, for each packed field ``k``, the values ``k``, ``k_segment_ids``
(1, 2, ... per record in the row; 0 is padding) and ``k_positions`` (0, 1, ... inside each
record), all padded with zeros to the field's length.

A group is a pure function of the source position where it starts, so the state is that
position (the source state itself) plus the rows of its group already served: resume re-reads
at most one group. Packing runs on the host, for eager and streaming sources alike.

A source of known length is moved to where the next group starts by counting records. One
that filters or expands (or of unknown length) cannot be: its position is only known from the
states ``get_batch`` returns. There a group starts ``skip`` records past a state the source
returned, one of the states every ``read`` records from where packing started, so the position
is ``(that state, skip)`` and reading it again steps on the same grid of states.

The state, its read-ahead cache, first fit and the generic functions share the group's
invariants, so they stay in one module (just past 400 lines).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .._eager.source import EagerSource
from .._state import checks, contract, cursors, tracing
from .._streaming.source import EndOfStream, StreamingSource
from .mix import Mixture, advance
from .partitioned import by_partition
from .positions import Counted, StateGrid, moved, position

PyTree = Any


class _Groups:
    """The static cache of a packed state: the last groups packed and the records read ahead.

    Only caches work (the output depends on the state alone); compares by what fixes the packing.
    """

    __slots__ = ("groups", "key", "reader")

    def __init__(self, key: tuple, reader: Counted | StateGrid):
        self.key = key
        self.groups: dict[Any, tuple[dict[str, np.ndarray], int]] = {}
        self.reader = reader  # the records read ahead, and how the source's position moves

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Groups) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Groups{self.key}"


class Packed(contract.Source):
    """A packed stream: the source at the start of the current group plus the rows of it already served.

    Build one with ``dfn.pack``; ``dfn.get_batch`` returns packed rows on the host.
    """

    source: Any
    row: Any
    skip: Any  # records of `source` before the group starts (0 unless the source's length is unknown)
    lengths: tuple[tuple[str, int], ...] = eqx.field(static=True)
    num_bins: int = eqx.field(static=True)
    read: int = eqx.field(static=True)
    groups: _Groups = eqx.field(static=True)


def _check_lengths(lengths: Any, spec: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(lengths, Mapping) or not lengths:
        raise TypeError(f"pack: lengths must be a non-empty dict of field -> row length, e.g. {{'tokens': 1024}}; "
                        f"got {type(lengths).__name__} {lengths!r}.")
    out = []
    for key, size in lengths.items():
        if not isinstance(key, str):
            raise TypeError(f"pack: the keys of lengths are field names (str); got {type(key).__name__} {key!r}.")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"pack: lengths[{key!r}] must be an int; got {type(size).__name__} {size!r}.")
        if not 1 <= size <= checks.INT32_MAX:
            raise ValueError(f"pack: lengths[{key!r}] must be in [1, 2**31 - 1]; got {size}.")
        if key not in spec:
            raise ValueError(f"pack: lengths names {key!r}, which the source's records lack; they hold {sorted(spec)}.")
        out.append((key, int(size)))
    packed = {k for k, _ in out}
    # Every other field must be a packed field's length: packing drops nothing silently.
    other = sorted(k for k in spec if k not in packed and not (k.endswith("_length") and k[:-7] in packed))
    if other:
        raise ValueError(
            f"pack: the records also hold {other}, which packing would drop. Pack them too (add them to lengths=; "
            "a scalar field packs as one value per record), or leave them out of the source first (exclude_keys= "
            "when loading, or a transform)."
        )
    return tuple(out)


def pack(source: Any, lengths: Mapping[str, int], *, num_bins: int = 16, read: int = 256) -> Packed:
    """Returns a state that serves ``source``'s records packed first-fit into fixed-length rows.

    Each packed field ``k`` of a record holds ``k_length`` values when the record has that
    field (as loaders give list and text fields: zero-padded plus a length), else its whole
    leading axis (a scalar counts as one value). A row holds, per field, ``k`` (the values
    of the records in it, one after another, zero-padded to ``lengths[k]``), ``k_segment_ids``
    (``1..`` per record, 0 on padding) and ``k_positions`` (``0..`` inside each record).
    The layout equals grain's ``FirstFitPackIterDataset(shuffle_bins=False)`` on the same
    records (see the guide on composing for every difference).

    Arguments:
        source: an ``EagerSource`` or ``StreamingSource`` (``partitions=1``; it may filter or expand), or a
            mixture of them (``dfn.mix``), whose records are a flat dict; every field is packed or
            is a packed field's length. A stream with ``partitions=C > 1`` (or a mixture of
            such) packs each partition apart, into a state whose batches take ``size // C``
            rows of every partition and whose ``get_global_batch`` packs only each process's.
        lengths: field name -> row length, e.g. ``{"tokens": 1024}``.
        num_bins: rows packed at once (grain's ``num_packing_bins``): more rows pack tighter.
        read: records read from the source per call.

    Returns:
        a ``Packed`` state; ``num_records`` is None (the rows per epoch depend on the data).

    ```python
    import numpy as np, datarax_fn as dfn
    tokens = np.array([[1, 2, 3], [4, 0, 0], [5, 6, 0]], np.int32)
    src = dfn.from_arrays({"tokens": tokens, "tokens_length": np.array([3, 1, 2], np.int32)})
    state, rows = dfn.get_batch(dfn.pack(src, {"tokens": 4}, num_bins=2), 2)
    assert rows["tokens"].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert rows["tokens_segment_ids"].tolist() == [[1, 1, 1, 2], [1, 1, 0, 0]]
    assert rows["tokens_positions"].tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]
    ```
    """
    # A partitioned stream packs partition by partition, so that each process packs only its own.
    parted = by_partition([source], lambda c, count, parts: pack(parts[0], lengths, num_bins=num_bins, read=read),
                          "pack")
    if parted is not None:
        return parted
    if not isinstance(source, (EagerSource, StreamingSource, Mixture)):
        raise TypeError(f"pack: source must be an EagerSource or StreamingSource (dfn.from_arrays, dfn.from_hf, "
                        f"dfn.from_tfds, dfn.from_backend) or a mixture of them (dfn.mix); got {type(source).__name__}.")
    if isinstance(source, Mixture) and any(not isinstance(c, (EagerSource, StreamingSource)) for c in source.children):
        raise TypeError("pack: a mixture of packed streams is packed already; pack each source, then mix them, or "
                        "mix the sources, then pack the mixture.")
    if getattr(source, "partitions", 1) != 1:
        raise ValueError(f"pack: source has partitions={source.partitions}; packing reads one stream in order. "
                         "Build it with partitions=1.")
    for name, value in (("num_bins", num_bins), ("read", read)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"pack: {name} must be an int >= 1; got {type(value).__name__} {value!r}.")
        if not 1 <= value <= 2**20:
            raise ValueError(f"pack: {name} must be in [1, 2**20]; got {name}={value}.")
    spec = contract.element_spec(source)
    if not isinstance(spec, Mapping):
        raise TypeError(f"pack: the source's records must be a flat dict of fields; got {type(spec).__name__}.")
    nested = sorted(k for k, v in spec.items() if not isinstance(v, jax.ShapeDtypeStruct))
    if nested:
        raise TypeError(f"pack: the fields {nested} are nested; packing takes a flat dict of fields. Flatten them "
                        "with a transform first.")
    checked = _check_lengths(lengths, spec)
    for key, size in checked:
        if spec[key].shape == () and f"{key}_length" in spec:
            raise ValueError(f"pack: field {key!r} is a scalar but has {key}_length; pass a list field.")
    stream = {k: v for k, v in contract.cursor(source).items() if k not in ("index", "epoch", "offset", "served", "children")}
    key = (type(source).__name__, repr(sorted(stream.items())), checked, int(num_bins))
    # A source of unknown length is placed by the states it returns, one of known length by counting.
    reader = StateGrid(int(read)) if contract.num_records(source) is None else Counted(_moved, int(read))
    return Packed(source=source, row=np.zeros((), np.int64), skip=np.zeros((), np.int64), lengths=checked,
                  num_bins=int(num_bins), read=int(read), groups=_Groups(key, reader))


# ----------------------------------------------------------------------------- reading the source


def _moved(child: Any, records: int) -> Any:
    """Returns ``child`` moved on by ``records`` without reading them."""
    return advance(child, records) if isinstance(child, Mixture) else moved(child, records)


def _known(state: Packed) -> bool:
    """Whether the source's position is a record count (else it is a returned state plus ``skip``)."""
    return contract.num_records(state.source) is not None


# ----------------------------------------------------------------------------- first fit


def _record_lengths(records: dict[str, np.ndarray], lengths: tuple[tuple[str, int], ...]) -> np.ndarray:
    """Returns ``(records, fields)``: the values each record brings to each packed field."""
    out = []
    for key, _ in lengths:
        x = records[key]
        if f"{key}_length" in records:
            out.append(records[f"{key}_length"].astype(np.int64))
        else:
            out.append(np.full(len(x), 1 if x.ndim == 1 else x.shape[1], np.int64))
    return np.stack(out, 1)


class _FirstFit:
    """Grain's first fit, fed records in pieces: each goes to the first row where every field fits."""

    def __init__(self, caps: list[int], num_bins: int):
        self.room = [[c] * num_bins for c in caps]  # values each row can still take, per field
        self.caps, self.caps0 = caps, caps[0]
        self.bins: list[int] = []
        self.offsets: list[list[int]] = []
        self.closed = False  # a record fit nowhere: the group is complete

    def add(self, lens: np.ndarray) -> None:
        """Places the records of ``lens`` (records x fields) in order, until one fits nowhere."""
        room, bins, offsets = self.room, self.bins, self.offsets
        if len(room) == 1:  # one packed field: the common case, a tight scan for the first row with room
            only = room[0]
            for (need,) in lens.tolist():
                for b, left in enumerate(only):
                    if left >= need:
                        break
                else:
                    self.closed = True
                    return
                bins.append(b)
                offsets.append([self.caps0 - left])
                only[b] = left - need
            return
        fields = range(len(room))
        for rec in lens.tolist():
            for b in range(len(room[0])):
                if all(room[f][b] >= rec[f] for f in fields):
                    break
            else:
                self.closed = True
                return
            bins.append(b)
            offsets.append([self.caps[f] - room[f][b] for f in fields])
            for f in fields:
                room[f][b] -= rec[f]


def _check_fit(lens: np.ndarray, lengths: tuple[tuple[str, int], ...], child: Any, skip: int) -> None:
    for f, (key, size) in enumerate(lengths):
        over = np.flatnonzero(lens[:, f] > size)
        if over.size:
            n, at = contract.num_records(child), skip + int(over[0])
            if n is None:  # a stream that filters or expands: records past the chunk the cursor names
                c = contract.cursor(child)
                where = (f"{at} records past the source position epoch {c['epoch']}, chunk index {c['index']}, "
                         f"offset {c.get('offset', 0)}")
            else:
                at += position(child)
                where = f"stream position {at} (epoch {at // n}, index {at % n})"
            raise ValueError(
                f"pack: field {key!r} of the record at {where} holds "
                f"{int(lens[over[0], f])} values, more than lengths[{key!r}]={size}. Raise lengths[{key!r}], or cut "
                f"the field when loading (max_length={size}, truncate=True)."
            )


def _group(state: Packed, child: Any, skip: int) -> tuple[dict[str, np.ndarray], int]:
    """Returns ``(rows, records)``: the packed rows of the group starting ``skip`` records past ``child``'s
    position, and how many source records it holds."""
    reader = state.groups.reader
    here = reader.where(child, skip)
    cache = state.groups.groups
    if here in cache:
        return cache[here]
    fit = _FirstFit([size for _, size in state.lengths], state.num_bins)
    want, done = state.num_bins * 2, 0
    while True:
        records = reader.read(child, skip, want)
        got = len(next(iter(records.values()))) if records else 0
        if not got:
            raise EndOfStream("pack: the source ended; no records are left to pack.")
        lens = _record_lengths(records, state.lengths)
        _check_fit(lens[done:], state.lengths, child, skip + done)
        fit.add(lens[done:])
        if fit.closed or got < want:  # closed by a record that fits nowhere, or the stream ended
            break
        done, want = got, want * 2
    placed = len(fit.bins)
    bins, offsets = np.asarray(fit.bins, np.int64), np.asarray(fit.offsets, np.int64).reshape(placed, -1)
    rows = int(bins.max()) + 1  # first fit fills rows in order: the used rows are a prefix
    # Segment ids count the records of each row in the order they joined it: 1, 2, ...
    joined = np.argsort(bins, kind="stable")
    order = np.empty(placed, np.int64)
    order[joined] = np.arange(placed) - np.searchsorted(bins[joined], bins[joined]) + 1
    out = {}
    for f, (key, size) in enumerate(state.lengths):
        x, counts = records[key][:placed], lens[:placed, f]
        if x.ndim == 1:
            x = x[:, None]
        total = int(counts.sum())
        rec = np.repeat(np.arange(placed), counts)
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        row = bins[rec]
        col = offsets[rec, f] + within
        values = np.zeros((rows, size, *x.shape[2:]), x.dtype)
        values[row, col] = x[rec, within]
        segments = np.zeros((rows, size), np.int32)
        segments[row, col] = order[rec]
        positions = np.zeros((rows, size), np.int32)
        positions[row, col] = within
        out[key], out[f"{key}_segment_ids"], out[f"{key}_positions"] = values, segments, positions
    if len(cache) >= 4:
        cache.pop(next(iter(cache)))
    cache[here] = (out, placed)
    return out, placed


# ----------------------------------------------------------------------------- the generic functions


def _check_host(state: Packed, fn: str) -> None:
    if tracing.is_traced(state.row, state.source):
        raise TypeError(f"{fn}: dfn.pack packs on the host and cannot run under jax.jit / scan. Call dfn.get_batch "
                        "outside jit and pass the packed rows into your jitted step.")


@contract.get_batch.register
def _(state: Packed, size: int, key: Any = None):
    _check_host(state, "get_batch")
    size = checks.check_size(size)
    if key is not None:
        raise TypeError("get_batch: a packed stream cannot draw random rows with key=; it serves rows in order.")
    child, skip, row, parts, need = state.source, int(state.skip), int(state.row), [], size
    while need:
        rows, records = _group(state, child, skip)
        held = len(rows[state.lengths[0][0]])
        if row >= held:
            raise ValueError(f"get_batch: the packed cursor's row={row} is past the {held} rows of its group; restore "
                             "the dict dfn.cursor(state) returned, unchanged.")
        take = min(need, held - row)
        parts.append({k: v[row:row + take] for k, v in rows.items()})
        row, need = row + take, need - take
        if row == held:
            (child, skip), row = state.groups.reader.after(child, skip, records), 0
    batch = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return tracing.replace(state, source=child, skip=np.asarray(skip, np.int64), row=np.asarray(row, np.int64)), batch


@contract.element_spec.register
def _(state: Packed):
    spec = contract.element_spec(state.source)
    out = {}
    for key, size in state.lengths:
        s = spec[key]
        inner = s.shape[1:] if f"{key}_length" in spec or s.shape else ()
        out[key] = jax.ShapeDtypeStruct((size, *inner), s.dtype)
        out[f"{key}_segment_ids"] = jax.ShapeDtypeStruct((size,), np.int32)
        out[f"{key}_positions"] = jax.ShapeDtypeStruct((size,), np.int32)
    return out


@contract.num_records.register
def _(state: Packed):
    return None


@contract.get_batch_at.register
def _(state: Packed, start: Any, size: int, key: Any = None):
    raise TypeError("get_batch_at: a packed stream has no random access (a row's place depends on the rows "
                    "before it); use dfn.get_batch.")


@contract.iterate.register
def _(state: Packed, size: int, *, epochs: int = 1):
    # Walks until the source has started `epochs` more epochs, or ends.
    _check_host(state, "iterate")
    size = checks.check_size(size, "iterate")
    epochs = checks.check_epochs(epochs)

    def walk(state):
        stop = int(state.source.epoch) + epochs
        while int(state.source.epoch) < stop:
            try:
                state, batch = contract.get_batch(state, size)
            except EndOfStream:
                return
            yield state, batch

    return walk(state)


@contract.dataset_info.register
def _(state: Packed):
    return contract.dataset_info(state.source)


def _stream_key(state: Packed) -> dict[str, Any]:
    return {"lengths": {k: v for k, v in state.lengths}, "num_bins": state.num_bins}


@contract.cursor.register
def _(state: Packed):
    inner = contract.cursor(state.source)
    skip = {} if _known(state) else {"skip": int(state.skip)}  # records past the source's position
    return cursors.make_cursor("pack", state.row, 0, inner["seed"], **_stream_key(state), **skip, source=inner)


@contract.restore_cursor.register
def _(state: Packed, cursor: dict[str, Any]):
    expected = {**_stream_key(state), "seed": int(state.source.seed), "epoch": 0}
    known = _known(state)
    if isinstance(cursor, dict) and not known:
        skip = cursor.get("skip")
        if isinstance(skip, bool) or not isinstance(skip, int) or not 0 <= skip <= checks.INT32_MAX:
            raise ValueError(f"restore_cursor: a packed cursor of a source that filters or expands holds 'skip' (an int "
                             f"in [0, 2**31 - 1]: records past its source's position); got {skip!r}. Restore the "
                             "dict dfn.cursor(state) returned, unchanged.")
        cursor = {k: v for k, v in cursor.items() if k != "skip"}
    elif isinstance(cursor, dict) and "skip" in cursor:
        raise ValueError("restore_cursor: this packed cursor has 'skip': it was saved over a source that filters or "
                         "expands, and this source keeps one record per row. Rebuild it as when the cursor was saved.")
    row, _ = cursors.check_cursor(cursor, "pack", expected, None)
    if not isinstance(cursor.get("source"), dict):
        raise TypeError("restore_cursor: a packed cursor holds its source's cursor under 'source'; pass the dict "
                         "dfn.cursor(state) returned.")
    try:
        child = contract.restore_cursor(state.source, cursor["source"])
    except (TypeError, ValueError) as e:
        raise type(e)(f"restore_cursor: the packed source: {e}") from None
    skip = 0 if known else skip
    return tracing.replace(state, source=child, skip=np.asarray(skip, np.int64), row=np.asarray(row, np.int64))


__all__ = ["Packed", "pack"]
