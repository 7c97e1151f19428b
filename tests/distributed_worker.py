"""One process of a ``jax.distributed`` test group (launched by ``process_group.run_group``).

Argument: a JSON spec with ``process_id``, ``processes``, ``port``, ``devices`` (CPU devices
of this process), ``source`` (``"range"``), ``records``, ``partitions``, ``seed``, ``size``,
``steps``, an optional ``cursor`` to restore and ``try_one_partition`` (also try an
unpartitioned stream and report the error). The process builds the source, restores
the cursor, takes ``steps`` global batches and prints one JSON line: the rows of ``x`` its
devices hold per step, the cursor afterwards, and the record ids its backend yielded.
"""

import json
import os
import sys

spec = json.loads(sys.argv[1])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={spec['devices']}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

if spec["processes"] > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{spec['port']}", num_processes=spec["processes"],
                               process_id=spec["process_id"], initialization_timeout=60)

import numpy as np  # noqa: E402

import datarax_fn as dfn  # noqa: E402
from conftest import RangeBackend  # noqa: E402


class LoggedRange(RangeBackend):
    """A RangeBackend that remembers every record id it yields (what this process read)."""

    read: list[int] = []

    def _records(self, offset, length, epoch, seed, start):
        for chunk in super()._records(offset, length, epoch, seed, start):
            self.read.extend(chunk["x"].tolist())
            yield chunk


def build(spec):
    if spec["source"] == "range":
        backend = LoggedRange(spec["records"], 3)
        return dfn.from_backend(backend, shuffle=True, seed=spec["seed"], partitions=spec["partitions"]), backend
    raise ValueError(f"unknown source {spec['source']!r}")


state, backend = build(spec)
if spec.get("cursor"):
    state = dfn.restore_cursor(state, spec["cursor"])
sharding = dfn.data_sharding()
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
state.close()
refused = None
if spec.get("try_one_partition"):  # one partition across processes is refused with the fix
    whole = dfn.from_backend(RangeBackend(spec["records"], 3), shuffle=True, seed=spec["seed"])
    try:
        dfn.get_global_batch(whole, spec["size"], sharding)
    except ValueError as err:
        refused = str(err)
print(json.dumps({"rows": rows, "cursor": cursor, "read": sorted(set(backend.read)), "refused": refused}))
