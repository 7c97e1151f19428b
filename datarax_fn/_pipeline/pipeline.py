"""The pipeline: a source state, a chain of stages and a batch size, as one PyTree.

``step(pipeline) -> (pipeline, batch)`` reads the next ``batch_size`` records of the
source's stream and runs the stages on them. The stages get one key per record,
derived from ``(seed, epoch, index)`` of that record in the stream, so a record's
augmentation depends only on where it sits in the stream: not on the batch size, the
batch it lands in, how many steps ran in this process, or a resume. A stream that filters
or expands has no input index per record; its records are keyed by ``(seed, partition,
count)``, the record's place among those its partition has served since the stream began.

The pipeline is a valid ``jit`` argument and ``lax.scan`` / ``lax.fori_loop`` carry;
``dfn.scan`` and ``dfn.scan_epoch`` (in ``scan``) keep the dataset out of the carry.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, UInt32

from .._state import checks, contract, cursors, tracing
from . import statistics
from .elementwise import bind_stats
from .fingerprint import Unfingerprintable, fingerprint
from .stages import Chain, as_stage, chain
from .statistics import Statistics

PyTree = Any
_REMAINDERS = ("drop", "pad", "partial")


class Pipeline(contract.Source):
    """A source state plus stages and a batch size; immutable, a PyTree, checkpointable.

    Its cursor is the source's ``index`` and ``epoch`` (read through properties) and
    its own ``seed``, the seed of the stage keys.

    Arguments:
        source: a source state (``dfn.from_arrays``, ``dfn.from_hf``, ``dfn.from_tfds``).
        stages: stages ``(batch, key) -> batch`` applied in order (see ``dfn.chain``).
        batch_size: records per batch (a static Python int).
        seed: seed of the stage keys; defaults to the source's seed.
        stats: a ``dfn.Statistics`` (from ``dfn.compute_statistics``, or precomputed);
            any ``dfn.normalize()`` stage given without mean/std reads it.

    ```python
    import numpy as np, datarax_fn as dfn
    source = dfn.from_arrays({"x": np.arange(10, dtype=np.float32)}, shuffle=True, seed=0)
    pipe = dfn.Pipeline(source, [dfn.normalize("x")], batch_size=4,
                        stats=dfn.compute_statistics(source))
    pipe, batch = dfn.step(pipe)
    assert batch["x"].shape == (4,)
    ```
    """

    source: Any
    stages: Chain
    seed: UInt32[Array, ""]
    stats: Statistics | None
    batch_size: int = eqx.field(static=True)

    def __init__(self, source: Any, stages: Any = (), batch_size: int = 32, *, seed: Any = None, stats: Any = None):
        if not isinstance(source, contract.Source):
            raise TypeError(
                f"Pipeline: source must be a datarax_fn source state (dfn.from_arrays, dfn.from_hf, "
                f"dfn.from_tfds or a dfn.Source subclass); got {type(source).__name__}."
            )
        batch_size = checks.check_size(batch_size, "Pipeline: batch_size")
        if isinstance(stats, Mapping):
            stats = Statistics(**stats)
        if stats is not None and not isinstance(stats, Statistics):
            raise TypeError(
                f"Pipeline: stats must be a dfn.Statistics or a dict with 'mean' and 'std'; got "
                f"{type(stats).__name__}. Use dfn.compute_statistics(source)."
            )
        if isinstance(stages, Chain):
            chained = stages
        elif isinstance(stages, (list, tuple)):
            chained = chain(*stages)
        else:
            chained = chain(as_stage(stages))
        if seed is None:
            seed = source.seed
        elif not isinstance(seed, jax.Array):
            seed = checks.check_seed(seed, "Pipeline")
        # Own copies of the small arrays: a donating jit (dfn.jit_step) would otherwise
        # delete the caller's statistics, and two leaves sharing a buffer cannot be donated.
        self.source = source
        self.stages = _copy_arrays(bind_stats(chained, stats))
        self.seed = jnp.array(seed, jnp.uint32, copy=True)
        self.stats = _copy_arrays(stats)
        self.batch_size = batch_size

    @property
    def index(self) -> Any:
        """The source's ``index``: records consumed in the current epoch."""
        return self.source.index

    @property
    def epoch(self) -> Any:
        """The source's ``epoch``."""
        return self.source.epoch

    def __iter__(self) -> Iterator[PyTree]:
        """Yields the batches of one epoch from the current position (remainder dropped)."""
        for _, batch in contract.iterate(self, epochs=1, remainder="drop"):
            yield batch


def _copy_arrays(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, tree)


_replace = tracing.replace  # skips __init__ (and its re-binding of stages) on the hot path


def _position(source: Any) -> tuple[Any, Any]:
    """Returns the source's ``(epoch, index)`` leaves; ``(0, served)`` for a stream that filters or expands."""
    if _counted(source) is not None:
        return jnp.zeros((), jnp.int32), source.served
    return source.epoch, source.index


