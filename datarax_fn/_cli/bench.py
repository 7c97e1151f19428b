"""The benchmark suite runner: every script of ``benchmarks/`` in a fresh process, one report.

Each script runs as ``python <script> [--quick] --json PATH`` and writes a list of rows
(``scenario, case, loader, unit, median, min, max, repeats, note``). The runner gathers them
into ``results.json``, a Markdown table of medians with min, max and the ratio to
``datarax_fn``, the target checks (rows of unit ``"x"``), and two matplotlib plots:
throughput by loader, and per-batch cost against N (scenario ``scale``).

It sits in the package, not in ``benchmarks/``, because ``datarax-fn bench`` is an installed
command: it runs the scripts of the ``benchmarks/`` folder it finds beside the checkout.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
REFERENCE = "datarax_fn"


def scripts_in(folder: Path, only: list[str] | None = None) -> list[Path]:
    """Returns the scripts of ``folder`` (not ``_helpers``), those matching ``only`` if given."""
    found = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    return [p for p in found if not only or any(sel in p.stem for sel in only)]


def run_script(script: Path, quick: bool, timeout: float | None) -> tuple[int, list[dict[str, Any]], float]:
    """Returns ``(exit status, rows, seconds)`` of one script run in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(script), "--json", str(out)] + (["--quick"] if quick else [])
        t = time.perf_counter()
        try:
            rc = subprocess.call(cmd, cwd=script.parent, timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = 124
        seconds = time.perf_counter() - t
        rows = json.loads(out.read_text()) if out.exists() else []
    for r in rows:
        r["script"] = script.stem
    return rc, rows, seconds


def machine() -> dict[str, str]:
    """Returns the machine's cores, memory, platform and library versions, as strings."""
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {"cores": str(os.cpu_count()), "memory": mem, "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _faster(unit: str) -> bool:
    return unit.endswith("/s")


def ratio(r: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    """Returns how many times better ``ref`` (the datarax_fn row) is than ``r``: > 1 means datarax_fn wins."""
    if ref is None or r is ref or r["unit"] != ref["unit"] or not r["median"] or not ref["median"]:
        return None
    return ref["median"] / r["median"] if _faster(r["unit"]) else r["median"] / ref["median"]


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def met(r: dict[str, Any]) -> bool | None:
    """Returns whether a target row (``note`` ``"target >= 1.0"``) is met, None if it states none."""
    m = re.search(r"target\s*(>=|<=)\s*([0-9.]+)", r["note"])
    if not m:
        return None
    bound = float(m.group(2))
    return r["median"] >= bound if m.group(1) == ">=" else r["median"] <= bound


def table(rows: list[dict[str, Any]]) -> str:
    """Returns the Markdown tables: one per scenario, then the target checks."""
    out: list[str] = []
    measured = [r for r in rows if r["unit"] != "x"]
    for scenario in dict.fromkeys(r["scenario"] for r in measured):
        group = [r for r in measured if r["scenario"] == scenario]
        out += [f"#### {scenario}", "",
                f"| case | loader | median | min | max | unit | {REFERENCE} × | note |", "|---|---|---:|---:|---:|---|---:|---|"]
        refs = {r["case"]: r for r in group if r["loader"] == REFERENCE}
        for r in group:
            x = ratio(r, refs.get(r["case"]))
            out.append(f"| {r['case']} | {r['loader']} | {_fmt(r['median'])} | {_fmt(r['min'])} | {_fmt(r['max'])} | "
                       f"{r['unit']} | {'' if x is None else f'{x:.2f}'} | {r['note']} |")
        out.append("")
    checks = [r for r in rows if r["unit"] == "x"]
    if checks:
        out += ["#### targets", "", "| target | ratio | bound | result |", "|---|---:|---|---|"]
        for r in checks:
            ok = met(r)
            out.append(f"| {r['case']} | {r['median']:.3f} | {r['note']} | {'—' if ok is None else 'met' if ok else 'missed'} |")
        out.append("")
    return "\n".join(out)


def plot_throughput(rows: list[dict[str, Any]], path: Path) -> bool:
    """Writes a bar chart of every throughput row (one panel per scenario and case); returns whether it did."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if _faster(r["unit"]) and r["scenario"] != "scale":
            groups.setdefault((r["scenario"], r["case"]), []).append(r)
    if not groups:
        return False
    plt = _pyplot()
    cols = 2 if len(groups) > 1 else 1
    nrows = -(-len(groups) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(7 * cols, 0.5 + sum(0.35 * len(g) + 0.9 for g in list(groups.values())[::cols])),
                             squeeze=False)
    for ax, ((scenario, case), g) in zip(axes.flat, groups.items()):
        names = [r["loader"] for r in g][::-1]
        med = [r["median"] for r in g][::-1]
        err = [[r["median"] - r["min"] for r in g][::-1], [r["max"] - r["median"] for r in g][::-1]]
        for i, (name, m, lo, hi) in enumerate(zip(names, med, *err)):
            # Points, not bars: on a log axis a bar's length depends on where the axis starts.
            ax.errorbar([m], [i], xerr=[[lo], [hi]], fmt="o", capsize=3,
                        color="tab:blue" if name.startswith(REFERENCE) else "tab:gray")
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_xscale("log")
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.set_title(f"{scenario}: {case}", fontsize=9)
        ax.set_xlabel(g[0]["unit"] + " (log; point: median, line: min-max)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_scale(rows: list[dict[str, Any]], path: Path) -> bool:
    """Writes per-batch cost against N (rows of scenario ``scale``, cases ``N=...``); returns whether it did."""
    lines: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for r in rows:
        m = re.search(r"N=([0-9_,]+)", r["case"])
        if r["scenario"] == "scale" and m:
            lines.setdefault(r["loader"], []).append((int(re.sub(r"[_,]", "", m.group(1))), r))
    if not lines:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for loader, pts in lines.items():
        pts.sort(key=lambda p: p[0])
        xs = [n for n, _ in pts]
        ax.errorbar(xs, [r["median"] for _, r in pts], marker="o", label=loader,
                    yerr=[[r["median"] - r["min"] for _, r in pts], [r["max"] - r["median"] for _, r in pts]])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N records")
    ax.set_ylabel(next(iter(lines.values()))[0][1]["unit"])
    ax.set_title("per-batch cost against N", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _pyplot() -> Any:
    import matplotlib  # the bench extra; only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display on a headless machine

    return plt


def report(rows: list[dict[str, Any]], info: dict[str, str], command: str, images: list[str], notes: list[str]) -> str:
    """Returns the Markdown report: machine, command, notes (failed scripts, kept rows), plots, tables."""
    head = [f"Run on {info['date']}: {info['cores']} cores ({info['cpu']}), {info['memory']} memory, "
            f"Python {info['python']}, JAX {info['jax']} ({info['backend']}).", "",
            f"Command: `{command}`", "",
            f"`{REFERENCE} ×`: how many times faster (or smaller) the `{REFERENCE}` row of the same case is than "
            "the row (above 1: datarax_fn wins). Medians of the repeats, min and max beside them.", ""]
    head += [line for note in notes for line in (note, "")]
    head += [f"![{Path(p).stem}]({p})\n" for p in images]
    return "\n".join(head) + table(rows)


def write_page(page: Path, section: str) -> None:
    """Replaces the text between the bench markers of ``page`` with ``section`` (appends markers if absent)."""
    text = page.read_text() if page.exists() else ""
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    page.write_text(text)


def run(folder: Path, out: Path, *, quick: bool = False, only: list[str] | None = None,
        page: Path | None = None, timeout: float | None = None, command: str = "datarax-fn bench") -> int:
    """Runs the suite; returns 0 when every script succeeded, 1 otherwise, 2 when there is nothing to run.

    Arguments:
        folder: the ``benchmarks/`` folder.
        out: where ``results.json``, ``results.md`` and the plots go.
        quick: pass ``--quick`` to every script (a smoke run).
        only: run only scripts whose name contains one of these; the other scripts' rows
            are kept from ``out``'s previous ``results.json``.
        page: a Markdown page whose bench section (between the markers) gets the report,
            with the plots copied next to it.
        timeout: seconds per script.
        command: the command line shown in the report.
    """
    scripts = scripts_in(folder, only)
    if not scripts:
        print(f"bench: no scripts to run in {folder}.", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failed = []
    for script in scripts:
        print(f"=== {script.name} ===", flush=True)
        rc, got, seconds = run_script(script, quick, timeout)
        print(f"=== {script.name}: {len(got)} rows in {seconds:.0f} s"
              + (f", exited with {rc} ===" if rc else " ==="), flush=True)
        rows += got
        if rc:
            failed.append(f"{script.name} (exit {rc})")
    notes = [f"Scripts that failed: {', '.join(failed)}."] if failed else []
    previous = out / "results.json"
    if only and previous.exists():
        # A partial run replaces only its scripts' rows; the others stay from the last run.
        ran = {p.stem for p in scripts}
        kept = [r for r in json.loads(previous.read_text())["rows"] if r.get("script") not in ran]
        rows = sorted(kept + rows, key=lambda r: r.get("script", ""))  # stable: each script's order stays
        if kept:
            notes.append(f"Rows of {', '.join(sorted({r['script'] for r in kept}))} come from the previous run.")
    info = machine()
    (out / "results.json").write_text(json.dumps({"machine": info, "command": command, "rows": rows}, indent=1))
    images = [p.name for p, plot in ((out / "throughput.png", plot_throughput), (out / "scale.png", plot_scale)) if plot(rows, p)]
    (out / "results.md").write_text(report(rows, info, command, images, notes) + "\n")
    if page is not None:
        img_dir = page.parent / "img"
        img_dir.mkdir(parents=True, exist_ok=True)
        for name in images:
            (img_dir / f"bench_{name}").write_bytes((out / name).read_bytes())
        write_page(page, report(rows, info, command, [f"img/bench_{n}" for n in images], notes))
    print(f"bench: {len(rows)} rows from {len(scripts)} scripts -> {out / 'results.md'}"
          + (f" and {page}" if page else ""))
    print(table([r for r in rows if r["unit"] == "x"]))
    return 1 if failed else 0
