"""Benchmark: TFDS eager init and streaming throughput (not run in CI).

    .venv/bin/python benchmarks/tfds_load.py [--data-dir DIR] [--records 60000] [--stream-records 30000]

Builds a 60,000-row MNIST-shaped dataset (28x28x1 uint8 PNG images + ClassLabel) with a
real ``GeneratorBasedBuilder`` into a local data_dir (tfrecord and array_record, cached),
then measures, each in a fresh subprocess (wall time and peak RSS):

* raw ``tfds.as_numpy(tfds.load(..., batch_size=-1))`` (the peer, same run);
* ``dfn.TFDSEagerSource`` on the tfrecord copy and on the array_record copy;

against datarax 0.1.17's 24.9 s (measured on this machine class after patching its loader).
Streaming: records/s of ``dfn.get_batch(state, 128)`` on a shuffled ``TFDSStreamingSource``
against a raw ``tf.data`` iteration (same shuffle buffer, batch, prefetch) with the same
conversion (``convert`` + ``jax.device_put``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATARAX_0117_S = 24.9

BUILDER = textwrap.dedent(
    """
    import numpy as np, tensorflow_datasets as tfds

    class DfnMnistLike(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        NUM = int(__import__("os").environ.get("DFN_BENCH_RECORDS", "60000"))

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(num_classes=10)}), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            rng = np.random.default_rng(0)
            yy, xx = np.mgrid[:28, :28]
            for i in range(self.NUM):  # digit-like blobs: compress like MNIST does
                cy, cx, r = rng.integers(8, 20), rng.integers(8, 20), rng.integers(4, 9)
                img = (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))).astype(np.uint8)
                yield i, {"image": img[..., None], "label": int(rng.integers(10))}
    """
)

PRELUDE = textwrap.dedent(
    """
    import json, os, resource, sys, time
    t_start = time.perf_counter()
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
    import tensorflow_datasets as tfds
    import numpy as np, jax, jax.numpy as jnp
    import datarax_fn as dfn
    from datarax_fn import _convert as cv
    data_dir = sys.argv[1]
    jnp.zeros(1).block_until_ready()
    t0 = time.perf_counter()
    """
)

EPILOGUE = textwrap.dedent(
    """
    t1 = time.perf_counter()
    print("RESULT" + json.dumps({"init_s": t1 - t0, "process_s": t1 - t_start,
                                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))
    """
)

CASES = {
    "raw tfds.as_numpy(tfds.load(batch_size=-1))": """
d = tfds.as_numpy(tfds.load("dfn_mnist_like", split="train", data_dir=os.path.join(data_dir, "tfrecord"),
                            batch_size=-1, download=False, try_gcs=False))
extra = {"n": len(d["label"])}
""",
    "dfn.TFDSEagerSource (tfrecord, tf.data)": """
s = dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="dfn_mnist_like", data_dir=os.path.join(data_dir, "tfrecord")))
jax.block_until_ready(s.data)
extra = {"n": len(s)}
""",
    "dfn.TFDSEagerSource (array_record, data_source)": """
s = dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="dfn_mnist_like", data_dir=os.path.join(data_dir, "array_record")))
jax.block_until_ready(s.data)
extra = {"n": len(s)}
""",
}

# Our streaming case; CHUNK is the read chunk size (512 is the default).
_OURS_STREAM = """
STEPS = int(sys.argv[2]) // 128
state = dfn.TFDSStreamingSource(dfn.TFDSStreamingConfig(
    name="dfn_mnist_like", data_dir=os.path.join(data_dir, "tfrecord"), shuffle=True, seed=1, shuffle_buffer_size=10_000,
    chunk_size=CHUNK))
for _ in range(5): state, out = dfn.get_batch(state, 128)
jax.block_until_ready(out)
t0 = time.perf_counter()
for _ in range(STEPS): state, out = dfn.get_batch(state, 128)
jax.block_until_ready(out)
extra = {"records_per_s": STEPS * 128 / (time.perf_counter() - t0)}
"""

STREAM = {
    "raw tf.data + same conversion": """
