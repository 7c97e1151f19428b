"""Real multi-process runs (jax.distributed, gloo on localhost CPU): one global stream for any process count.

Each group of processes runs ``distributed_worker.py`` at once (``process_group.run_group``:
bounded by a deadline, every child killed on failure). The expected batches come from one
process calling ``dfn.get_batch`` on the same source, here in the test process.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import datarax_fn as dfn
from conftest import RangeBackend, keep_x
from datarax_fn._layout.partitions import partition_offsets
from process_group import run_group

SPEC = {"sources": ["range", "eager", "global", "hf", "hf_filtered"], "records": 32, "partitions": 4, "seed": 11, "size": 8}


@pytest.fixture(scope="module")
def hf_spec(tmp_path_factory):
    """Returns SPEC with a parquet file of records 0..31 (row groups of 5) for the ``hf`` source."""
    folder = tmp_path_factory.mktemp("parquet")
    x = np.arange(SPEC["records"], dtype=np.int32)
    table = pa.table({"x": x, "y": pa.StructArray.from_arrays([pa.array((2 * x).astype(np.float32))], ["z"])})
    pq.write_table(table, folder / "data.parquet", row_group_size=5)
    return {**SPEC, "parquet": str(folder / "data.parquet"), "hf_home": str(folder / "hf")}


def hf_single_process(spec, steps, **options):
    """Returns the ids of ``steps`` batches of the ``hf`` source read by one process with ``get_batch``."""
    os.environ["HF_HOME"] = spec["hf_home"]
    state = dfn.from_hf("parquet", data_files=spec["parquet"], split="train", streaming=True, shuffle=True,
                        seed=spec["seed"], partitions=spec["partitions"], shuffle_buffer_size=4, **options)
    out = []
    for _ in range(steps):
        state, batch = dfn.get_batch(state, spec["size"])
        out.append(batch["x"].tolist())
    state.close()
    return out


def single_process(steps):
    """Returns the ids of ``steps`` batches read by one process with ``get_batch`` (streaming and eager agree)."""
    stream = dfn.from_backend(RangeBackend(SPEC["records"], 3), shuffle=True, seed=SPEC["seed"],
                              partitions=SPEC["partitions"])
    eager = dfn.from_arrays({"x": np.arange(SPEC["records"], dtype=np.int32)}, shuffle=True, seed=SPEC["seed"],
                            partitions=SPEC["partitions"])
    out = []
    for _ in range(steps):
        stream, batch = dfn.get_batch(stream, SPEC["size"])
        eager, same = dfn.get_batch(eager, SPEC["size"])
        assert batch["x"].tolist() == same["x"].tolist()
        out.append(batch["x"].tolist())
    stream.close()
    return out


def merged(results, source):
    """Returns the global batches stitched from every process's rows; fails if a row came from two processes."""
    batches = []
    for step in range(len(results[0][source]["rows"])):
        rows = {}
        for r in results:
            local = dict(map(tuple, r[source]["rows"][step]))
            assert not set(local) & set(rows), "a row was served by two processes"
            rows.update(local)
        batches.append([rows[i] for i in sorted(rows)])
    return batches


def owner_of(record, processes):
    """Returns the process that owns ``record``'s partition when ``processes`` share the stream."""
    off = partition_offsets(SPEC["records"], SPEC["partitions"])
    part = int(np.searchsorted(off, record, side="right")) - 1
    return part * processes // SPEC["partitions"]


def check_group(results, wants, processes):
    """Checks one group's global batches, cursors and reads for every source; returns its cursors."""
    for source in SPEC["sources"]:
        assert merged(results, source) == wants.get(source, wants["range"]), source
        for pid, r in enumerate(results):
            # Every record a process read (read-ahead included) lies in its own partitions
            # (in the global mode every process holds every record, by definition).
            owners = {owner_of(x, processes) for x in r[source]["read"]}
            assert owners == (set(range(processes)) if source == "global" else {pid}), source
            assert r[source]["cursor"] == results[0][source]["cursor"]  # every process holds the same cursor
    return {source: results[0][source]["cursor"] for source in SPEC["sources"]}


def test_elastic_restore_2_then_1_then_4_processes_continues_the_global_stream(hf_spec, monkeypatch):
    # One group per process count, each running a partitioned stream over a test backend and
    # over HF's parquet reader, and the sharded and global eager modes.
    monkeypatch.setenv("HF_HOME", hf_spec["hf_home"])
    # hf_filtered: a filter keeps 6 of each partition's 8 records, so every partition has its own position.
    want = {"range": single_process(9), "hf": hf_single_process(hf_spec, 9),
            "hf_filtered": hf_single_process(hf_spec, 9, filter=keep_x)}
    # Two processes with two devices each read one whole epoch (4 batches of 8 = 32 records).
    two = run_group({**hf_spec, "devices": 2, "steps": 4, "try_one_partition": True}, 2)
    cursors = check_group(two, {k: v[:4] for k, v in want.items()}, 2)
    for source in SPEC["sources"]:
        first = [x for batch in merged(two, source) for x in batch][: 24 if source == "hf_filtered" else 32]
        kept = [x for x in range(32) if source != "hf_filtered" or keep_x({"x": x})]
        assert sorted(first) == kept  # each (kept) record once in the first epoch
    assert cursors["range"] == {"version": 1, "kind": "streaming", "index": 0, "epoch": 1, "seed": 11,
                                "shuffle": True, "fingerprint": "range:32:True:", "partitions": 4}
    assert "processes" not in str(cursors)
    # Without partitions every process would read everything: refused, naming the fix used here.
    assert "partitions= a multiple of the process count, e.g. partitions=2" in two[1]["refused"]
    # The JSON cursors saved by two processes continue in one process, then in four.
    assert cursors["hf_filtered"]["epoch"] == [1] * 4 and len(cursors["hf_filtered"]["offset"]) == 4
    one = run_group({**hf_spec, "devices": 1, "steps": 2, "cursors": cursors}, 1)
    cursors = check_group(one, {k: v[4:6] for k, v in want.items()}, 1)
    four = run_group({**hf_spec, "devices": 1, "steps": 3, "cursors": cursors}, 4)
    cursors = check_group(four, {k: v[6:9] for k, v in want.items()}, 4)
    assert (cursors["range"]["epoch"], cursors["range"]["index"]) == (2, 8)
    assert {(c["epoch"], c["index"]) for k, c in cursors.items() if k != "hf_filtered"} == {(2, 8)}


def test_a_failing_process_fails_the_group_and_no_worker_survives():
    # Process 1 dies before jax.distributed starts; process 0 would wait for it in initialize.
    started = []
    with pytest.raises(AssertionError, match=r"process 1/2 exited 1:\nfailing as asked"):
        run_group({**SPEC, "devices": 1, "steps": 1, "fail_process": 1}, 2, started=started)
    assert len(started) == 2
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
