"""The replay backends' shuffled order written out naively, as the docs define it (a test oracle).

Every list is built in full (O(N) memory), unlike the backends, which compute positions
on the fly and read only what they need.
"""

from __future__ import annotations

import numpy as np

import datarax_fn as dfn
from datarax_fn._loaders.replay_order import SEGMENT_SALT, SHIFT_SALT
from datarax_fn._state.shuffle import epoch_seed


def replay_order(bounds, lo: int, hi: int, window: int | None, seed: int, epoch: int) -> list[int]:
    """Returns the file rows of ``[lo, hi)`` in the order epoch ``epoch`` visits them."""
    if window is None:
        return list(range(lo, hi))
    cuts = sorted({lo, hi, *(int(b) for b in bounds if lo < b < hi)})
    segments = [list(range(a, b)) for a, b in zip(cuts, cuts[1:])]
    m = len(segments)
    visit = dfn.permute(np.arange(m), m, seed ^ SEGMENT_SALT, epoch).tolist() if m > 1 else [0]
    tape = [row for j in visit for row in segments[j]]
    shift = epoch_seed(seed ^ SHIFT_SALT, epoch) % window if len(tape) > window else 0
    out, start, k = [], 0, 0
    while start < len(tape):
        stop = min(len(tape), (k + 1) * window - shift)
        w = stop - start
        out += [tape[start + i] for i in dfn.permute(np.arange(w), w, epoch_seed(seed, k), epoch).tolist()]
        start, k = stop, k + 1
    return out
