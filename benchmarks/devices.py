"""Batches over 8 forced CPU devices against 1: in-scan throughput per placement, and get_global_batch.

Run: ``python benchmarks/devices.py [--quick] [--json PATH]``. Each device count runs in a
fresh process (``XLA_FLAGS=--xla_force_host_platform_device_count=D`` must be set before JAX
starts). Dataset: N x 28 x 28 uint8 images plus int32 labels (MNIST-shaped, N = 60,000;
6,000 with ``--quick``), batch 256, shuffled, 8 partitions where a placement uses them.

Rows:

- ``scan``: batches/s of ``get_batch`` inside ``jit(lax.scan)`` (state donated, each step
  sums every byte of its batch on the devices that hold it), for ``device`` on 1 device and
  ``replicated`` / ``partitioned`` on 8; ``uncommitted`` is what a single-device state did
  in a jit over 8 devices before placements existed: JAX silently copied the whole dataset
  to every device on every call.
- ``first``: the first such call (compile + run), ms.
- ``memory``: the dataset bytes held over all devices after the calls, MiB (``uncommitted``:
  the copies JAX made on every device).
- ``global``: ``get_global_batch`` per call on 8 devices, µs; ``device`` gathers the whole
  batch on device 0 and then splits it (its data lives there), the other placements gather
  each device's rows on that device.

The 8 forced devices share the machine's cores, so 8-device rows measure the overhead of
the layout, not a speed-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from _harness import parse_args, row, save

B = 256


def child(devices: int, quick: bool) -> list[dict]:
    """Runs in a process with ``devices`` forced CPU devices; returns its rows."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    import datarax_fn as dfn

    n, steps, repeats = (4_000, 10, 2) if quick else (60_000, 50, 5)
    rng = np.random.default_rng(0)
    data = {"image": rng.integers(0, 256, (n, 28, 28), np.uint8), "label": rng.integers(0, 10, n).astype(np.int32)}
    mesh = jax.make_mesh((devices,), ("data",))
    rows = []

    def consume(batch):
        return sum(jnp.sum(x, dtype=jnp.int32) for x in jax.tree.leaves(batch))

    def scan_case(case, state, constrain=None):
        def body(s, _):
            s, batch = dfn.get_batch(s, B)
            if constrain is not None:
                batch = constrain(batch)
            return s, consume(batch)

        run = dfn.jit_step(lambda s: jax.lax.scan(body, s, None, length=steps))
        t = time.perf_counter()
        state, out = run(state)
        jax.block_until_ready(out)
        rows.append(row("first", f"{case}, {devices} dev", "datarax_fn", "ms", [1e3 * (time.perf_counter() - t)]))
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            state, out = run(state)
            jax.block_until_ready(out)
            rates.append(steps / (time.perf_counter() - t))
        rows.append(row("scan", f"{case}, {devices} dev", "datarax_fn", "batches/s", rates))
        held = sum(s.data.nbytes for x in jax.tree.leaves(state.data) for s in x.addressable_shards)
        rows.append(row("memory", f"{case}, {devices} dev", "datarax_fn", "MiB", [held / 2**20], "dataset bytes on all devices"))

    if devices == 1:
        scan_case("device", dfn.from_arrays(data, shuffle=True, seed=0))
        return rows
    scan_case("replicated", dfn.from_arrays(data, partitions=8, placement="replicated", mesh=mesh, shuffle=True))
    scan_case("partitioned", dfn.from_arrays(data, partitions=8, placement="partitioned", mesh=mesh, shuffle=True))
    # The former default: uncommitted single-device arrays, which a jit over 8 devices copies to each.
    auto = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    state = dfn.from_arrays(data, shuffle=True, seed=0)
    zero = lambda dtype: jax.device_put(np.zeros((), dtype))  # noqa: E731 (uncommitted, like the arrays)
    uncommitted = dfn.EagerSource(data=jax.tree.map(jnp.asarray, data), index=zero(np.int32), epoch=zero(np.int32),
                                  seed=zero(np.uint32), num_records=n, shuffle=True, fingerprint=state.fingerprint)
    scan_case("uncommitted", uncommitted,
              lambda b: jax.lax.with_sharding_constraint(b, NamedSharding(auto, P("data"))))

    sharding = NamedSharding(mesh, P("data"))
    calls = 10 if quick else 200

    def per_call(case, state, fn):
        box = [state]

        def call():
            box[0], batch = fn(box[0])
            return batch

        jax.block_until_ready(call())
        samples = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(calls):
                out = call()
            jax.block_until_ready(out)
            samples.append(1e6 * (time.perf_counter() - t) / calls)
        rows.append(row("global", f"{case}, {devices} dev", "datarax_fn", "µs", samples))

    # "device" gathers the whole batch on device 0 and then splits it (staged); the others do not.
    per_call("device", dfn.from_arrays(data, shuffle=True, seed=0), lambda s: dfn.get_global_batch(s, B, sharding))
    for placement in ("replicated", "partitioned", "host"):
        state = dfn.from_arrays(data, partitions=8, placement=placement, mesh=mesh, shuffle=True)
        per_call(placement, state, lambda s: dfn.get_global_batch(s, B, sharding))
    return rows


def main() -> None:
    args = parse_args(__doc__, child=0)
    if args.child:
        print(json.dumps(child(args.child, args.quick)))
        return
    rows = []
    for devices in (1, 8):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, __file__, "--child", str(devices)] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    rows.sort(key=lambda r: (r["scenario"], r["case"]))
    print(f"{'scenario':8s} {'case':30s} {'median':>10s} {'min':>10s} {'max':>10s}  unit")
    for r in rows:
        print(f"{r['scenario']:8s} {r['case']:30s} {r['median']:10.4g} {r['min']:10.4g} {r['max']:10.4g}  {r['unit']}")
    save(rows, args)


if __name__ == "__main__":
    main()
