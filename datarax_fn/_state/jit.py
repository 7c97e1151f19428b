"""Keeping the dataset in place when a jitted step carries the source state.

A jitted function that returns its input state unchanged still gets *fresh* output
buffers from XLA: without donation, every call copies the whole dataset (about 25 ms
for MNIST on a CPU). Three paths avoid it:

- eager ``get_batch`` runs a kernel whose output holds only the cursor and the batch,
  then rebuilds the state around the same data arrays;
- ``jit_step`` jits a training step and donates every argument that holds a source
  state, so XLA aliases the data buffers in to out;
- ``lax.scan`` / ``lax.fori_loop`` alias their carry.

A plain ``jax.jit`` over a step that returns the state, without donation, gets a
``DatasetCopyWarning`` the first time it is traced with a dataset larger than
``COPY_WARNING_BYTES``.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .contract import Source

COPY_WARNING_BYTES = 8 * 2**20


class DatasetCopyWarning(UserWarning):
    """A jitted step will copy the whole dataset on every call."""


def _outermost_jit_donates() -> bool | None:
    """Best effort: whether the outermost ``jax.jit`` being traced donates any argument.

    JAX offers no public query for donation during tracing, so this reads the
    ``donated_invars`` local of JAX's jit-tracing frame. Returns None when that frame is
    not found (no enclosing jit, e.g. a top-level ``lax.scan``, or a JAX version whose
    internals differ).
    """
    # Why a private frame: the copy this guards against costs a whole dataset per step and
    # shows no error, and the only other signal (the compiled program's aliasing) exists
    # after tracing, too late to point at the line. The lookup is read-only and a miss only
    # silences the warning; tests/test_jit.py::test_donation_probe_finds_jax_jit_tracing_frame
    # fails, naming this function, when a JAX release renames the frame or the local.
    found = None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_trace_for_jit" and "donated_invars" in frame.f_locals:
            found = any(frame.f_locals["donated_invars"])
        frame = frame.f_back
    return found


def warn_if_copied(data: Any) -> None:
    """Warns once when a traced ``get_batch`` sits in a jit that does not donate the state."""
    nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(data))
    if nbytes < COPY_WARNING_BYTES or _outermost_jit_donates() is not False:
        return
    warnings.warn(
        f"datarax_fn: get_batch is traced inside a jax.jit that donates no argument, with a "
        f"{nbytes / 2**20:.0f} MiB dataset in the state. If that jit returns the state, XLA copies "
        "the whole dataset on every call. Wrap the step with dfn.jit_step(step) or pass "
        "donate_argnums=<the state's position> to jax.jit; if the jit does not return the state, "
        "silence this with warnings.filterwarnings('ignore', category=dfn.DatasetCopyWarning).",
        DatasetCopyWarning,
        stacklevel=4,
    )


class _Split:
    """One argument or result split for ``jax.jit``: its array leaves as children, the rest as static aux data.

    ``jax.jit`` takes arrays (and Python numbers) only, but an equinox model also holds
    functions (``eqx.nn.MLP``'s activation, a ``custom_jvp``). As ``eqx.filter_jit`` does,
    such leaves travel in the tree structure: they are compared (and hashed) to pick a
    compiled program, and never traced.
    """

    __slots__ = ("dynamic", "static")

    def __init__(self, dynamic: Any, static: Any):
        self.dynamic, self.static = dynamic, static


jax.tree_util.register_pytree_node(
    _Split, lambda s: ((s.dynamic,), s.static), lambda static, children: _Split(children[0], static)
)


def _traceable(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def _split(tree: Any) -> Any:
    """Returns ``tree`` unchanged when every leaf is traceable, else a ``_Split`` of it."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if all(_traceable(x) for x in leaves):
        return tree
    dynamic = [x if _traceable(x) else None for x in leaves]
    static = (treedef, tuple(None if _traceable(x) else x for x in leaves))
    return _Split(dynamic, static)


def _join(tree: Any) -> Any:
    """Returns ``tree`` put back together if ``_split`` split it (its inverse), else ``tree``."""
    if not isinstance(tree, _Split):
        return tree
    treedef, static = tree.static
    return jax.tree_util.tree_unflatten(treedef, [s if d is None else d for d, s in zip(tree.dynamic, static)])


def is_deleted(x: Any) -> bool:
    """Returns True when ``x`` is a concrete ``jax.Array`` whose buffers were deleted, as donating it does."""
    return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and x.is_deleted()


def is_donated(tree: Any) -> bool:
    """Returns True when an array of ``tree`` was deleted, as donating it to a jit does."""
    return any(is_deleted(x) for x in jax.tree.leaves(tree))


def reused_donation(where: str, what: str) -> ValueError:
    """Returns the error for a donated state used again (JAX's own says only 'Array has been deleted')."""
    return ValueError(
        f"{where}: {what} was donated to an earlier dfn.jit_step call (or a jax.jit with donate_argnums), "
        "which moved its buffers into the state that call returned; this one is consumed. Continue with the "
        "returned state (state = step(state), never step(old_state) twice). To come back to a position, save "
        "dfn.cursor(state) before the step and dfn.restore_cursor a live state to it."
    )


def _holds_source(tree: Any) -> bool:
    is_source = lambda x: isinstance(x, Source)  # noqa: E731
    return any(is_source(x) for x in jax.tree.leaves(tree, is_leaf=is_source))


def jit_step(fn: Callable | None = None, **jit_kwargs: Any) -> Callable:
    """Returns ``fn`` jitted with every argument that holds a source state donated.

    Positional and keyword arguments are both donated. The donated state's data buffers
    are aliased into the returned state, so a step costs what the batch costs, not a
    copy of the dataset. Always continue with the state the step returns: the one passed
    in is consumed. ``fn`` must return every state it receives (checked when tracing).
    Leaves that are neither arrays nor numbers (an ``eqx.nn.MLP``'s activation function)
    are static, as ``eqx.filter_jit`` makes them, in the arguments and in the result.

    Arguments:
        fn: the step function; leave it out to use ``@dfn.jit_step(**jit_kwargs)``.
        **jit_kwargs: other ``jax.jit`` keywords (``static_argnums``...), passed through;
            ``donate_argnums``/``donate_argnames`` are chosen here and refused.

    Returns:
        the jitted function.

    ```python
    import jax.numpy as jnp, numpy as np, datarax_fn as dfn

    @dfn.jit_step
    def step(total, state):
        state, batch = dfn.get_batch(state, 4)
        return total + batch["x"].sum(), state

    total, state = jnp.int32(0), dfn.from_arrays({"x": np.arange(8, dtype=np.int32)})
    total, state = step(total, state=state)
    assert int(total) == 6
    ```
    """
    if fn is None:
        return functools.partial(jit_step, **jit_kwargs)
    if "donate_argnums" in jit_kwargs or "donate_argnames" in jit_kwargs:
        raise TypeError("jit_step chooses donate_argnums itself; use jax.jit directly to set them.")
    compiled: dict[tuple[tuple[int, ...], tuple[str, ...]], Callable] = {}
    static_nums = jit_kwargs.get("static_argnums", ())
    static_nums = {static_nums} if isinstance(static_nums, int) else set(static_nums)
    static_names = jit_kwargs.get("static_argnames", ())
    static_names = {static_names} if isinstance(static_names, str) else set(static_names)

    def traced(donating):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            out = fn(*map(_join, args), **{k: _join(a) for k, a in kwargs.items()})
            if donating and not _holds_source(out):
                raise ValueError(
                    f"jit_step: {getattr(fn, '__name__', fn)} takes a source state but does not return "
                    "one. jit_step donates the state, so it must come back out; return the new state, "
                    "or use jax.jit without donation for read-only functions."
                )
            return _split(out)

        return run

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        nums = tuple(i for i, a in enumerate(args) if _holds_source(a))
        names = tuple(sorted(k for k, a in kwargs.items() if _holds_source(a)))
        if (nums, names) not in compiled:
            compiled[nums, names] = jax.jit(
                traced(bool(nums or names)), donate_argnums=nums, donate_argnames=names, **jit_kwargs
            )
        args = tuple(a if i in static_nums else _split(a) for i, a in enumerate(args))
        kwargs = {k: a if k in static_names else _split(a) for k, a in kwargs.items()}
        try:
            out = compiled[nums, names](*args, **kwargs)
        except Exception as error:  # JAX's "Array has been deleted" or XLA's "Buffer has been deleted or donated"
            reused = [f"argument {i}" for i in nums if is_donated(args[i])]
            reused += [f"argument {k!r}" for k in names if is_donated(kwargs[k])]
            if not reused:
                raise
            raise reused_donation(f"jit_step({getattr(fn, '__name__', 'fn')})",
                                  f"the source state passed as {' and '.join(reused)}") from error
        return _join(out)

    wrapper.compiled = compiled  # one jax.jit per donation pattern; benchmarks read their caches
    return wrapper
