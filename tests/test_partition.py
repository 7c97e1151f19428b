"""Canonical partitions: boundaries, seeds, positions, batch sizes and the rows a process owns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from datarax_fn._layout.partitions import (
    check_batch_size,
    check_partitions,
    owned_partitions,
    partition_offsets,
    partition_position,
    partition_seed,
)
from datarax_fn._state.shuffle import epoch_seed

SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def records_and_partitions(draw, max_records=10**6):
    n = draw(st.integers(1, max_records))
    return n, draw(st.integers(1, min(n, 512)))


@given(records_and_partitions())
def test_offsets_cover_the_records_contiguously_with_balanced_lengths(nc):
    n, c = nc
    off = partition_offsets(n, c)
    assert off.shape == (c + 1,) and off[0] == 0 and off[-1] == n
    lengths = np.diff(off)
    assert lengths.min() >= 1 and lengths.max() - lengths.min() <= 1 and lengths.sum() == n
    assert set(lengths.tolist()) <= {n // c, -(-n // c)}
    # The boundaries are the documented formula, so any reader computes the same ranges.
    assert off.tolist() == [k * n // c for k in range(c + 1)]


def test_offsets_exact_values():
    assert partition_offsets(26, 4).tolist() == [0, 6, 13, 19, 26]
    assert partition_offsets(10, 1).tolist() == [0, 10]
    assert partition_offsets(3, 3).tolist() == [0, 1, 2, 3]


@given(SEEDS)
def test_one_partition_keeps_the_seed(seed):
    assert partition_seed(seed, 0, 1) == seed
    assert partition_seed(np.uint32(seed), np.int64(0), 1) == seed


@given(SEEDS, st.integers(2, 300))
def test_partition_seeds_are_distinct_uint32_and_differ_from_window_seeds(seed, c):
    seeds = [partition_seed(seed, k, c) for k in range(c)]
    assert len(set(seeds)) == c and all(0 <= s < 2**32 for s in seeds)
    # A backend seeds its windows with epoch_seed(seed, window); the salt keeps partition seeds apart.
    assert seeds != [epoch_seed(seed, k) for k in range(c)]


def test_partition_seed_exact_values():
    # Pinned: a change here silently changes every partitioned stream (and breaks saved cursors).
    assert partition_seed(0, 0, 2) == epoch_seed(0x5BD1E995, 0)
    assert partition_seed(7, 3, 4) == epoch_seed(7 ^ 0x5BD1E995, 3)


@given(records_and_partitions(10**4), st.integers(0, 10**6))
def test_positions_walk_each_partition_epoch_by_epoch(nc, steps):
    n, c = nc
    lengths = np.diff(partition_offsets(n, c))
    total = steps * c
    for length in {int(x) for x in lengths}:
        e, p = partition_position(total, c, length)
        assert 0 <= p < length and e * length + p == steps
    # One more global step of C records moves every partition on by exactly one record.
    for length in lengths.tolist():
        e0, p0 = partition_position(total, c, length)
        e1, p1 = partition_position(total + c, c, length)
        assert (e1, p1) == ((e0, p0 + 1) if p0 + 1 < length else (e0 + 1, 0))


def test_positions_drift_when_records_are_not_a_multiple_of_partitions():
    # 26 records in 4 partitions of 6, 7, 6, 7: after 24 global records (6 each) the short
    # partitions start their next epoch while the long ones still have one record left.
    lengths = np.diff(partition_offsets(26, 4)).tolist()
    assert [partition_position(24, 4, length) for length in lengths] == [(1, 0), (0, 6), (1, 0), (0, 6)]


@given(st.integers(1, 10**6), st.integers(1, 512))
def test_batch_size_error_names_sizes_that_work(size, c):
    if size % c == 0:
        assert check_batch_size(size, c, "t") == size // c
        return
    with pytest.raises(ValueError, match=f"size={size} is not a multiple of partitions={c}") as err:
        check_batch_size(size, c, "t")
    lo, hi = map(int, err.value.args[0].rsplit("Use size=", 1)[1].rstrip(".").split(" or "))
    assert check_batch_size(lo, c, "t") == lo // c and check_batch_size(hi, c, "t") == hi // c
    assert lo < size < hi or (size < c and lo == c)


@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 4))
def test_processes_own_disjoint_partitions_that_cover_all(procs, mult, per):
    # With partitions a multiple of the process count, every process's rows fall on partition
    # boundaries: each partition is read by exactly one process.
    c = procs * mult
    size = c * per
    rows = size // procs
    owned = [owned_partitions(p * rows, (p + 1) * rows, size, c, "t") for p in range(procs)]
    assert [list(r) for r in owned] == [list(range(p * mult, (p + 1) * mult)) for p in range(procs)]


@given(st.integers(2, 8), st.integers(1, 16), st.integers(1, 4))
def test_owned_partitions_error_names_a_fix_that_works(procs, c, per):
    size = c * per * procs  # a batch every process can split evenly
    rows = size // procs
    bounds = [(p * rows, (p + 1) * rows) for p in range(procs)]
    if c % procs == 0:
        assert sorted(k for b in bounds for k in owned_partitions(*b, size, c, "t")) == list(range(c))
        return
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        for b in bounds:
            owned_partitions(*b, size, c, "t")
    fixed = c * procs  # the fix: partitions a multiple of the process count (the batch stays a multiple)
    assert sorted(k for b in bounds for k in owned_partitions(*b, size, fixed, "t")) == list(range(fixed))


def test_owned_partitions_checks_the_batch_size_first():
    with pytest.raises(ValueError, match="size=6 is not a multiple of partitions=4"):
        owned_partitions(0, 3, 6, 4, "t")


def test_check_partitions_types_values_and_fixes():
    assert check_partitions(np.int64(3), 10, "t") == 3 and type(check_partitions(np.int64(3), 10, "t")) is int
    assert check_partitions(1, None, "t") == 1
    with pytest.raises(TypeError, match="partitions must be an int"):
        check_partitions(True, 10, "t")
    with pytest.raises(TypeError, match="partitions must be an int"):
        check_partitions(2.0, 10, "t")
    with pytest.raises(ValueError, match="partitions=0"):
        check_partitions(0, 10, "t")
    with pytest.raises(ValueError, match="use partitions=1"):
        check_partitions(2, None, "t")
    with pytest.raises(ValueError, match="use partitions <= 10") as err:
        check_partitions(11, 10, "t")
    assert err.value.args[0].startswith("t: partitions=11")
    assert check_partitions(10, 10, "t") == 10
