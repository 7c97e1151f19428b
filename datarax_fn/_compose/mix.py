"""Mixtures: one stream drawn from several sources in fixed proportions, a pure function of the position.

The source of output position ``P`` is decided without history. The stream is cut into windows
of ``W`` positions; in each window child ``k`` owns ``q_k`` slots (its weight, rounded by largest
remainder so that ``sum(q) == W``), and the slots are laid out by the keyed bijection of
``_state.shuffle`` keyed by ``(seed, window)``. So proportions hold exactly in every window,
and child ``k`` has served ``c_k(P) = (P // W) * q_k + (its slots among the first P % W of
window P // W)`` records after ``P`` outputs: O(W) to compute, which is how a cursor is checked.

Each child serves its records in its own stream order (its own shuffle and epochs), so the
rows of one child inside a batch are consecutive positions of that child: a batch gathers
``size`` rows from each child and selects, row by row, the child's next unused one.

One *epoch* of a mixture is the whole windows that ``stop`` fixes (``num_records``):
``"first_exhausted"`` ends the stream after the last whole window in which every child still had
records of its epoch; ``"all_exhausted"`` after the first whole window by which every child has
served its whole epoch (smaller children cycle into their next epochs meanwhile);
``"never"`` never ends (its epochs are as long as ``"all_exhausted"``'s, and children cycle
their epochs for ever).

The module holds the state, both ways of taking a batch (the eager kernel and the host path)
and the cursor, which share the layout's invariants; that is why it runs past 400 lines.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._eager.source import EagerSource
from .._layout.partitions import partition_seed, process_rows
from .._state import checks, contract, cursors, tracing
from .._streaming.source import EndOfStream, StreamingSource
from .layout import consumed, epoch_length, quotas_of, select
from .partitioned import by_partition
from .positions import moved, position, put_scalar, restore_each
from .specs import check_specs, has_fields, mixed_spec

PyTree = Any
STOPS = ("never", "first_exhausted", "all_exhausted")


class Mixture(contract.Source):
    """A mixture of source states: the children (leaves) plus the mixture's own cursor.

    ``index`` counts outputs in the current epoch of the mixture (``num_records`` outputs long),
    ``epoch`` its epochs, ``seed`` keys the window layout. Each child is held at its own
    position, the records it has served so far. Build one with ``dfn.mix``.
    """

    children: tuple
    index: Any
    epoch: Any
    seed: Any
    quotas: tuple[int, ...] = eqx.field(static=True)
    stop: str = eqx.field(static=True)
    num_records: int = eqx.field(static=True)
    on_host: bool = eqx.field(static=True)
    filled: tuple[str, ...] = eqx.field(static=True, default=())


# ----------------------------------------------------------------------------- building


def _check_child(k: int, child: Any) -> bool:
    """Returns whether child ``k`` reads on the host (not eager); raises for states a mixture cannot take."""
    if isinstance(child, EagerSource):
        if child.partitions != 1 or child.placement.kind != "device":
            raise ValueError(
                f"mix: source {k} has partitions={child.partitions}, placement={child.placement.kind!r}; a mixture "
                "gathers each child's rows in one place. Build the child with partitions=1 and placement='device'."
            )
        return False
    if isinstance(child, Mixture):
        raise TypeError(
            f"mix: source {k} is itself a mixture; mix all the sources in one dfn.mix (the weights of a nested "
            "mixture's sources multiply by its own weight)."
        )
    if not isinstance(child, contract.Source):
        raise TypeError(
            f"mix: source {k} is a {type(child).__name__}; a mixture takes source states: EagerSource, "
            "StreamingSource (dfn.from_arrays, dfn.from_hf, dfn.from_tfds, dfn.from_backend) or a packed stream "
            "(dfn.pack)."
        )
    if getattr(child, "partitions", 1) != 1:
        raise ValueError(
            f"mix: source {k} is a stream with partitions={child.partitions}; a mixture reads each child in its "
            "own order. Build the stream with partitions=1."
        )
    # Any other state (a stream, a packed stream) serves its next records by get_batch, on the host.
    return True


def mix(sources: Sequence[Any], weights: Sequence[float], seed: int = 0, stop: str = "never", *,
        window: int = 100, fill_missing: bool = False) -> Mixture:
    """Returns a mixture of ``sources`` drawn in proportion to ``weights``: a state like any other.

    Output position ``P`` comes from a source that is a keyed function of ``(seed, P)``: in
    every window of ``window`` positions, source ``k`` gets ``round(window * w_k / sum(w))``
    positions (largest remainder), laid out by a keyed bijection per ``(seed, window)``. Each
    source serves its records in its own stream order (its shuffle and epochs). Eager sources
    mix inside ``jit`` and ``lax.scan``; a mixture with a stream reads on the host. The cursor
    holds each source's cursor, so resume is exact.

    Arguments:
        sources: ``EagerSource`` and ``StreamingSource`` states (``partitions=1``) or packed
            streams (``dfn.pack``) whose records share one element spec; or streams that all
            have ``partitions=C > 1`` (or were packed from such), which mix partition by
            partition into a state whose ``get_global_batch`` reads only each process's
            partitions.
        weights: one positive number per source.
        seed: an int in ``[0, 2**32)`` keying the layout of the windows.
        stop: ``"never"`` (the default: sources cycle their epochs for ever),
            ``"first_exhausted"`` (the stream ends, ``dfn.EndOfStream``, at the last whole window
            in which every source still had records of its first epoch) or ``"all_exhausted"``
            (it ends after the first whole window by which every source has served its epoch;
            smaller sources cycle meanwhile). Inside ``jit`` an ended stream is an error.
        window: positions per window; every weight must earn at least one (``window >=
            sum(w) / min(w)``), and proportions are exact to ``1 / window`` in every window.
        fill_missing: sources of dict records may lack top-level fields others have: each such
            field ``f`` is filled with zeros where absent, and a bool ``f_present`` says where
            it is real. Fields present in several sources must still agree in shape and dtype.

    Returns:
        a ``Mixture``; ``num_records`` is the length of one epoch (for ``"never"``: whole windows
        until every source has served its epoch once).

    ```python
    import numpy as np, datarax_fn as dfn
    a = dfn.from_arrays({"x": np.zeros(700, np.int32)})
    b = dfn.from_arrays({"x": np.ones(300, np.int32)})
    state = dfn.mix([a, b], [0.7, 0.3], seed=0)
    state, batch = dfn.get_batch(state, 100)
    assert int(batch["x"].sum()) == 30    # every window of 100 holds exactly 30 of b
    ```
    """
    if isinstance(sources, (str, bytes, dict)) or not isinstance(sources, Sequence):
        raise TypeError(f"mix: sources must be a list of source states; got {type(sources).__name__}.")
    if not sources:
        raise ValueError("mix: sources is empty; pass at least one source state.")
    seed = checks.check_seed(seed, "mix")
    # Partitioned streams mix partition by partition, each partition's windows keyed apart.
    parted = by_partition(sources, lambda c, count, parts: mix(parts, weights, partition_seed(seed, c, count), stop,
                                                               window=window, fill_missing=fill_missing), "mix")
    if parted is not None:
        return parted
    if not isinstance(stop, str):
        raise TypeError(f"mix: stop must be one of {STOPS}; got {type(stop).__name__} {stop!r}.")
    if stop not in STOPS:
        raise ValueError(f"mix: stop must be one of {STOPS}; got stop={stop!r}.")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise TypeError(f"mix: window must be an int >= 1; got {type(window).__name__} {window!r}.")
    if not 1 <= window <= 2**24:
        raise ValueError(f"mix: window must be in [1, 2**24]; got window={window}.")
    quotas = quotas_of(weights, int(window))
    if len(quotas) != len(sources):
        raise ValueError(f"mix: {len(sources)} sources need {len(sources)} weights; got {len(quotas)}.")
    reads_on_host = [_check_child(k, c) for k, c in enumerate(sources)]  # checks every source, not just up to one
    on_host = any(reads_on_host)
    if not isinstance(fill_missing, (bool, np.bool_)):
        raise TypeError(f"mix: fill_missing must be a bool; got {type(fill_missing).__name__} {fill_missing!r}.")
    filled = check_specs(sources, bool(fill_missing))
    n = epoch_length(quotas, [contract.num_records(c) for c in sources], stop)
    if on_host:
        index, epoch, seed_ = np.zeros((), np.int32), np.zeros((), np.int32), np.asarray(seed, np.uint32)
    else:
        put = lambda v, t: jax.device_put(np.asarray(v, t))  # NumPy scalars: no XLA compile, as in from_arrays
        index, epoch, seed_ = put(0, np.int32), put(0, np.int32), put(seed, np.uint32)
    return Mixture(children=tuple(sources), index=index, epoch=epoch, seed=seed_, quotas=quotas, stop=stop, filled=filled,
                   num_records=n, on_host=on_host)


# ----------------------------------------------------------------------------- batches


def _check_end(state: Mixture, size: int) -> None:
    if state.stop == "never":
        return
    left = state.num_records - int(state.index) if int(state.epoch) == 0 else 0
    if size > left:
        raise EndOfStream(
            f"mix: the mixture ended (stop={state.stop!r}) after {state.num_records} records; {left} were left "
            f"and a batch of {size} was asked (no short batch)."
        )


def _moved(child: EagerSource, count: Any) -> tuple[Any, Any]:
    """Returns ``(index, epoch)`` of an eager child after ``count`` (traced) more records."""
    total = child.index.astype(jnp.uint32) + count.astype(jnp.uint32)
    n = jnp.uint32(child.num_records)
    return (total % n).astype(jnp.int32), child.epoch + (total // n).astype(jnp.int32)


def most_rows(quotas: tuple[int, ...], size: int) -> list[int]:
    """Returns the most rows each child can serve in ``size`` consecutive positions.

    They touch at most ``(size - 1) // W + 2`` windows (windows align across epochs, which are
    whole windows), and child ``k`` owns ``quotas[k]`` positions of each: a batch gathers that
    many rows of each child, not ``size`` (which matters for many children).
    """
    windows = (size - 1) // sum(quotas) + 2
    return [min(size, q * windows) for q in quotas]


def _gather(children: tuple, starts: list, quotas: tuple[int, ...], size: int) -> list:
    return [contract.get_batch_at(c, start, m) for c, start, m in zip(children, starts, most_rows(quotas, size))]


def _combine(children: tuple, parts: list, sel: Any, rank: Any, filled: tuple[str, ...]) -> PyTree:
    """Returns the batch whose row r is row ``rank[r]`` of ``parts[sel[r]]`` (inside jit)."""
    heights = [len(jax.tree.leaves(p)[0]) for p in parts]
    offsets = jnp.asarray(np.concatenate([[0], np.cumsum(heights)[:-1]]).astype(np.int32))
    rows = offsets[sel] + rank
    pick = lambda *xs: jnp.concatenate(xs)[rows]
    if not filled:
        return jax.tree.map(pick, *parts)
    out = {}
    for key, spec in mixed_spec(children, filled).items():
        if key.endswith("_present") and key[: -len("_present")] in filled:
            continue
        fill = [p[key] if key in p else jax.tree.map(lambda t, h=h: jnp.zeros((h, *t.shape), t.dtype), spec)
                for p, h in zip(parts, heights)]
        out[key] = jax.tree.map(pick, *fill)
    has = has_fields(children, filled)
    for j, key in enumerate(filled):
        out[f"{key}_present"] = jnp.asarray(has[:, j])[sel]
    return out


@functools.partial(tracing.jit_unless_traced, static_argnames=("size", "quotas", "n", "stop", "filled"))
def _eager_step(children, index, epoch, seed, size, quotas, n, stop, filled):
    sel = select(index, epoch, seed, size, quotas, n)
    onehot = (sel[:, None] == jnp.arange(len(quotas))[None, :]).astype(jnp.int32)
    rank = jnp.take_along_axis(jnp.cumsum(onehot, 0) - onehot, sel[:, None], 1)[:, 0]
    parts = _gather(children, [c.index for c in children], quotas, size)
    batch = _combine(children, parts, sel, rank, filled)
    counts = onehot.sum(0)
    moved = tuple(_moved(c, counts[k]) for k, c in enumerate(children))
    total = index.astype(jnp.uint32) + jnp.uint32(size)
    new_index = (total % jnp.uint32(n)).astype(jnp.int32)
    new_epoch = epoch + (total // jnp.uint32(n)).astype(jnp.int32)
    if stop != "never":
        # Ended when the position after the batch passes N (the epoch's end): (epoch, index) > (1, 0).
        new_epoch = eqx.error_if(new_epoch, (new_epoch > 1) | ((new_epoch == 1) & (new_index > 0)),
                                 f"mix: the mixture ended (stop={stop!r}) after {n} records; no short batch.")
    return moved, new_index, new_epoch, batch


def _eager_batch(state: Mixture, size: int) -> tuple[Mixture, PyTree]:
    if not tracing.is_traced(state.index):
        _check_end(state, size)
    moved, index, epoch, batch = _eager_step(state.children, state.index, state.epoch, state.seed, size=size,
                                             quotas=state.quotas, n=state.num_records, stop=state.stop,
                                             filled=state.filled)
    children = tuple(tracing.replace(c, index=i, epoch=e) for c, (i, e) in zip(state.children, moved))
    return tracing.replace(state, children=children, index=index, epoch=epoch), batch


def _host_batch(state: Mixture, size: int) -> tuple[Mixture, PyTree]:
    _check_end(state, size)
    sel = select(int(state.index), int(state.epoch), int(state.seed), size, state.quotas, state.num_records)
    counts = np.bincount(sel, minlength=len(state.quotas))
    children, parts = [], []
    for k, child in enumerate(state.children):
        m = int(counts[k])
        if m == 0:
            children.append(child)
            parts.append(None)
        elif not isinstance(child, EagerSource):
            child, part = contract.get_batch(child, m)
            children.append(child)
            parts.append(part)
        else:
            # A fixed size keeps one compiled gather per child; the first m rows are the ones served.
            part = jax.tree.map(lambda x, m=m: np.asarray(x)[:m], contract.get_batch_at(child, child.index, size))
            children.append(moved(child, m))
            parts.append(part)
    masks = [sel == k for k in range(len(parts))]
    present = {f"{key}_present": has_fields(state.children, state.filled)[:, j][sel]
               for j, key in enumerate(state.filled)}

    def leaf(path, s):
        name = getattr(path[0], "key", None)
        if name in present:
            return present[name]
        # Zeros where a source lacks the field (fill_missing); every row is written otherwise.
        out = (np.zeros if state.filled else np.empty)((size, *s.shape), s.dtype)
        for mask, part in zip(masks, parts):
            if part is not None and (name not in state.filled or name in part):
                out[mask] = _at(part, path)
        return out

    batch = jax.tree_util.tree_map_with_path(leaf, mixed_spec(state.children, state.filled))
    total = int(state.index) + size
    epoch, index = int(state.epoch) + total // state.num_records, total % state.num_records
    return tracing.replace(state, children=tuple(children), index=np.asarray(index, np.int32),
                           epoch=np.asarray(epoch, np.int32)), batch


def _at(tree: PyTree, path: tuple) -> Any:
    for key in path:
        tree = tree[getattr(key, "key", getattr(key, "idx", None))]
    return tree


@contract.get_batch.register
def _(state: Mixture, size: int, key: Any = None):
    size = checks.check_size(size)
    if key is not None:
        raise TypeError("get_batch: a mixture cannot draw random records with key=; it serves its stream in order.")
    if state.on_host:
        if tracing.is_traced(state.index, state.epoch):
            raise TypeError(
                "get_batch: this mixture holds a stream, which reads on the host and cannot run under jax.jit / "
                "scan. Call dfn.get_batch outside jit, or mix eager sources only."
            )
        return _host_batch(state, size)
    return _eager_batch(state, size)


@functools.partial(tracing.jit_unless_traced, static_argnames=("size", "quotas", "n", "filled"))
def _eager_at(children, index, epoch, seed, start, size, quotas, n, filled):
    # Each child starts where it stands plus what it serves between `index` and `start`, both
    # within this epoch's windows: whole windows by quota, the partial ones by their slots.
    window = sum(quotas)
    q = jnp.asarray(quotas, jnp.int32)

    def served(pos):  # records each child serves from this epoch's start to position pos (traced)
        whole = pos // window
        slots = select(whole * window, epoch, seed, window, quotas, n)
        part = jnp.arange(window) < pos - whole * window
        counts = (slots[:, None] == jnp.arange(len(quotas))[None, :]) & part[:, None]
        return whole * q + counts.sum(0)

    start = jnp.asarray(start).astype(jnp.int32)
    ahead = served(start) - served(index.astype(jnp.int32))
    sel = select(start, epoch, seed, size, quotas, n)
    onehot = (sel[:, None] == jnp.arange(len(quotas))[None, :]).astype(jnp.int32)
    rank = jnp.take_along_axis(jnp.cumsum(onehot, 0) - onehot, sel[:, None], 1)[:, 0]
    parts = _gather(children, [c.index + ahead[k] for k, c in enumerate(children)], quotas, size)
    return _combine(children, parts, sel, rank, filled)


@contract.get_batch_at.register
def _(state: Mixture, start: Any, size: int, key: Any = None):
    size = checks.check_size(size, "get_batch_at")
    start = checks.check_start(start)
    if state.on_host or key is not None:
        raise TypeError(
            "get_batch_at: random access needs a mixture of eager sources without key=; this one "
            + ("holds a stream. Use dfn.get_batch." if state.on_host else "was given a key.")
        )
    if not tracing.is_traced(start) and int(start) < int(state.index):
        raise ValueError(f"get_batch_at: a mixture reads forward from its position {int(state.index)}; "
                         f"got start={int(start)}. Restore an earlier cursor to read back.")
    if not tracing.is_traced(start) and state.stop != "never" and int(start) + size > state.num_records:
        raise EndOfStream(f"get_batch_at: the mixture ends (stop={state.stop!r}) after {state.num_records} "
                          f"records; positions {int(start)}..{int(start) + size - 1} pass it.")
    if not tracing.is_traced(start) and int(start) >= state.num_records:
        raise ValueError(f"get_batch_at: a mixture reads within its epoch of {state.num_records} records; "
                         f"got start={int(start)}.")
    return _eager_at(state.children, state.index, state.epoch, state.seed, start, size=size,
                     quotas=state.quotas, n=state.num_records, filled=state.filled)


@contract.get_global_batch.register
def _(state: Mixture, global_size: int, sharding: jax.sharding.Sharding):
    # Every process computes the same batch from the same state and keeps its own rows.
    if tracing.is_traced(state.index):
        raise TypeError("get_global_batch runs on the host; inside jit use dfn.get_batch.")
    state, batch = contract.get_batch(state, checks.check_size(global_size, "get_global_batch"))
    start, stop = process_rows(sharding, global_size)
    batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(
        sharding, np.asarray(x)[start:stop], (global_size, *x.shape[1:])), batch)
    return state, batch


@contract.element_spec.register
def _(state: Mixture):
    return mixed_spec(state.children, state.filled)


@contract.num_records.register
def _(state: Mixture):
    return state.num_records


@contract.iterate.register
def _(state: Mixture, size: int, *, epochs: int = 1):
    if state.stop == "never":
        return contract.iterate_batches(state, size, epochs)
    # The stream ends inside its first epoch: walk the whole batches left before the end.
    size = checks.check_size(size, "iterate")
    checks.check_epochs(epochs)
    left = state.num_records - int(state.index) if int(state.epoch) == 0 else 0
    return _walk(state, size, left // size)


def _walk(state: Mixture, size: int, steps: int) -> Iterator[tuple[Mixture, PyTree]]:
    for _ in range(steps):
        state, batch = contract.get_batch(state, size)
        yield state, batch


@contract.dataset_info.register
def _(state: Mixture):
    return None


def advance(state: Mixture, records: int) -> Mixture:
    """Returns the mixture moved on by ``records`` outputs without reading them (on the host).

    Each eager or streaming child moves by what it serves meanwhile, ``c_k(P + records) - c_k(P)``.
    """
    here = _consumed(state)
    epoch, index = divmod(position(state) + records, state.num_records)
    new = tracing.replace(state, index=put_scalar(state.index, index), epoch=put_scalar(state.epoch, epoch))
    delta = _consumed(new) - here
    children = []
    for k, (child, d) in enumerate(zip(state.children, delta.tolist())):
        if d and not isinstance(child, (EagerSource, StreamingSource)):
            raise TypeError(f"mix: source {k} ({type(child).__name__}) cannot move without reading its records.")
        children.append(moved(child, d) if d else child)
    return tracing.replace(new, children=tuple(children))


# ----------------------------------------------------------------------------- cursor


def _consumed(state: Mixture) -> np.ndarray:
    return consumed(int(state.epoch), int(state.index), int(state.seed), state.quotas, state.num_records)


def _child_position(child: Any) -> int | None:
    return None if contract.num_records(child) is None else position(child)


@contract.cursor.register
def _(state: Mixture):
    return cursors.make_cursor("mix", state.index, state.epoch, int(state.seed), quotas=list(state.quotas),
                               stop=state.stop, children=[contract.cursor(c) for c in state.children])


@contract.restore_cursor.register
def _(state: Mixture, cursor: dict[str, Any]):
    expected = {"quotas": list(state.quotas), "stop": state.stop, "seed": int(state.seed)}
    index, epoch = cursors.check_cursor(cursor, "mix", expected, state.num_records)
    saved = cursor.get("children")
    children = restore_each(
        state.children, saved,
        f"restore_cursor: a cursor of this mixture holds a list of {len(state.children)} child cursors under "
        f"'children'; got {type(saved).__name__}. Pass the dict dfn.cursor returned.",
        lambda k: f"source {k} of the mixture")
    # Each child's position is its start plus what the mixture's position makes it serve.
    here = _consumed(state)
    new = tracing.replace(state, index=put_scalar(state.index, index), epoch=put_scalar(state.epoch, epoch),
                          children=tuple(children))
    there = _consumed(new)
    for k, (old, child) in enumerate(zip(state.children, children)):
        a, b = _child_position(old), _child_position(child)
        if a is not None and b - there[k] != a - here[k]:
            raise ValueError(
                f"restore_cursor: source {k}'s cursor is at record {b}, but the mixture's position "
                f"(epoch={epoch}, index={index}) puts it at {a - here[k] + there[k]}: the cursor was edited or mixes "
                "two checkpoints. Restore the dict dfn.cursor(mixture) returned, unchanged, on a mixture built "
                "like the saved one."
            )
    return new


__all__ = ["Mixture", "advance", "mix"]