STEPS = int(sys.argv[2]) // 128
b = tfds.builder("dfn_mnist_like", data_dir=os.path.join(data_dir, "tfrecord"))
ds = b.as_dataset(split="train", shuffle_files=False, read_config=tfds.ReadConfig(try_autocache=False, skip_prefetch=True))
ds = ds.shuffle(10_000, seed=1, reshuffle_each_iteration=False).batch(128).prefetch(2)
fields = {"image": cv.Tensor((28, 28, 1), "uint8"), "label": cv.Label(tuple(str(i) for i in range(10)))}
it = iter(ds)
def step():
    x = next(it)
    # Host NumPy batches, as dfn.get_batch on a streaming source returns them.
    return cv.convert({"image": np.from_dlpack(x["image"]), "label": np.from_dlpack(x["label"])}, fields)
for _ in range(5): jax.block_until_ready(step())
t0 = time.perf_counter()
for _ in range(STEPS): out = step()
jax.block_until_ready(out)
extra = {"records_per_s": STEPS * 128 / (time.perf_counter() - t0)}
""",
    **{
        f"dfn.get_batch on TFDSStreamingSource (chunk {chunk})": _OURS_STREAM.replace("CHUNK", str(chunk))
        for chunk in (256, 128)
    },
}


def ensure_dataset(data_dir: str, records: int) -> None:
    code = BUILDER + textwrap.dedent(
        """
        import os, sys
        for fmt in ("tfrecord", "array_record"):
            DfnMnistLike(data_dir=os.path.join(sys.argv[1], fmt), file_format=fmt).download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        """
    )
    env = {**os.environ, "DFN_BENCH_RECORDS": str(records), "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", code, data_dir], check=True, env=env, capture_output=True)


def run_case(body: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    code = PRELUDE + textwrap.dedent(body) + EPILOGUE
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads(proc.stdout.split("RESULT", 1)[1].splitlines()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "dfn_bench_tfds"))
    ap.add_argument("--records", type=int, default=60_000)
    ap.add_argument("--stream-records", type=int, default=30_000)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per case; the best is kept")
    ap.add_argument("--only", choices=["eager", "streaming"], default=None)
    a = ap.parse_args()
    ensure_dataset(a.data_dir, a.records)
    if a.only != "streaming":
        eager_table(a)
    if a.only != "eager":
        streaming_table(a)


def eager_table(a: argparse.Namespace) -> None:

    eruns = {label: [] for label in CASES}
    for rnd in range(a.repeats):  # interleaved, order alternating, so outside load hits every case alike
        for label, body in (list(CASES.items()) if rnd % 2 == 0 else list(CASES.items())[::-1]):
            eruns[label].append(run_case(body, a.data_dir))
    rows = {label: min(r, key=lambda x: x["init_s"]) for label, r in eruns.items()}
    raw = rows["raw tfds.as_numpy(tfds.load(batch_size=-1))"]
    print(f"\nEager init, {a.records:,} MNIST-shaped records from a local data_dir (fresh process each, best of {a.repeats})")
    print(f"{'case':50s} {'init s':>8s} {'process s':>10s} {'peak RSS MB':>12s} {'vs raw':>8s} {'vs 0.1.17':>10s}")
    for label, r in rows.items():
        print(f"{label:50s} {r['init_s']:8.2f} {r['process_s']:10.2f} {r['peak_rss_mb']:12.0f} "
              f"{r['init_s'] / raw['init_s']:7.2f}x {r['init_s'] / DATARAX_0117_S:9.3f}x")
    print(f"{'datarax 0.1.17 TFDSEagerSource (reference)':50s} {DATARAX_0117_S:8.2f}")
    print("targets: init <= 1.2x raw, <= 0.25x datarax 0.1.17")


def streaming_table(a: argparse.Namespace) -> None:

    runs = {label: [] for label in STREAM}
    for rnd in range(a.repeats):  # interleaved, order alternating, so outside load hits both alike
        for label, body in (list(STREAM.items()) if rnd % 2 == 0 else list(STREAM.items())[::-1]):
            runs[label].append(run_case(body, a.data_dir, str(a.stream_records)))
    srows = {label: max(r, key=lambda x: x["records_per_s"]) for label, r in runs.items()}
    base = srows["raw tf.data + same conversion"]["records_per_s"]
    print(f"\nStreaming, shuffled (buffer 10,000), batch 128, {a.stream_records:,} records (best of {a.repeats})")
    print(f"{'case':50s} {'records/s':>10s} {'vs raw':>8s}")
    for label, r in srows.items():
        print(f"{label:50s} {r['records_per_s']:10.0f} {r['records_per_s'] / base:7.2f}x")
    print("target: overhead <= 10% (ratio >= 0.90x)")


if __name__ == "__main__":
    main()
