"""The replay order (shards in a keyed order, windows permuted) on an in-memory replay backend.

The backend reads NumPy rows and logs what it reads, so the tests check the order against the
written-out definition (``replay_oracle``), resume from every position, partitions, and that a
resume never reads more than one window.
"""

from __future__ import annotations

import datasets as hd
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn import _convert as cv
from datarax_fn._loaders import backends as bk
from datarax_fn._loaders.replay_order import tape
from datarax_fn._layout.partitions import partition_offsets, partition_seed
from datarax_fn._state.shuffle import epoch_seed
from replay_oracle import replay_order

READ_CHUNK = 7


class Rows:
    """An in-memory file of ``n`` rows (``x[i] == i``) that logs every row it reads."""

    def __init__(self, n: int):
        self.n, self.log = n, []

    def read_range(self, lo, hi):
        hi = self.n if hi is None else hi
        for a in range(lo, hi, READ_CHUNK):
            rows = np.arange(a, min(a + READ_CHUNK, hi))
            self.log += rows.tolist()
            yield {"x": rows}


def make(n, bounds, window, *, shuffle=True, chunk=5, known=True):
    cfg = dfn.HFStreamingConfig(name="mem", shuffle=shuffle, shuffle_buffer_size=window, chunk_size=chunk)
    fields, opts = bk.select(cv.fields_from_hf(hd.Features({"x": hd.Value("int64")})), cfg)
    rows = Rows(n)
    conv = bk.converter(fields, opts, {"x": np.arange(min(n, chunk))}, static=True)
    backend = bk.ReplayBackend(bk.range_by_range(rows.read_range), n if known else None, conv, shard_bounds=bounds, data="mem",
                               split="train", info=None, cfg=cfg)
    return backend, rows


def ids(chunks) -> list[int]:
    return [int(v) for c in chunks for v in c["x"]]


@st.composite
def layouts(draw):
    n = draw(st.integers(1, 120))
    cuts = draw(st.lists(st.integers(1, max(1, n - 1)), max_size=6)) if n > 1 else []
    bounds = np.array(sorted({0, n, *cuts}))
    parts = draw(st.integers(1, min(4, n)))
    return n, bounds, draw(st.integers(1, 40)), parts, draw(st.integers(0, parts - 1))


@settings(max_examples=40)
@given(layout=layouts(), seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 3))
def test_partition_epochs_follow_the_definition(layout, seed, epoch):
    n, bounds, window, parts, c = layout
    backend, _ = make(n, bounds, window)
    off = partition_offsets(n, parts)
    s = partition_seed(seed, c, parts)
    got = ids(backend.open_partition(c, parts, epoch, s, 0))
    assert got == replay_order(bounds, int(off[c]), int(off[c + 1]), window, s, epoch)
    union = sorted(r for p in range(parts) for r in ids(backend.open_partition(p, parts, epoch, seed, 0)))
    assert union == list(range(n))


@settings(max_examples=30)
@given(layout=layouts(), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_resume_equals_the_uninterrupted_partition_and_reads_one_window(layout, seed, data):
    n, bounds, window, parts, c = layout
    backend, rows = make(n, bounds, window)
    full = ids(backend.open_partition(c, parts, 1, seed, 0))
    start = data.draw(st.integers(0, len(full) - 1))
    rows.log.clear()
    it = backend.open_partition(c, parts, 1, seed, start)
    first = next(it)
    # Nothing before the resumed window is read: one window, plus the tail of the last read chunk.
    assert len(rows.log) <= window + READ_CHUNK - 1
    assert [int(v) for v in first["x"]] + ids(it) == full[start:]


@settings(max_examples=20)
@given(n=st.integers(1, 90), window=st.integers(1, 30), seed=st.integers(0, 2**32 - 1), start=st.integers(0, 89))
def test_unknown_length_keeps_fixed_windows_and_unshuffled_is_file_order(n, window, seed, start):
    backend, _ = make(n, None, window, known=False)
    want = []
    for k, lo in enumerate(range(0, n, window)):
        w = min(window, n - lo)
        want += (lo + dfn.permute(np.arange(w), w, epoch_seed(seed, k), 2)).tolist()
    assert ids(backend.open(2, seed, 0)) == want
    assert ids(backend.open(2, seed, start % n)) == want[start % n :]
    plain, rows = make(n, np.array([0, n // 2, n]), window, shuffle=False)
    assert ids(plain.open_partition(0, 1, 0, seed, start % n)) == list(range(start % n, n))
    assert rows.log == list(range(start % n, n))


def test_window_cuts_move_every_epoch():
    # One shard of 100 rows, W = 10: rows split by a cut in one epoch share a window in others.
    backend, _ = make(100, np.array([0, 100]), 10)
    cuts = []
    for e in range(6):
        stream, t = ids(backend.open(e, 5, 0)), tape(np.array([0, 100]), 0, 100, 10, 5, e)
        sizes, at = list(t.window_sizes(0)), 0
        for w in sizes:  # every window holds consecutive rows: a window, permuted
            assert sorted(stream[at : at + w]) == list(range(at, at + w))
            at += w
        assert at == 100 and max(sizes) == 10
        cuts.append(sizes[0])
    assert len(set(cuts)) > 2
