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
"""

import json
import os
import sys

spec = json.loads(sys.argv[1])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={spec['devices']}"
os.environ["JAX_PLATFORMS"] = "cpu"

if spec.get("fail_process") == spec["process_id"]:  # tests the launcher: a worker that dies before its peers
    sys.exit("failing as asked")

import jax  # noqa: E402

if spec["processes"] > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{spec['port']}", num_processes=spec["processes"],
                               process_id=spec["process_id"], initialization_timeout=60)

import numpy as np  # noqa: E402

import datarax_fn as dfn  # noqa: E402
from conftest import RangeBackend, keep_x  # noqa: E402


class LoggedRange(RangeBackend):
    """A RangeBackend that remembers every record id it yields (what this process read)."""

    read: list[int] = []

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
        return state, lambda: []
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
