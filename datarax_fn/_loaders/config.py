"""The loader configs: one option vocabulary and one validation rule for HF and TFDS, plus the mode choice.

Every option is declared once, with its check, on the base classes here; the HF and TFDS
configs only add their backend's own options. The rule for every option: a wrong type raises
``TypeError``, a wrong value ``ValueError``; NumPy integers are accepted wherever ints are
(and stored as ``int``); ``bool`` is never an int.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .batch_layout import TRANSFORM_FORMATS, with_format

logger = logging.getLogger("datarax_fn")

IMAGE_MODES = ("L", "LA", "RGB", "RGBA", "I;16", "I", "F")  # the conversion layer's modes


# ----------------------------------------------------------------------------- option checks


class _Bad(Exception):
    """An option's check failed: ``kind`` is TypeError or ValueError, ``want`` says what fits."""

    def __init__(self, kind: type, want: str):
        super().__init__(want)
        self.kind, self.want = kind, want


def _int(v: Any, lo: int = 0, hi: int | None = None, what: str = "an int") -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise _Bad(TypeError, what)
    if v < lo or (hi is not None and v >= hi):
        raise _Bad(ValueError, what)
    return int(v)


def positive(v: Any) -> int:
    return _int(v, 1, what="an int >= 1")


def non_negative(v: Any) -> int:
    return _int(v, 0, what="an int >= 0")


def seed_value(v: Any) -> int:
    return _int(v, 0, 2**32, what="an int in [0, 2**32)")


def flag(v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise _Bad(TypeError, "True or False")
    return bool(v)


def text(v: Any) -> str:
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if not isinstance(v, str):
        raise _Bad(TypeError, "a non-empty string")
    if not v.strip():
        raise _Bad(ValueError, "a non-empty string")
    return v


def function(v: Any) -> Callable:
    if not callable(v):
        raise _Bad(TypeError, "a function dict of columns -> dict of columns")
    return v


def predicate(v: Any) -> Callable:
    if not callable(v):
        raise _Bad(TypeError, "a function dict of columns -> bool mask of the rows to keep")
    return v


def mapping(v: Any) -> dict:
    if not isinstance(v, Mapping):
        raise _Bad(TypeError, "a dict")
    return dict(v)


def keys(v: Any) -> tuple[str, ...]:
    want = "a list of (dotted) feature names, e.g. ['image', 'answers.text']"
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, set, frozenset)):
        raise _Bad(TypeError, want)
    if not all(isinstance(k, str) for k in v):
        raise _Bad(TypeError, want)
    # A set's iteration order is not its value: sorted, two configs from equal sets are equal.
    return tuple(sorted(v)) if isinstance(v, (set, frozenset)) else tuple(v)


def max_length(v: Any) -> Any:
    want = "an int >= 1, or a {dotted field: int >= 1 or a tuple of ints >= 1, one per ragged level} dict"
    if not isinstance(v, Mapping):
        try:
            return positive(v)
        except _Bad as bad:
            raise _Bad(bad.kind, want) from None
    out = {}
    for k, x in v.items():
        if not isinstance(k, str):
            raise _Bad(TypeError, want)
        try:
            out[k] = tuple(positive(y) for y in x) if isinstance(x, (tuple, list)) else positive(x)
        except _Bad as bad:
            raise _Bad(bad.kind, want) from None
    return out


def image_mode(v: Any) -> Any:
    want = f"one of {IMAGE_MODES}, or a {{field: mode}} dict"
    vals = v.values() if isinstance(v, Mapping) else [v]
    for x in vals:
        if not isinstance(x, str):
            raise _Bad(TypeError, want)
        if x not in IMAGE_MODES:
            raise _Bad(ValueError, want)
    return dict(v) if isinstance(v, Mapping) else v


