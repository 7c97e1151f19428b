"""Records/s per process of one partitioned stream read by 1, 2 and 4 ``jax.distributed`` processes.

Run: ``python benchmarks/hosts.py [--quick] [--json PATH]``.

Every process runs on localhost CPU (gloo collectives) and calls
``dfn.get_global_batch(state, B, dfn.data_sharding())`` on the same ``StreamingSource``
(``partitions=8``, shuffled) over an in-memory backend that builds each record (an int32 id
and 64 float32 features) with NumPy; with ``P`` processes each one reads only its ``8 / P``
partitions. A row's figure is the records each process contributes per second (``B / P``
per step), timed over blocks of steps after a warm-up; median, min and max are over every
process and block.

On a machine with fewer cores than processes (the 2 shared cores of the CI machine for 4
processes) the processes take turns on the cores: the per-process figure then falls
roughly as ``cores / P`` even though each process reads only its share, and the aggregate
(per-process rate times ``P``) stays near the one-process figure. On one core per process
the per-process figure stays flat and the aggregate grows with ``P``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from _harness import parse_args, row, save

PARTITIONS, FEATURES = 8, 64


def worker(spec: dict) -> None:
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if spec["processes"] > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{spec['port']}", num_processes=spec["processes"],
                                   process_id=spec["process_id"], initialization_timeout=60)
    import numpy as np

    import datarax_fn as dfn

    class Synthetic:
        """Records ``0 .. n-1``: an id and 64 features derived from it, in chunks of 256."""

        def __init__(self, n):
            self.n = n

        def open_partition(self, partition, partitions, epoch, seed, start):
            lo, hi = partition * self.n // partitions, (partition + 1) * self.n // partitions
            order = dfn.permute(np.arange(hi - lo), hi - lo, seed, epoch)
            for i in range(start, hi - lo, 256):
                ids = lo + order[i : i + 256]
                feat = (ids[:, None] * np.arange(1, FEATURES + 1)).astype(np.float32)
                yield {"id": ids.astype(np.int32), "feat": feat}

        def open(self, epoch, seed, start):
            return self.open_partition(0, 1, epoch, seed, start)

        def num_records(self):
            return self.n

        def element_spec(self):
            return {"id": jax.ShapeDtypeStruct((), np.int32),
                    "feat": jax.ShapeDtypeStruct((FEATURES,), np.float32)}

        def fingerprint(self):
            return f"synthetic-{self.n}"

    state = dfn.from_backend(Synthetic(spec["records"]), shuffle=True, seed=0, partitions=PARTITIONS)
    sharding, size, per = dfn.data_sharding(), spec["size"], spec["size"] // spec["processes"]
    for _ in range(spec["warmup"]):
        state, batch = dfn.get_global_batch(state, size, sharding)
    rates = []
    for _ in range(spec["blocks"]):
        t = time.perf_counter()
        for _ in range(spec["steps"]):
            state, batch = dfn.get_global_batch(state, size, sharding)
        jax.block_until_ready(batch)
        rates.append(spec["steps"] * per / (time.perf_counter() - t))
    state.close()
    print(json.dumps({"rates": rates}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, spec: dict, timeout: float) -> list[float]:
    """Returns every block's records/s of every process of one group; kills the group on failure."""
    port, procs = free_port(), []
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    try:
        for pid in range(processes):
            arg = json.dumps({**spec, "process_id": pid, "processes": processes, "port": port})
            procs.append(subprocess.Popen([sys.executable, __file__, "--worker", arg], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env, start_new_session=True))
        deadline, rates = time.monotonic() + timeout, []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode:
                raise RuntimeError(f"a worker of {processes} exited {p.returncode}:\n{err[-2000:]}")
            rates += json.loads(out.strip().splitlines()[-1])["rates"]
        return rates
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def main() -> None:
    args = parse_args(__doc__, worker="")
    if args.worker:
        return worker(json.loads(args.worker))
    spec = ({"records": 20_000, "size": 256, "warmup": 3, "steps": 10, "blocks": 3} if args.quick else
            {"records": 1_000_000, "size": 1024, "warmup": 10, "steps": 50, "blocks": 5})
    note = f"partitions={PARTITIONS}, B={spec['size']}, {os.cpu_count()} cores shared by the processes"
    rows = []
    for processes in (1, 2, 4):
        rates = run(processes, spec, timeout=120 if args.quick else 300)
        rows.append(row("hosts", f"{processes} process" + "es" * (processes > 1), "datarax_fn",
                        "records/s per process", rates, note))
    print(f"| processes | records/s per process (median) | min | max | aggregate | {note}")
    print("|---|---:|---:|---:|---:|")
    for r, p in zip(rows, (1, 2, 4)):
        print(f"| {p} | {r['median']:,.0f} | {r['min']:,.0f} | {r['max']:,.0f} | {r['median'] * p:,.0f} |")
    save(rows, args)


if __name__ == "__main__":
    main()
