"""One process of a ``jax.distributed`` test group (launched by ``process_group.run_group``).

Argument: a JSON spec with ``process_id``, ``processes``, ``port``, ``devices`` (CPU devices
of this process), ``sources`` (names: ``"range"``, a partitioned stream over a RangeBackend;
``"eager"``, the sharded eager mode; ``"global"``, the global eager mode; ``"mix"``, a mixture
of a global eager source and a stream; ``"hf"``, ``from_hf`` streaming the parquet file
``parquet`` with ``HF_HOME`` ``hf_home``; ``"hf_filtered"``, the same with ``filter=keep_x``, whose
partitions each keep their own position), ``records``, ``partitions``, ``seed``, ``size``,
``steps``, optional ``cursors`` (one per source) to restore and ``try_one_partition`` (also
try an unpartitioned stream and report the error); ``fail_process`` names a process that exits
at once (to test the launcher). Sources share one process so the
group's start-up (JAX import, ``jax.distributed``) is paid once. For each source the process builds it,
restores its cursor, takes ``steps`` global batches; it prints one JSON line with, per
source, the rows of ``x`` its devices hold per step, the cursor afterwards, and the record
ids it read (yielded by its backend, or loaded).

A spec with ``script`` (the code of a guide's per-process script, which starts
``jax.distributed`` itself) runs that instead, in the folder ``cwd``, as
``script PROCESS_ID NUM_PROCESSES STEPS`` with ``COORDINATOR`` set; its JSON line holds, per
``dfn.get_global_batch`` call, each field's rows that this process's devices hold, and the
canonical partitions it opened to pack or mix a partitioned stream.
"""

import json
import os
import sys
from typing import ClassVar

spec = json.loads(sys.argv[1])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={spec['devices']}"
os.environ["JAX_PLATFORMS"] = "cpu"

if spec.get("fail_process") == spec["process_id"]:  # tests the launcher: a worker that dies before its peers
    sys.exit("failing as asked")


def run_script(spec):
    """Runs a guide's per-process script, noting the rows of every global batch it takes; prints them."""
    import numpy as np

    import datarax_fn as dfn

    os.environ["COORDINATOR"] = f"127.0.0.1:{spec['port']}"
    os.chdir(spec["cwd"])
    sys.argv = ["script", str(spec["process_id"]), str(spec["processes"]), str(spec["steps"])]
    real, steps = dfn.get_global_batch, []

    def noted(state, size, sharding):
        state, batch = real(state, size, sharding)
        steps.append({key: sorted(((shard.index[0].start or 0) + i, row)
                                  for shard in leaf.addressable_shards
                                  for i, row in enumerate(np.asarray(shard.data).tolist()))
                      for key, leaf in batch.items()})
        return state, batch

    dfn.get_global_batch = noted  # the script calls it as dfn.get_global_batch
    # The canonical partitions this process opens when it packs or mixes a partitioned stream.
    from datarax_fn._compose.partitioned import _Partition

    opened, real_open, real_deferred = set(), _Partition.open, _Partition._open_deferred

    def logged_open(self, *args):
        opened.add(self.partition)
        return real_open(self, *args)

    def logged_deferred(self, *args):
        opened.add(self.partition)
        return real_deferred(self, *args)

    _Partition.open, _Partition._open_deferred = logged_open, logged_deferred
    # The script is a docs page's code, run as its reader runs it: as the main module.
    exec(compile(spec["script"], "script", "exec"), {"__name__": "__main__"})  # noqa: S102
    print(json.dumps({"steps": steps, "opened": sorted(opened)}))


if "script" in spec:
    run_script(spec)
    sys.exit(0)

import jax

if spec["processes"] > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{spec['port']}", num_processes=spec["processes"],
                               process_id=spec["process_id"], initialization_timeout=60)

import numpy as np
from conftest import RangeBackend, keep_x

import datarax_fn as dfn


class LoggedRange(RangeBackend):
    """A RangeBackend that remembers every record id it yields (what this process read)."""

    read: ClassVar[list[int]] = []

    def _records(self, offset, length, epoch, seed, start):
        for chunk in super()._records(offset, length, epoch, seed, start):
            self.read.extend(chunk["x"].tolist())
            yield chunk


