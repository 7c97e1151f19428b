"""Cost of ``dfn.cursor(state)`` and of a rebuilt source in a jitted step, at MNIST size.

Dataset: 60,000 x 28 x 28 uint8 images plus int32 labels. Rows:

- ``cursor(state)``: the JSON cursor a checkpoint callback builds every step;
- ``restore_cursor(state, c)``: moving a state to a saved cursor;
- ``from_arrays`` (build): what a fresh process pays once, fingerprint included;
- jit cache entries after stepping a source and then a rebuilt copy of it (1 means
  the rebuilt source reused the compiled step; 2 means it retraced).
"""

from __future__ import annotations

import numpy as np
from _harness import parse_args, rates, report, row

import datarax_fn as dfn


def ms(fn, calls: int, repeats: int) -> list[float]:
    """Returns ``repeats`` samples of milliseconds per call of ``fn``."""
    return [1e3 / r for r in rates(fn, 1, calls, repeats)]


def cache_size(step) -> int:
    """Compiled entries of a ``jit_step`` (one per donation pattern, each with its cache)."""
    return sum(f._cache_size() for f in step.compiled.values())


def main() -> None:
    args = parse_args(__doc__)
    repeats = 3 if args.quick else 5
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8),
              "label": rng.integers(0, 10, 60_000).astype(np.int32)}
    # info= stands for the backend metadata a loader attaches (a fresh object per load).
    build = lambda: dfn.from_arrays(arrays, shuffle=True, seed=0, info={"split": "train"})  # noqa: E731
    state = build()
    state, _ = dfn.get_batch(state, 128)
    saved = dfn.cursor(state)

    @dfn.jit_step
    def step(s):
        return dfn.get_batch(s, 128)

    step(build())
    step(build())
    entries = cache_size(step)
    rows = [
        row("cursor", "cursor(state)", "datarax_fn", "ms", ms(lambda: dfn.cursor(state), 50, repeats)),
        row("cursor", "restore_cursor(state, c)", "datarax_fn", "ms", ms(lambda: dfn.restore_cursor(state, saved), 10, repeats)),
        row("cursor", "from_arrays (build, fingerprint included)", "datarax_fn", "ms", ms(build, 2, repeats),
            note=f"jit cache entries after stepping a rebuilt source: {entries} (1: no retrace)"),
    ]
    report("Cursor and rebuild costs, 60,000 x 28 x 28 uint8", rows, args)


if __name__ == "__main__":
    main()
