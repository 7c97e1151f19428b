"""Cost of ``dfn.cursor(state)`` and of a rebuilt source in a jitted step, at MNIST size.

Run: ``.venv/bin/python benchmarks/cursor.py``. Not run in CI.

Dataset: 60,000 x 28 x 28 uint8 images plus int32 labels. Rows:

- ``cursor(state)``: the JSON cursor a checkpoint callback builds every step;
- ``restore_cursor(state, c)``: moving a state to a saved cursor;
- ``from_arrays`` (build): what a fresh process pays once, fingerprint included;
- jit cache entries after stepping a source and then a rebuilt copy of it (1 means
  the rebuilt source reused the compiled step; 2 means it retraced).
"""

from __future__ import annotations

import time

import jax
import numpy as np

import datarax_fn as dfn


def best_ms(fn, calls: int = 50, repeats: int = 5) -> float:
    """Best-of-``repeats`` milliseconds per call of ``fn``."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best * 1e3


def cache_size(step) -> int:
    """Compiled entries of a ``jit_step`` (one per donation pattern, each with its cache)."""
    return sum(f._cache_size() for f in step.compiled.values())


def main() -> None:
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8),
              "label": rng.integers(0, 10, 60_000).astype(np.int32)}
    # info= stands for the backend metadata a loader attaches (a fresh object per load).
    build = lambda: dfn.from_arrays(arrays, shuffle=True, seed=0, info={"split": "train"})  # noqa: E731
    state = build()
    state, _ = dfn.get_batch(state, 128)
    saved = dfn.cursor(state)
    rows = [
        ("cursor(state)", best_ms(lambda: dfn.cursor(state))),
        ("restore_cursor(state, c)", best_ms(lambda: dfn.restore_cursor(state, saved), calls=10)),
        ("from_arrays (build)", best_ms(build, calls=3, repeats=3)),
    ]

    @dfn.jit_step
    def step(s):
        return dfn.get_batch(s, 128)

    step(build())
    step(build())
    print("| operation | ms |")
    print("|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} |")
    print(f"| jit cache entries after a rebuilt source | {cache_size(step)} |")


if __name__ == "__main__":
    main()