def build(name, spec):
    """Returns ``(state, read)``: the source ``name`` and a function giving the record ids this process read."""
    n, c, seed = spec["records"], spec["partitions"], spec["seed"]
    if name == "range":  # a partitioned stream: each process opens only its partitions
        backend = LoggedRange(n, 3)
        return dfn.from_backend(backend, shuffle=True, seed=seed, partitions=c), lambda: backend.read
    if name == "eager":  # the sharded eager mode: each process loads only its partitions' records
        records = dfn.local_records(n, c)
        x = np.arange(n, dtype=np.int32)[records.start : records.stop]
        state = dfn.from_local_partitions({"x": x, "y": {"z": (2 * x).astype(np.float32)}}, num_records=n,
                                          partitions=c, fingerprint=f"arange-{n}", shuffle=True, seed=seed)
        return state, lambda: list(records)
    if name == "global":  # the global eager mode: every process holds every record
        x = np.arange(n, dtype=np.int32)
        state = dfn.from_arrays({"x": x, "y": {"z": (2 * x).astype(np.float32)}}, partitions=c, shuffle=True,
                                seed=seed)
        return state, lambda: list(range(n))
    if name in ("hf", "hf_filtered"):  # a real loader: HF's parquet reader, seeking by row groups per partition
        os.environ["HF_HOME"] = spec["hf_home"]
        state = dfn.from_hf("parquet", data_files=spec["parquet"], split="train", streaming=True, shuffle=True,
                            seed=seed, partitions=c, shuffle_buffer_size=4,
                            **({"filter": keep_x} if name == "hf_filtered" else {}))
        backend, read = state.backend.backend, []
        real = backend.open_deferred

        def logged(*args):  # passes every chunk of the real reader through, noting its ids when prepared
            for job in real(*args):
                def noted(work=job.work):
                    chunk = work()
                    read.extend(chunk["x"].tolist())
                    return chunk

                yield type(job)(job.rows, noted, job.where)

        backend.open_deferred = logged
        return state, lambda: read
    if name == "mix":  # a 2:1 mixture of a global eager source (ids 100..) and a stream: every process reads it all
        x = 100 + np.arange(n, dtype=np.int32)
        eager = dfn.from_arrays({"x": x, "y": {"z": (2 * x).astype(np.float32)}}, shuffle=True, seed=seed)
        state = dfn.mix([eager, dfn.from_backend(RangeBackend(n, 3), shuffle=True, seed=seed)], [2, 1], seed=seed,
                        window=6)
        return state, list
    raise ValueError(f"unknown source {name!r}")


def run(name, spec, sharding):
    """Returns what one source gave this process: its rows per step, the cursor after, the ids read."""
    state, read = build(name, spec)
    if spec.get("cursors"):
        state = dfn.restore_cursor(state, spec["cursors"][name])
    rows = []
    for _ in range(spec["steps"]):
        state, batch = dfn.get_global_batch(state, spec["size"], sharding)
        assert batch["x"].shape == (spec["size"],) and batch["x"].sharding == sharding
        local = {}
        z = {s.device: np.asarray(s.data) for s in batch["y"]["z"].addressable_shards}
        for shard in batch["x"].addressable_shards:
            start = shard.index[0].start or 0
            np.testing.assert_array_equal(z[shard.device], 2 * np.asarray(shard.data))
            local.update({start + i: v for i, v in enumerate(np.asarray(shard.data).tolist())})
        rows.append(sorted(local.items()))
    cursor = dfn.cursor(state)
    if hasattr(state, "close"):
        state.close()
    return {"rows": rows, "cursor": cursor, "read": sorted(set(read()))}


sharding = dfn.data_sharding()
out = {name: run(name, spec, sharding) for name in spec["sources"]}
if spec.get("try_one_partition"):  # one partition across processes is refused with the fix
    whole = dfn.from_backend(RangeBackend(spec["records"], 3), shuffle=True, seed=spec["seed"])
    try:
        dfn.get_global_batch(whole, spec["size"], sharding)
    except ValueError as err:
        out["refused"] = str(err)
print(json.dumps(out))
