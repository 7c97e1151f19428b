"""Real multi-process runs (jax.distributed, gloo on localhost CPU): one global stream for any process count.

Each group of processes runs ``distributed_worker.py`` at once (``process_group.run_group``:
bounded by a deadline, every child killed on failure). The expected batches come from one
process calling ``dfn.get_batch`` on the same source, here in the test process.
"""

from __future__ import annotations

import numpy as np

import datarax_fn as dfn
from conftest import RangeBackend
from datarax_fn._partition import partition_offsets
from process_group import run_group

RANGE = {"source": "range", "records": 32, "partitions": 4, "seed": 11, "size": 8}


def single_process(spec, steps):
    """Returns the ids of ``steps`` batches of ``spec["size"]`` read by one process with ``get_batch``."""
    state = dfn.from_backend(RangeBackend(spec["records"], 3), shuffle=True, seed=spec["seed"],
                             partitions=spec["partitions"])
    out = []
    for _ in range(steps):
        state, batch = dfn.get_batch(state, spec["size"])
        out.append(batch["x"].tolist())
    state.close()
    return out


def merged(results):
    """Returns the global batches stitched from every process's rows; fails if a row came from two processes."""
    steps = len(results[0]["rows"])
    batches = []
    for step in range(steps):
        rows = {}
        for r in results:
            local = dict(map(tuple, r["rows"][step]))
            assert not set(local) & set(rows), "a row was served by two processes"
            rows.update(local)
        batches.append([rows[i] for i in sorted(rows)])
    return batches


def owner_of(record, spec, processes):
    """Returns the process that owns ``record``'s partition when ``processes`` share the stream."""
    off = partition_offsets(spec["records"], spec["partitions"])
    part = int(np.searchsorted(off, record, side="right")) - 1
    return part * processes // spec["partitions"]


def test_elastic_restore_2_then_1_then_4_processes_continues_the_global_stream():
    want = single_process(RANGE, 9)
    # Two processes with two devices each read one whole epoch (4 batches of 8 = 32 records).
    two = run_group({**RANGE, "devices": 2, "steps": 4, "try_one_partition": True}, 2)
    assert merged(two) == want[:4]
    assert sorted(x for batch in merged(two) for x in batch) == list(range(32))  # each record once
    for pid, r in enumerate(two):
        # Every record a process read (including read-ahead) is in its own partitions.
        assert r["read"] and {owner_of(x, RANGE, 2) for x in r["read"]} == {pid}
        assert r["cursor"] == two[0]["cursor"]  # every process holds the same cursor
    assert "processes" not in str(two[0]["cursor"])
    # Without partitions every process would read everything: refused, naming the fix used above.
    assert "partitions= a multiple of the process count, e.g. partitions=2" in two[1]["refused"]
    # The JSON cursor saved by two processes continues in one process, then in four.
    one = run_group({**RANGE, "devices": 1, "steps": 2, "cursor": two[0]["cursor"]}, 1)
    assert merged(one) == want[4:6]
    four = run_group({**RANGE, "devices": 1, "steps": 3, "cursor": one[0]["cursor"]}, 4)
    assert merged(four) == want[6:9]
    for pid, r in enumerate(four):
        assert {owner_of(x, RANGE, 4) for x in r["read"]} == {pid}
        assert r["cursor"] == {**dfn.cursor(dfn.from_backend(RangeBackend(32, 3), shuffle=True, seed=11,
                                                              partitions=4)), "epoch": 2, "index": 8}

