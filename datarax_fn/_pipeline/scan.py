"""Loops over a pipeline under ``lax.scan`` that keep the dataset out of the carry.

An eager source's dataset is split off the pipeline before the scan and joined back
after, so ``lax.scan`` carries only the cursor and the stages and never copies the data.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax

from .._eager.source import EagerSource
from .._state import contract, tracing
from .._state.jit import DatasetCopyWarning
from .pipeline import Pipeline, step

_replace = tracing.replace


def steps_per_epoch(pipeline: Pipeline) -> int:
    """Returns ``max(1, num_records // batch_size)``: the steps ``scan_epoch`` runs.

    Arguments:
        pipeline: a ``dfn.Pipeline`` over a source of known length.

    Returns:
        the number of full batches in one epoch (at least 1).
    """
    n = contract.num_records(pipeline.source)
    if n is None:
        raise ValueError(
            "steps_per_epoch: the source has unknown length (num_records is None); use "
            "dfn.scan(pipeline, step_fn, carry, length=...) with an explicit length."
        )
    return max(1, n // pipeline.batch_size)


def _split_data(pipe: Pipeline) -> tuple[Pipeline, Any]:
    """Takes an eager source's dataset out of the pipeline, so it is never a carry."""
    if isinstance(pipe.source, EagerSource):
        return _replace(pipe, source=tracing.replace(pipe.source, data=None)), pipe.source.data
    return pipe, None


def _join_data(pipe: Pipeline, data: Any) -> Pipeline:
    if data is None:
        return pipe
    return _replace(pipe, source=tracing.replace(pipe.source, data=data))


@functools.partial(tracing.jit_unless_traced, static_argnames=("step_fn", "length"))
def _scan(light: Pipeline, data: Any, step_fn: Callable, carry: Any, length: int):
    def body(c, _):
        light, carry = c
        pipe, batch = step(_join_data(light, data))
        carry, out = step_fn(carry, batch)
        return (_split_data(pipe)[0], carry), out

    (light, carry), outs = jax.lax.scan(body, (light, carry), None, length=length)
    return light, carry, outs


def scan(pipeline: Pipeline, step_fn: Callable, carry: Any, length: int) -> tuple[Pipeline, Any, Any]:
    """Returns ``(pipeline, carry, outs)`` after ``length`` steps under ``lax.scan``.

    ``step_fn(carry, batch) -> (carry, out)`` as in ``lax.scan``; ``outs`` stacks the
    ``out`` of every step. The dataset is a constant of the loop, not part of its carry,
    so it is never copied. Call it inside your own ``jit`` (donate the pipeline, e.g.
    with ``dfn.jit_step``) or outside any ``jit``: it then compiles once per
    ``(step_fn, length)`` and shapes. ``step_fn`` must be hashable (a function, not a
    fresh lambda per call) for that cache to hit.

    Arguments:
        pipeline: a ``dfn.Pipeline`` over an eager source.
        step_fn: ``step_fn(carry, batch) -> (carry, out)``, hashable.
        carry: the initial carry.
        length: the number of steps, a static Python int.

    Returns:
        ``(pipeline, carry, outs)``.

    ```python
    import jax.numpy as jnp, numpy as np, datarax_fn as dfn
    pipe = dfn.Pipeline(dfn.from_arrays({"x": np.arange(8, dtype=np.int32)}), batch_size=2)
    def add(total, batch):
        return total + batch["x"].sum(), batch["x"][0]
    pipe, total, firsts = dfn.scan(pipe, add, jnp.int32(0), length=4)
    assert int(total) == 28 and firsts.tolist() == [0, 2, 4, 6]
    ```
    """
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"scan: expected a dfn.Pipeline; got {type(pipeline).__name__}.")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"scan: length must be a static Python int >= 0; got {length!r}.")
    light, data = _split_data(pipeline)
    with warnings.catch_warnings():
        if not tracing.is_traced(pipeline, carry):
            # Our own jit never returns the dataset, so the copy warning does not apply.
            warnings.simplefilter("ignore", DatasetCopyWarning)
        light, carry, outs = _scan(light, data, step_fn=step_fn, carry=carry, length=length)
    return _join_data(light, data), carry, outs


def scan_epoch(pipeline: Pipeline, step_fn: Callable, carry: Any) -> tuple[Pipeline, Any, Any]:
    """Returns ``(pipeline, carry, outs)`` after one epoch's worth of steps under ``lax.scan``.

    One epoch is ``steps_per_epoch(pipeline) = num_records // batch_size`` steps; as in
    the source's stream, the records left over start the next call's first batch, so
    every record is still seen once per epoch on average and no batch is short. See
    ``dfn.scan`` for ``step_fn``.

    Arguments:
        pipeline: a ``dfn.Pipeline`` over an eager source.
        step_fn: as in ``dfn.scan``.
        carry: the initial carry.

    Returns:
        ``(pipeline, carry, outs)``.
    """
    return scan(pipeline, step_fn, carry, steps_per_epoch(pipeline))


__all__ = ["scan", "scan_epoch", "steps_per_epoch"]