def transform_format(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(TypeError, f"one of {TRANSFORM_FORMATS}")
    if v not in TRANSFORM_FORMATS:
        raise _Bad(ValueError, f"one of {TRANSFORM_FORMATS}")
    return v


def data_files(v: Any) -> Any:
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if not isinstance(v, (str, list, tuple, Mapping)):
        raise _Bad(TypeError, "a path, a list of paths or a {split: paths} dict")
    return list(v) if isinstance(v, tuple) else v


def option(default: Any, check: Callable[[Any], Any], *, optional: bool = False, doc: str = "") -> Any:
    """Returns a dataclass field whose value ``check`` validates (None allowed when ``optional``)."""
    return dataclasses.field(default=default, metadata={"check": check, "optional": optional, "doc": doc})


def validate(cfg: Any) -> None:
    """Checks (and normalises) every option of a config in place; raises TypeError / ValueError.

    The one validation rule of every loader config: each field's declared check, then the
    cross-option rules.
    """
    owner = type(cfg).__name__
    for f in dataclasses.fields(cfg):
        check = f.metadata.get("check")
        value = getattr(cfg, f.name)
        if check is None or (value is None and f.metadata.get("optional")):
            continue
        try:
            value = check(value)
        except _Bad as bad:
            none = " or None" if f.metadata.get("optional") else ""
            raise bad.kind(f"{owner}: {f.name} must be {bad.want}{none}; got {f.name}={value!r}.") from None
        object.__setattr__(cfg, f.name, value)
    if cfg.include_keys is not None and cfg.exclude_keys is not None:
        raise ValueError(
            f"{owner}: include_keys and exclude_keys are exclusive; got both: include_keys={list(cfg.include_keys)}, "
            f"exclude_keys={list(cfg.exclude_keys)}. Set one of them."
        )
    if cfg.include_keys == ():
        raise ValueError(f"{owner}: include_keys=[] keeps nothing; name at least one feature or leave it None.")
    mode = getattr(type(cfg), "STREAMING", False)
    if cfg.streaming != mode:
        other = owner.replace("Streaming", "Eager") if mode else owner.replace("Eager", "Streaming")
        raise ValueError(f"{owner}: streaming={cfg.streaming!r} contradicts the config; use {other} instead.")


# ----------------------------------------------------------------------------- the vocabulary


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    """Returns the options shared by every loader config (HF and TFDS, eager and streaming)."""

    name: str = option(None, text)
    split: Any = option("train", text)
    data_dir: str | None = option(None, text, optional=True)
    include_keys: tuple[str, ...] | None = option(None, keys, optional=True)
    exclude_keys: tuple[str, ...] | None = option(None, keys, optional=True)
    shuffle: bool = option(False, flag)
    seed: int = option(0, seed_value)
    local_files_only: bool = option(False, flag)
    transform: Callable[[dict], dict] | None = option(None, function, optional=True)
    transform_format: str = option("columns", transform_format)
    filter: Callable[[dict], Any] | None = option(None, predicate, optional=True)
    max_length: int | Mapping[str, Any] | None = option(None, max_length, optional=True)
    truncate: bool = option(False, flag)
    image_mode: str | Mapping[str, str] | None = option(None, image_mode, optional=True)
    num_threads: int | None = option(None, positive, optional=True)
    progress: bool | None = option(None, flag, optional=True)
    streaming: bool = option(False, flag)
    partitions: int = option(1, positive)

    def __post_init__(self) -> None:
        validate(self)


@dataclasses.dataclass(frozen=True)
class StreamingOptions:
    """Returns the options every streaming config adds (mixed in before the backend's config)."""

    STREAMING = True

    streaming: bool = option(True, flag)
    shuffle_buffer_size: int = option(1000, positive)
    prefetch: int = option(2, positive)
    num_workers: int | None = option(None, positive, optional=True)
    chunk_size: int = option(512, positive)
    num_epochs: int | None = option(None, positive, optional=True)


def conversion_options(cfg: LoaderConfig) -> dict[str, Any]:
    """Returns the conversion options of a config, as the conversion layer takes them."""
    return dict(max_length=cfg.max_length, truncate=cfg.truncate, image_mode=cfg.image_mode,
                transform=with_format(cfg.transform, cfg.transform_format), num_threads=cfg.num_threads,
                filter=with_format(cfg.filter, cfg.transform_format))


def configs_from_options(
    eager_cls: type, stream_cls: type, owner: str, **options: Any
) -> tuple[Any, Any]:
    """Returns ``(eager config, streaming config)`` built from ``from_hf`` / ``from_tfds`` options.

    Unknown options raise a TypeError listing the valid ones; streaming-only options are left
    out of the eager config.
    """
    valid = {f.name for f in dataclasses.fields(stream_cls)} - {"streaming"}
    unknown = sorted(set(options) - valid)
    if unknown:
        hint = " (the mode is chosen with streaming=None|True|False)" if "eager" in unknown else ""
        raise TypeError(f"{owner}: unknown options {unknown}{hint}; valid options are {sorted(valid - {'name'})}.")
    eager_names = {f.name for f in dataclasses.fields(eager_cls)}
    stream = stream_cls(**options)
    eager = eager_cls(**{k: v for k, v in options.items() if k in eager_names})
    return eager, stream


# ----------------------------------------------------------------------------- mode choice


def available_memory() -> int:
    """Returns the bytes of memory available to this process now (MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30  # unknown platform: assume a modest machine


def memory_budget(fraction: float = 0.5) -> int:
    """Returns ``fraction`` of the available memory, in bytes: the largest split loaded eagerly.

    ```python
    from datarax_fn._loaders.config import memory_budget
    assert memory_budget(0.25) <= memory_budget(0.5)
    ```
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"memory_budget: fraction must be in (0, 1]; got fraction={fraction!r}.")
    return int(available_memory() * fraction)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def choose_mode(nbytes: int | None, budget: int | None = None) -> tuple[bool, str]:
    """Returns ``(eager, reason)``: eager when the split's ``nbytes`` fit the ``budget``.

    ``budget=None`` uses :func:`memory_budget`. An unknown size (``None``) streams.
    """
    if budget is None:
        budget = memory_budget()
    if nbytes is None:
        return False, f"the split's size is unknown, so it streams (budget {_mb(budget)})"
    if nbytes <= budget:
        return True, f"the split needs about {_mb(nbytes)}, within the memory budget of {_mb(budget)}"
    return False, f"the split needs about {_mb(nbytes)}, over the memory budget of {_mb(budget)}"


