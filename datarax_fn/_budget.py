"""The memory budget that decides eager vs streaming for ``from_hf`` and ``from_tfds``."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("datarax_fn")


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
    from datarax_fn._budget import memory_budget
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


__all__ = ["available_memory", "choose_mode", "memory_budget", "logger"]
