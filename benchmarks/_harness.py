"""What every benchmark script shares: its command line, its timing loop and its rows.

A script runs as ``python benchmarks/<name>.py [--quick] [--json PATH]``, prints a readable
table, and with ``--json`` writes a list of rows (the suite runner gathers them):

    {"scenario": ..., "case": ..., "loader": ..., "unit": ..., "median": ..., "min": ...,
     "max": ..., "repeats": ..., "note": ...}

A row whose ``unit`` is ``"x"`` is a target check: ``note`` holds ``"target >= 1.0"`` (or
``<=``) and the runner reports it as met or missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import datarax_fn as dfn


def steppers(make: Callable[[], Any], size: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Returns ``(eager, jitted)``: each call takes the next ``size`` records of its own state.

    ``eager`` steps with ``dfn.get_batch``, ``jitted`` with a donating ``dfn.jit_step``; each
    owns a state from ``make()``, since a donated state's data cannot serve the other.
    """
    box = {"eager": make(), "jit": make()}
    step = dfn.jit_step(lambda s: dfn.get_batch(s, size))

    def eager():
        box["eager"], batch = dfn.get_batch(box["eager"], size)
        return batch

    def jitted():
        box["jit"], batch = step(box["jit"])
        return batch

    return eager, jitted


def parse_args(doc: str | None, **extra: Any) -> argparse.Namespace:
    """Returns the parsed ``--quick`` / ``--json`` command line (plus ``extra`` options: name -> default)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: small sizes, few repeats (< 30 s)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON to PATH")
    for name, default in extra.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return ap.parse_args()


def row(scenario: str, case: str, loader: str, unit: str, samples: list[float], note: str = "") -> dict[str, Any]:
    """Returns one result row: the median, min and max of ``samples``."""
    return {"scenario": scenario, "case": case, "loader": loader, "unit": unit,
            "median": float(statistics.median(samples)), "min": float(min(samples)), "max": float(max(samples)),
            "repeats": len(samples), "note": note}


def target(case: str, value: float, op: str, bound: float, note: str = "") -> dict[str, Any]:
    """Returns a target-check row: ``value`` against ``op`` (``">="`` or ``"<="``) ``bound``."""
    r = row("targets", case, "datarax_fn", "x", [value])
    r["note"] = f"target {op} {bound}" + (f"; {note}" if note else "")
    return r


def rates(fn: Callable[[], Any], per_call: float, calls: int, repeats: int,
          block: Callable[[Any], Any] | None = None, warmup: bool = True) -> list[float]:
    """Returns ``repeats`` throughputs (``per_call`` units / s) of ``calls`` calls of ``fn``.

    ``block`` waits for a result (``jax.block_until_ready`` for device work); ``warmup``
    calls ``fn`` once first (compilation, caches).
    """
    block = block or (lambda x: x)
    if warmup:
        block(fn())
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            res = fn()
        block(res)
        out.append(calls * per_call / (time.perf_counter() - t))
    return out


def timed_rate(fn: Callable[[], Any], per_call: float, seconds: float, max_calls: int,
               block: Callable[[Any], Any] | None = None) -> float:
    """Returns one throughput sample: ``fn`` called until ``seconds`` pass or ``max_calls`` calls.

    Slow peers get fewer calls, so one sample costs about the same time for every loader.
    """
    block = block or (lambda x: x)
    t = time.perf_counter()
    calls = 0
    while calls < max_calls:
        res = fn()
        calls += 1
        if calls % 8 == 0 and time.perf_counter() - t > seconds:
            break
    block(res)
    return calls * per_call / (time.perf_counter() - t)


def interleaved(fns: dict[Any, Callable[[], Any]], repeats: int, warmup: bool = True) -> dict[Any, list[Any]]:
    """Returns ``repeats`` samples of every ``fn`` (each returns one sample), taken round-robin.

    On a shared machine, load comes and goes: interleaving gives every case the same
    share of it, so the ratios between cases hold even when the absolute figures drift.
    ``warmup=False`` for samples that are fresh processes (nothing to warm, and costly).
    """
    out: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values() if warmup else ():
        fn()  # warm-up: compilation and first-touch costs stay out of the samples
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            out[k].append(fns[k]())
    return out


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Returns the median of ``num[i] / den[i]``: samples of one round of ``interleaved`` pair up.

    Paired ratios cancel the load each round saw, which a ratio of medians does not.
    """
    return float(statistics.median(a / b for a, b in zip(num, den)))


def report(title: str, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Prints ``rows`` as a table under ``title`` and writes them to ``args.json`` if given."""
    print(f"\n{title}")
    print(f"{'scenario':10s} {'case':44s} {'loader':34s} {'median':>12s} {'min':>12s} {'max':>12s}  unit")
    for r in rows:
        print(f"{r['scenario']:10s} {r['case'][:44]:44s} {r['loader'][:34]:34s} {r['median']:12.4g} "
              f"{r['min']:12.4g} {r['max']:12.4g}  {r['unit']} {r['note']}")
    save(rows, args)


def save(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Writes ``rows`` as JSON to ``args.json`` when ``--json`` was given (what the suite runner reads)."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
