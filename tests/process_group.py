"""Launching real ``jax.distributed`` process groups on localhost CPU (gloo) for tests.

``run_group(spec, processes)`` starts ``processes`` copies of ``tests/distributed_worker.py``
at once, each with its process id and a shared coordinator port, waits for all of them
under one deadline and returns the JSON each printed last. As soon as one fails, or at the
deadline, every child of the group is killed (each runs in its own session, so any
grandchildren go too) before the test fails: no process outlives the test, and none is
left waiting for a peer that died.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

TESTS = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(TESTS, "distributed_worker.py")


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        p.wait()


def run_group(spec: dict, processes: int, *, timeout: float = 120, started: list | None = None) -> list[dict]:
    """Returns the JSON results of ``processes`` workers run together on ``spec``, ordered by process id.

    ``spec`` is handed to every worker (see ``distributed_worker.py``); the first worker to
    exit non-zero (or the deadline) fails the test with the end of its stderr, and the
    others are killed at once rather than left waiting for their peer. ``started``, if
    given, receives the workers' process ids.
    """
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, env.get("PYTHONPATH")]))
    port = free_port()
    procs: list[subprocess.Popen] = []
    # Files, not pipes: nothing blocks on a full pipe while we poll every worker.
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for pid in range(processes):
                arg = json.dumps({**spec, "process_id": pid, "processes": processes, "port": port})
                with open(f"{tmp}/{pid}.out", "w") as out, open(f"{tmp}/{pid}.err", "w") as err:
                    procs.append(subprocess.Popen([sys.executable, WORKER, arg], stdout=out, stderr=err, env=env,
                                                  start_new_session=True))
                if started is not None:
                    started.append(procs[-1].pid)
            deadline = time.monotonic() + timeout
            while any(p.poll() is None for p in procs):
                failed = [i for i, p in enumerate(procs) if p.poll()]
                if failed or time.monotonic() > deadline:
                    pid = failed[0] if failed else next(i for i, p in enumerate(procs) if p.poll() is None)
                    _kill(procs)
                    with open(f"{tmp}/{pid}.err") as err:
                        why = f"exited {procs[pid].returncode}" if failed else f"passed the {timeout} s deadline"
                        raise AssertionError(f"process {pid}/{processes} {why}:\n{err.read()[-3000:]}")
                time.sleep(0.05)
            results = []
            for pid, p in enumerate(procs):
                with open(f"{tmp}/{pid}.out") as out, open(f"{tmp}/{pid}.err") as err:
                    text = out.read()
                    if p.returncode != 0:
                        raise AssertionError(f"process {pid}/{processes} exited {p.returncode}:\n{err.read()[-3000:]}")
                results.append(json.loads(text.strip().splitlines()[-1]))
            return results
        finally:
            _kill(procs)
