"""Suite-wide settings (offline hubs, CPU-only JAX, a bounded hypothesis profile) and shared helpers.

Helpers for every test module:

- ``run_fresh(code, ...)`` / ``run_fresh_many(code, count, ...)``: run Python in fresh
  processes (bounded time, output captured), e.g. to check exact resume or a clean exit;
- ``no_network``: a fixture that fails the test on any connect or DNS lookup;
- ``live_threads(prefix)`` / ``wait_threads_gone(prefix, exclude)``: the background
  threads of a name, and a bounded wait for them to end;
- ``take(state, sizes)`` / ``take_n(state, k, size)``: read batches from any source
  state and return the last state with the batches' leaves concatenated (or stacked);
- ``RangeBackend``: a small ``dfn.StreamingBackend`` over records ``0 .. n-1``.
"""

import gc
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile("dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- fresh processes


def run_fresh(code: str, *, env: dict | None = None, timeout: float = 300, cwd: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
    """Returns the finished ``python -c code`` run in a fresh interpreter (stdout/stderr as text).

    ``code`` is dedented; ``env`` adds to the current environment; with ``check`` a
    non-zero exit fails the test and shows the end of stderr.
    """
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(ROOT, "tests"), full_env.get("PYTHONPATH")]))
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, env=full_env, cwd=cwd or ROOT)
    if check:
        assert res.returncode == 0, f"exit {res.returncode}\n{res.stderr[-3000:]}"
    return res


def run_fresh_many(code: str, count: int, *, parallel: int = 2, **kwargs) -> list[subprocess.CompletedProcess]:
    """Returns ``count`` results of ``run_fresh(code, check=False, ...)``, ``parallel`` at a time."""
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda _: run_fresh(code, check=False, **kwargs), range(count)))


# ----------------------------------------------------------------------------- network


@pytest.fixture
def no_network(monkeypatch):
    """Fails the test on any network attempt (connect or DNS lookup); yields the attempts."""
    attempts: list = []

    def connect(self, addr, *a, **k):
        attempts.append(addr)
        raise AssertionError(f"network connect attempted: {addr}")

    def getaddrinfo(host, *a, **k):
        attempts.append(host)
        raise AssertionError(f"DNS lookup attempted: {host}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", lambda addr, *a, **k: connect(None, addr))
    yield attempts
    assert attempts == [], f"network attempts: {attempts}"


# ----------------------------------------------------------------------------- threads


def live_threads(prefix: str = "datarax_fn-prefetch", exclude=()) -> list[threading.Thread]:
    """Returns the live threads whose name starts with ``prefix``, minus ``exclude``."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive() and t not in exclude]


def wait_threads_gone(prefix: str = "datarax_fn-prefetch", exclude=(), timeout: float = 5.0) -> list[threading.Thread]:
    """Returns the threads of ``live_threads`` still alive after waiting up to ``timeout`` (collecting garbage)."""
    end = time.monotonic() + timeout
    while live_threads(prefix, exclude) and time.monotonic() < end:
        gc.collect()
        time.sleep(0.01)
    return live_threads(prefix, exclude)


# ----------------------------------------------------------------------------- stream collectors


def take(state, sizes):
    """Returns ``(state, batch)``: ``get_batch`` for each size, leaves concatenated as NumPy."""
    import datarax_fn as dfn

    parts = []
    for size in sizes:
        state, batch = dfn.get_batch(state, size)
        parts.append(jax.device_get(batch))
    return state, jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def take_n(state, k, size):
    """Returns ``(state, batches)``: ``k`` batches of ``size``, leaves stacked as NumPy ``(k, size, ...)``."""
    import datarax_fn as dfn

    parts = []
    for _ in range(k):
        state, batch = dfn.get_batch(state, size)
        parts.append(jax.device_get(batch))
    return state, jax.tree.map(lambda *xs: np.stack(xs), *parts)


class RangeBackend:
    """A ``dfn.StreamingBackend`` over records ``0 .. n-1`` in chunks.

    Epoch ``e`` visits them in ``dfn.permute(., n, seed, e)`` order when ``shuffle``;
    ``known_length=False`` hides ``n`` (``num_records() -> None``). ``open_partition`` reads
    the canonical partitions (random-access order within each). ``opened`` records every
    ``open`` / ``open_partition`` call.
    """

    info = {"kind": "test"}

    def __init__(self, n: int = 10, chunk: int = 3, known_length: bool = True, shuffle: bool = True, tag: str = ""):
        self.n, self.chunk, self.known, self.shuffle, self.tag = n, chunk, known_length, shuffle, tag
        self.opened: list[tuple[int, int, int]] = []

    def open(self, epoch, seed, start):
        self.opened.append((epoch, seed, start))
        return self._records(0, self.n, epoch, seed, start)

    def open_partition(self, partition, partitions, epoch, seed, start):
        """Yields partition ``partition`` of ``partitions``: records ``off + permute(i, L, seed, epoch)``."""
        from datarax_fn._layout.partitions import partition_offsets

        self.opened.append((partition, partitions, epoch, seed, start))
        lo, hi = partition_offsets(self.n, partitions)[partition : partition + 2].tolist()
        return self._records(lo, hi - lo, epoch, seed, start)

    def _records(self, offset, length, epoch, seed, start):
        import datarax_fn as dfn

        order = dfn.permute(np.arange(length), length, seed, epoch) if self.shuffle else np.arange(length)
        for lo in range(start, length, self.chunk):
            ids = offset + np.asarray(order[lo : lo + self.chunk])
            yield {"x": ids.astype(np.int32), "y": {"z": (ids * 2).astype(np.float32)}}

    def num_records(self):
        return self.n if self.known else None

    def element_spec(self):
        return {"x": jax.ShapeDtypeStruct((), np.int32), "y": {"z": jax.ShapeDtypeStruct((), np.float32)}}

    def fingerprint(self):
        return f"range:{self.n}:{self.shuffle}:{self.tag}"


def keep_x(chunk):
    """A loader ``filter`` for the tests' ``x`` records: drops every fourth (module-level, so that a
    cursor taken in one process names the same filter in another)."""
    return chunk["x"] % 4 != 3