def _counted(source: Any) -> int | None:
    """Returns the partitions of a stream that filters or expands (its records keyed by count), else None."""
    return source.partitions if getattr(source, "served", None) is not None else None


def record_keys(seed: Any, epoch: Any, index: Any, rows: int, num_records: int | None,
                counted: int | None = None) -> jax.Array:
    """Returns the ``(rows,)`` keys a pipeline hands its stages for a batch starting at ``(epoch, index)``.

    Row ``r`` is the record at stream position ``index + r``: with ``N = num_records``
    it sits at index ``(index + r) % N`` of epoch ``epoch + (index + r) // N``, and its
    key is ``fold_in(fold_in(key(seed), that epoch), that index)``. A stream of unknown
    length keys a batch's rows in its starting epoch.

    ``counted=C``: the batch is of a stream of ``C`` partitions that filters or expands, which
    has served ``index`` records before it (``index / C`` from each partition); the batch holds
    ``rows / C`` records of each partition in turn, and record ``k`` of partition ``c`` (counted
    from the stream's start) gets ``fold_in(fold_in(key(seed), c), k)``.
    """
    base = jax.random.key(jnp.asarray(seed, jnp.uint32))
    if counted is not None:
        per, row = rows // counted, jnp.arange(rows, dtype=jnp.int32)
        part, serial = row // per, jnp.asarray(index).astype(jnp.int32) // counted + row % per
        part_keys = jax.vmap(lambda c: jax.random.fold_in(base, c))(jnp.arange(counted, dtype=jnp.uint32))
        return jax.vmap(lambda c, k: jax.random.fold_in(part_keys[c], k.astype(jnp.uint32)))(part, serial)
    epoch = jnp.asarray(epoch).astype(jnp.int32)
    position = jnp.asarray(index).astype(jnp.int32) + jnp.arange(rows, dtype=jnp.int32)
    ahead = jnp.zeros((rows,), jnp.int32)  # how many epochs past `epoch` each row lies
    if num_records is not None:
        ahead, position = position // num_records, position % num_records
    # The few epochs a batch spans get their keys once; each row then costs one hash.
    spans = 1 if num_records is None else (rows - 1) // num_records + 2
    epoch_keys = jax.vmap(lambda e: jax.random.fold_in(base, e.astype(jnp.uint32)))(epoch + jnp.arange(spans))
    return jax.vmap(lambda a, i: jax.random.fold_in(epoch_keys[a], i.astype(jnp.uint32)))(ahead, position)


@functools.partial(tracing.jit_unless_traced, static_argnames=("num_records", "counted"))
def _apply(stages: Chain, batch: PyTree, seed: Any, epoch: Any, position: Any, num_records: int | None,
           counted: int | None = None) -> PyTree:
    rows = jax.tree.leaves(batch)[0].shape[0]
    return stages(batch, record_keys(seed, epoch, position, rows, num_records, counted))


def _run_stages(pipe: Pipeline, batch: PyTree, epoch: Any, position: Any) -> PyTree:
    if not pipe.stages.stages:
        return batch
    return _apply(pipe.stages, batch, pipe.seed, epoch, position, num_records=contract.num_records(pipe.source),
                  counted=_counted(pipe.source))


def step(pipeline: Pipeline) -> tuple[Pipeline, PyTree]:
    """Returns ``(new_pipeline, batch)``: the next ``batch_size`` records through the stages.

    The same as ``dfn.get_batch(pipeline, pipeline.batch_size)``. Pure: the same
    pipeline always gives the same batch. Works eagerly (the stages run in one cached
    ``jit``) and inside ``jit`` / ``lax.scan`` / ``lax.fori_loop`` for in-memory
    sources; a streaming source's pipeline steps on the host.

    Arguments:
        pipeline: a ``dfn.Pipeline``.

    Returns:
        ``(new_pipeline, batch)``; the batch is what the stages return.
    """
    if not isinstance(pipeline, Pipeline):
        raise TypeError(
            f"step: expected a dfn.Pipeline; got {type(pipeline).__name__}. For a source state use "
            "dfn.get_batch(state, size), or wrap it: dfn.Pipeline(state, stages, batch_size)."
        )
    return _read(pipeline, pipeline.batch_size)


def _read(pipe: Pipeline, size: int) -> tuple[Pipeline, PyTree]:
    epoch, position = _position(pipe.source)
    source, batch = contract.get_batch(pipe.source, size)
    return _replace(pipe, source=source), _run_stages(pipe, batch, epoch, position)


@contract.get_batch.register
def _(state: Pipeline, size: int, key: Any = None):
    """The next ``size`` records through the stages; ``size=batch_size`` is ``dfn.step``.

    ```python
    import numpy as np, datarax_fn as dfn
    pipe = dfn.Pipeline(dfn.from_arrays({"x": np.arange(6, dtype=np.int32)}),
                        [dfn.apply_to_keys(lambda x: x * 10, "x")], batch_size=4)
    _, batch = dfn.get_batch(pipe, 4)
    assert batch["x"].tolist() == dfn.step(pipe)[1]["x"].tolist() == [0, 10, 20, 30]
    ```
    """
    if key is not None:
        raise TypeError(
            "get_batch: a Pipeline reads its source's stream in order and has no keyed sampling; "
            "draw from the source, dfn.get_batch(pipeline.source, size, key), and apply "
            "pipeline.stages yourself, or use dfn.step(pipeline)."
        )
    return _read(state, checks.check_size(size))


