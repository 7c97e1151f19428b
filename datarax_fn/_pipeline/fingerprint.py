"""Fingerprints of stages by what they compute, so a cursor is refused on other stages.

Two lambdas have the same repr, so a structural digest cannot tell
``lambda b, k: {"x": b["x"] * 2}`` from ``... * 3``. ``fingerprint`` hashes what a
stage computes instead: for a Python function its bytecode, constants, names, defaults,
closure values and the globals it reads (functions of its own module recursively; other
modules' objects by their import name); for a Module its type and fields; for a
callable object its class's ``__call__`` and its attributes; arrays by dtype, shape and
bytes. Line numbers and addresses are left out, so moving a function in
its file keeps its fingerprint. Bytecode differs between Python versions, so a cursor
saved under another version is refused (name the stages to carry it over).

What it cannot see through (an open file, a tokenizer object in a closure) raises
``Unfingerprintable`` naming the path to the value; ``named_stage`` lets the user vouch
for a stage with a name instead.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import site
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np
import xxhash

from .stages import FnStage, Stage

_PLAIN = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))
# The code flags that change what a function does; the rest record how it was compiled
# (``from __future__`` imports of the defining file, nesting), not what it computes.
_BEHAVIOUR_FLAGS = (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS | inspect.CO_GENERATOR | inspect.CO_COROUTINE
                    | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE)


class Unfingerprintable(ValueError):
    """A value inside a stage whose computation cannot be fingerprinted (``path`` says where)."""

    def __init__(self, path: str, value: Any):
        self.path = path
        self.value_type = type(value).__name__
        super().__init__(f"{path} holds a {self.value_type}, which cannot be fingerprinted")


class NamedStage(Stage):
    """A stage whose fingerprint is the name its author gave it (see ``named_stage``)."""

    stage: Any
    name: str = eqx.field(static=True)

    def __call__(self, batch, key=None):
        return self.stage(batch, key)


def named_stage(stage: Callable, name: str) -> NamedStage:
    """Returns ``stage`` under a ``name`` that a pipeline cursor records instead of its code.

    A cursor identifies a pipeline's stages by what they compute (their code, closed-over
    values and parameters). Name a stage when that cannot be read (it closes over an
    object such as a tokenizer or a file), or to keep cursors valid across edits you
    know do not change the output. Change the name when the computation changes.

    Arguments:
        stage: a stage ``(batch, key) -> batch`` (a Module or a plain function).
        name: a non-empty string; two pipelines share cursors only if their names match.

    Returns:
        the stage, wrapped.

    ```python
    import numpy as np, datarax_fn as dfn
    vocab = {"a": 0, "b": 1}.get                   # a bound method of a dict: no code to read
    def lookup(batch, key):
        return {**batch, "id": np.vectorize(vocab)(batch["word"])}
    source = dfn.from_arrays({"x": np.arange(4, dtype=np.int32)})
    pipe = dfn.Pipeline(source, [dfn.named_stage(lookup, "vocab-v1")], batch_size=2)
    other = dfn.Pipeline(source, [dfn.named_stage(lookup, "vocab-v2")], batch_size=2)
    assert dfn.cursor(pipe)["stages"] != dfn.cursor(other)["stages"]
    ```
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"named_stage: name must be a non-empty str; got {name!r}. E.g. named_stage(fn, 'crop-v2').")
    if not callable(stage):
        raise TypeError(f"named_stage: stage must be a callable (batch, key) -> batch; got {type(stage).__name__}.")
    if not isinstance(stage, eqx.Module):
        stage = FnStage(stage)
    return NamedStage(stage, name)


def fingerprint(obj: Any, path: str = "stages") -> str:
    """Returns a hex digest of what ``obj`` computes (see the module docstring).

    Raises:
        Unfingerprintable: ``obj`` holds a value whose computation cannot be read.
    """
    h = xxhash.xxh3_128()
    _feed(h, obj, path, [])
    return h.hexdigest()


def _feed(h: Any, obj: Any, path: str, stack: list[int]) -> None:
    if isinstance(obj, _PLAIN):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if id(obj) in stack:  # a cycle (a function that calls itself through a global)
        h.update(f"cycle:{len(stack) - stack.index(id(obj))};".encode())
        return
    stack.append(id(obj))
    try:
        _feed_value(h, obj, path, stack)
    finally:
        stack.pop()


