"""Launching real ``jax.distributed`` process groups on localhost CPU (gloo) for tests.

``run_group(spec, processes)`` starts ``processes`` copies of ``tests/distributed_worker.py``
at once, each with its process id and a shared coordinator port, waits for all of them
under one deadline and returns the JSON each printed last. On any failure or timeout every
child of the group is killed (each runs in its own session, so its threads and any
grandchildren go too) before the test fails: no process outlives the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
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


def run_group(spec: dict, processes: int, *, timeout: float = 120) -> list[dict]:
    """Returns the JSON results of ``processes`` workers run together on ``spec``, ordered by process id.

    ``spec`` is handed to every worker (see ``distributed_worker.py``); a worker that exits
    non-zero or prints no JSON fails the test with the end of its stderr.
    """
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, env.get("PYTHONPATH")]))
    port = free_port()
    procs: list[subprocess.Popen] = []
    try:
        for pid in range(processes):
            arg = json.dumps({**spec, "process_id": pid, "processes": processes, "port": port})
            procs.append(subprocess.Popen([sys.executable, WORKER, arg], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env, start_new_session=True))
        deadline = time.monotonic() + timeout
        results = []
        for pid, p in enumerate(procs):
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode != 0:
                raise AssertionError(f"process {pid}/{processes} exited {p.returncode}:\n{err[-3000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        _kill(procs)