def check_mode(owner: str, streaming: Any, budget: Any) -> tuple[bool | None, int | None]:
    """Returns the validated ``(streaming, memory_budget)`` arguments of ``from_hf`` / ``from_tfds``."""
    if streaming is not None and not isinstance(streaming, (bool, np.bool_)):
        raise TypeError(f"{owner}: streaming must be None (choose by size), True or False; got streaming={streaming!r}.")
    if budget is not None:
        try:
            budget = non_negative(budget)
        except _Bad as bad:
            raise bad.kind(f"{owner}: memory_budget must be {bad.want} (bytes) or None; got {budget!r}.") from None
    return (None if streaming is None else bool(streaming)), budget


def decide(owner: str, label: str, streaming: bool | None, budget: int | None, estimate: Callable[[], Any]) -> bool:
    """Returns True to stream: as asked, else when ``estimate()`` bytes exceed the budget; logs why.

    ``estimate()`` returns the bytes (None: unknown), or ``(bytes, how they were estimated)``.
    """
    if streaming is not None:
        stream, reason = streaming, f"streaming={streaming} was asked for"
    else:
        nbytes, how = estimate(), None
        if isinstance(nbytes, tuple):
            nbytes, how = nbytes
        eager, reason = choose_mode(nbytes, memory_budget() if budget is None else budget)
        stream = not eager
        reason += f" ({how})" if how else ""
    logger.info("%s(%s): %s, because %s", owner, label, "streaming" if stream else "eager", reason)
    return stream


__all__ = [
    "LoaderConfig", "StreamingOptions", "available_memory", "check_mode", "choose_mode", "configs_from_options",
    "conversion_options", "decide", "logger", "memory_budget", "option", "validate",
]