def _feed_value(h: Any, obj: Any, path: str, seen: list[int]) -> None:
    if isinstance(obj, NamedStage):
        h.update(f"named:{obj.name!r};".encode())
    elif isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        x = np.asarray(obj)
        h.update(f"array:{x.dtype.str}:{x.shape};".encode())
        h.update(np.ascontiguousarray(x).tobytes() if x.dtype != object else repr(x.tolist()).encode())
    elif isinstance(obj, np.dtype):
        h.update(f"dtype:{obj.str};".encode())
    elif isinstance(obj, (tuple, list)):
        h.update(f"{type(obj).__name__}:{len(obj)};".encode())
        for i, item in enumerate(obj):
            _feed(h, item, f"{path}[{i}]", seen)
    elif isinstance(obj, dict):
        h.update(f"dict:{len(obj)};".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k, f"{path} key", seen)
            _feed(h, obj[k], f"{path}[{k!r}]", seen)
    elif isinstance(obj, (set, frozenset)):
        h.update(f"set:{sorted(fingerprint(item) for item in obj)};".encode())
    elif isinstance(obj, eqx.Module):
        h.update(f"module:{_name(type(obj))};".encode())
        for field in dataclasses.fields(obj):
            _feed(h, field.name, path, seen)
            _feed(h, getattr(obj, field.name), f"{path}.{field.name}", seen)
    elif isinstance(obj, types.FunctionType) and not (_in_library(obj) and _importable(obj)):
        _feed_function(h, obj, path, seen)
    elif isinstance(obj, types.CodeType):
        _feed_code(h, obj, path, seen)
    elif isinstance(obj, functools.partial):
        h.update(b"partial;")
        _feed(h, obj.func, f"{path}.func", seen)
        _feed(h, obj.args, f"{path}.args", seen)
        _feed(h, obj.keywords, f"{path}.keywords", seen)
    elif isinstance(obj, types.MethodType):
        h.update(b"method;")
        _feed(h, obj.__func__, f"{path}.__func__", seen)
        _feed(h, obj.__self__, f"{path}.__self__", seen)
    elif isinstance(obj, types.ModuleType):
        h.update(f"import:{obj.__name__};".encode())
    elif _importable(obj):  # a class, a builtin or a library function: by its import name
        h.update(f"import:{_name(obj)};".encode())
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and _importable(type(obj)):
        # A callable object of the user's class: its class's __call__ and its attributes.
        h.update(f"object:{_name(type(obj))};".encode())
        call = getattr(type(obj), "__call__", None)
        if isinstance(call, types.FunctionType):
            _feed_function(h, call, f"{path}.__call__", seen)
        _feed(h, vars(obj), f"{path}.__dict__", seen)
    else:
        raise Unfingerprintable(path, obj)


def _feed_function(h: Any, fn: types.FunctionType, path: str, seen: list[int]) -> None:
    h.update(f"function:{fn.__qualname__};".encode())
    _feed_code(h, fn.__code__, f"{path}.__code__", seen)
    _feed(h, fn.__defaults__, f"{path}.__defaults__", seen)
    _feed(h, fn.__kwdefaults__, f"{path}.__kwdefaults__", seen)
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell: a name assigned after the function was made
            value = None
        _feed(h, name, path, seen)
        _feed(h, value, f"{path} closure {name!r}", seen)
    for name in sorted(_global_names(fn.__code__)):
        if name not in fn.__globals__:
            continue  # a builtin, or an attribute name that is no global
        value = fn.__globals__[name]
        _feed(h, name, path, seen)
        _feed(h, value, f"{path} global {name!r}", seen)


def _feed_code(h: Any, code: types.CodeType, path: str, seen: list[int]) -> None:
    h.update(b"code;")
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars, code.co_argcount,
                   code.co_kwonlyargcount, code.co_flags & _BEHAVIOUR_FLAGS)).encode())
    _feed(h, code.co_consts, f"{path}.co_consts", seen)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _in_library(fn: types.FunctionType) -> bool:
    """Returns whether ``fn`` comes from an installed package (or datarax_fn), not user code.

    A library's functions are identified by their import name: hashing their code would
    walk the library's internals and tie cursors to its exact version.
    """
    module = sys.modules.get(fn.__module__ or "")
    file = getattr(module, "__file__", None)
    if not file:
        return False
    return fn.__module__.split(".")[0] == "datarax_fn" or os.path.realpath(file).startswith(_LIBRARY_ROOTS)


_LIBRARY_ROOTS = tuple(sorted(
    {os.path.join(os.path.realpath(p), "") for p in (*site.getsitepackages(), *sysconfig.get_paths().values()) if p}
))


def _importable(obj: Any) -> bool:
    """Returns whether ``obj`` is what its import name ``module.qualname`` resolves to."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return False
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is obj


__all__ = ["NamedStage", "Unfingerprintable", "fingerprint", "named_stage"]