@contract.get_batch_at.register
def _(state: Pipeline, start: Any, size: int, key: Any = None):
    raise TypeError(
        "get_batch_at: a Pipeline steps through its stream (its stage keys follow the stream position); "
        "read records by position from its source, dfn.get_batch_at(pipeline.source, start, size), or "
        "step with dfn.step(pipeline) / dfn.get_batch(pipeline, size)."
    )


@contract.get_global_batch.register
def _(state: Pipeline, global_size: int, sharding: Any):
    raise TypeError(
        "get_global_batch: a Pipeline does not lay out global batches yet; read the global batch from "
        "its source, dfn.get_global_batch(pipeline.source, global_size, sharding), and apply "
        "pipeline.stages inside your jitted step."
    )


# ----------------------------------------------------------------------------- host iteration


@contract.iterate_defaults.register
def _(state: Pipeline, size: int | None):
    if size is not None and size != state.batch_size:
        raise ValueError(
            f"iterate: this pipeline's batch_size is {state.batch_size}; got size={size}. "
            "Leave size out, or build the pipeline with the batch size you want."
        )
    return state.batch_size, "drop"


@contract.iterate.register
def _(state: Pipeline, size: int | None = None, *, epochs: int = 1):
    """``remainder="straddle"`` on a pipeline: ``dfn.step`` until ``epochs`` epochs of records are seen."""
    if contract.num_records(state.source) is not None:
        return contract.iterate_batches(state, state.batch_size, epochs)

    def walk(pipe):
        # Of unknown length (a stream that filters or expands): the source's own walk decides when its
        # epochs are seen; each batch goes through the stages keyed by where it started.
        before = pipe.source
        for source, batch in contract.iterate(before, pipe.batch_size, epochs=epochs):
            epoch, position = _position(before)
            pipe, before = _replace(pipe, source=source), source
            yield pipe, _run_stages(pipe, batch, epoch, position)

    return walk(state)


# ----------------------------------------------------------------------------- generic functions


@contract.num_records.register
def _(state: Pipeline):
    return contract.num_records(state.source)


@contract.element_spec.register
def _(state: Pipeline):
    """The spec of one record after the stages (traced, nothing runs)."""
    spec = contract.element_spec(state.source)
    batch = jax.tree.map(lambda s: jax.ShapeDtypeStruct((state.batch_size, *s.shape), s.dtype), spec)
    epoch, position = _position(state.source)
    n = contract.num_records(state.source)
    out = jax.eval_shape(functools.partial(_apply, num_records=n, counted=_counted(state.source)), state.stages,
                         batch, state.seed, epoch, position)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), out)


@contract.dataset_info.register
def _(state: Pipeline):
    return contract.dataset_info(state.source)


@statistics.unstaged.register
def _(state: Pipeline):
    return state.source


def stages_key(stages: Chain) -> str:
    """Returns a digest of what the stages compute: code, closed-over values, parameters.

    Raises ``ValueError`` naming the value and ``dfn.named_stage`` as the fix when a
    stage holds something whose computation cannot be read.
    """
    try:
        return fingerprint(stages, "pipeline.stages")
    except Unfingerprintable as err:
        raise ValueError(
            f"cursor: a pipeline cursor identifies its stages by what they compute, but {err.path} holds "
            f"a {err.value_type}, whose computation cannot be read. Wrap that stage as "
            "dfn.named_stage(stage, 'a-name-v1') so the cursor records the name instead (change the "
            "name whenever the stage's output changes)."
        ) from None


def _stream_key(state: Pipeline) -> dict[str, Any]:
    return {"batch_size": state.batch_size, "stages": stages_key(state.stages), "seed": int(state.seed)}


@contract.cursor.register
def _(state: Pipeline):
    key = _stream_key(state)
    source = contract.cursor(state.source)
    # A stream that filters or expands: the records served (what keys its records) stand for its positions.
    index, epoch = (source["served"], 0) if _counted(state.source) is not None else (source["index"], source["epoch"])
    return cursors.make_cursor("pipeline", index, epoch, key.pop("seed"), **key, source=source)


@contract.restore_cursor.register
def _(state: Pipeline, cursor: dict[str, Any]):
    if isinstance(cursor, dict) and cursor.get("kind") == "pipeline" and not isinstance(cursor.get("source"), dict):
        raise ValueError("restore_cursor: the pipeline cursor lacks its 'source' cursor; pass dfn.cursor(pipeline).")
    cursors.check_cursor(cursor, "pipeline", _stream_key(state), contract.num_records(state.source))
    return _replace(state, source=contract.restore_cursor(state.source, cursor["source"]))


__all__ = ["Pipeline", "record_keys", "stages_key", "step"]
