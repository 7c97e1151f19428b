"""The shuffled order of a replay backend: its shards in a keyed order, records permuted within windows.

A replay backend (parquet through HF, tfrecord through ``tf.data``) reads forward from a row
and seeks cheaply only to the start of one of its own shards (a parquet row group, a
tfrecord file). One epoch ``e`` of the file-order rows ``[lo, hi)`` with seed ``s`` is:

1. **Segments.** ``[lo, hi)`` cut at the shard boundaries.
2. **The tape.** The segments in the order ``permute(j, m, s ^ SEGMENT_SALT, e)``, laid end to
   end: tape position ``p`` is one file row.
3. **Windows.** The tape cut every ``W`` records, the cuts moved by a keyed ``shift`` in
   ``[0, W)`` per epoch: window ``k`` is tape ``[k W - shift, (k + 1) W - shift)`` clipped to
   the tape, so position ``p`` is in window ``(p + shift) // W``. Only the first and last
   windows are short, and which records share a window changes every epoch. A tape of at
   most ``W`` records (or of unknown length) has no shift: one window, or today's cuts.
4. **Inside a window** of ``w`` records: offset ``i`` reads offset ``permute(i, w,
   epoch_seed(s, k), e)``.

Unshuffled, the order is the file order. Position -> (segment, window, offset) is a binary
search over the ``m + 1`` segment ends plus O(1) arithmetic; resuming reads the pieces of one
window (at most ``W`` records) after one seek into the first piece's shard, never the records
before it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from .._state.shuffle import epoch_seed, permute

SEGMENT_SALT = 0x3C6EF372
SHIFT_SALT = 0xA54FF53A


@dataclasses.dataclass(frozen=True)
class Tape:
    """One epoch's layout of file rows: visited segments and the window cuts."""

    starts: np.ndarray  # file row of each visited segment's first record, in visiting order
    ends: np.ndarray  # tape position just past each visited segment (cumulative lengths)
    length: int | None  # records on the tape; None when the backend does not know
    window: int | None  # W, or None for file order
    shift: int
    seed: int
    epoch: int

    def window_at(self, position: int) -> tuple[int, int]:
        """Returns ``(k, start)``: the window holding tape ``position`` and its first position."""
        if self.window is None:
            return 0, position
        k = (position + self.shift) // self.window
        return k, max(0, k * self.window - self.shift)

    def window_sizes(self, k: int) -> Iterator[int]:
        """Yields the sizes of windows ``k, k + 1, ...`` (the last one clipped to the tape)."""
        while True:
            lo = max(0, k * self.window - self.shift)
            hi = (k + 1) * self.window - self.shift
            if self.length is not None:
                hi = min(hi, self.length)
                if hi <= lo:
                    return
            yield hi - lo
            k += 1

    def order(self, k: int, size: int) -> np.ndarray:
        """Returns the offsets inside window ``k`` of ``size`` records, in reading order."""
        return permute(np.arange(size), size, epoch_seed(self.seed, k), self.epoch)

    def pieces(self, position: int) -> Iterator[tuple[int, int | None]]:
        """Yields the file-row ranges ``[lo, hi)`` that tape ``[position, end)`` reads, in order."""
        j = int(np.searchsorted(self.ends, position, side="right"))
        for j in range(j, len(self.starts)):
            begin = self.ends[j - 1] if j else 0
            lo = int(self.starts[j] + max(0, position - begin))
            hi = None if self.length is None else int(self.starts[j] + self.ends[j] - begin)
            yield lo, hi


def tape(bounds: np.ndarray | None, lo: int, hi: int | None, window: int | None, seed: int, epoch: int) -> Tape:
    """Returns epoch ``epoch``'s tape over file rows ``[lo, hi)``.

    Arguments:
        bounds: the shard boundaries in file rows (increasing, from 0 to the end), or None
            when the backend knows none (one segment, read from ``lo``).
        lo, hi: the rows of the partition; ``hi`` None when the length is unknown.
        window: ``W`` (shuffled), or None (file order: one segment, no windows).
        seed, epoch: the partition's seed and its epoch.

    Returns:
        the tape; with ``window`` None it is the file order.
    """
    length = None if hi is None else hi - lo
    if bounds is None or length is None or window is None:
        starts = np.array([lo], np.int64)
        ends = np.array([np.iinfo(np.int64).max if length is None else length], np.int64)
    else:
        cuts = np.union1d(np.clip(np.asarray(bounds, np.int64), lo, hi), [lo, hi])
        lengths = np.diff(cuts)
        m = len(lengths)
        visit = permute(np.arange(m), m, (seed ^ SEGMENT_SALT) % 2**32, epoch) if m > 1 else np.zeros(1, np.int64)
        starts, ends = cuts[:-1][visit], np.cumsum(lengths[visit])
    shift = 0
    if window is not None and length is not None and length > window:
        shift = epoch_seed((seed ^ SHIFT_SALT) % 2**32, epoch) % window
    return Tape(starts, ends, length, window, shift, seed, epoch)


__all__ = ["Tape", "tape"]
