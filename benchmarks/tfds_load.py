"""TFDS eager init (time, peak RSS) and streaming records/s, each case in a fresh process.

Builds a 60,000-row MNIST-shaped dataset (28x28x1 uint8 PNG images + ClassLabel) with a
real ``GeneratorBasedBuilder`` into a local data_dir (tfrecord and array_record, cached),
then measures, each in a fresh subprocess (wall time and peak RSS):

* raw ``tfds.as_numpy(tfds.load(..., batch_size=-1))`` (the peer, same run);
* ``dfn.TFDSEagerSource`` on the tfrecord copy and on the array_record copy;

Streaming: records/s of ``dfn.get_batch(state, 128)`` on a shuffled ``TFDSStreamingSource``
against a raw ``tf.data`` iteration (same shuffle buffer, batch, prefetch) with the same
conversion. Rows: scenario ``init`` (unit s, and MB for peak RSS) and ``streaming``
(records/s); ``datarax_fn`` is the array_record eager load and the tfrecord stream.
The dataset is built once into ``--data-dir`` (kept between runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from _harness import interleaved, parse_args, report, row

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    "datarax_fn (tfrecord, tf.data)": """
s = dfn.TFDSEagerSource(dfn.TFDSEagerConfig(name="dfn_mnist_like", data_dir=os.path.join(data_dir, "tfrecord")))
jax.block_until_ready(s.data)
extra = {"n": len(s)}
""",
    "datarax_fn": """
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
ds = ds.shuffle(10_000, seed=1, reshuffle_each_iteration=False).repeat().batch(128).prefetch(2)
fields = {"image": cv.Tensor((28, 28, 1), "uint8"), "label": cv.Label(tuple(str(i) for i in range(10)))}
conv = cv.Converter(fields, static=True)
it = iter(ds)
def step():
    x = next(it)
    # Host NumPy batches, as dfn.get_batch on a streaming source returns them.
    return conv({"image": np.from_dlpack(x["image"]), "label": np.from_dlpack(x["label"])})
for _ in range(5): jax.block_until_ready(step())
t0 = time.perf_counter()
for _ in range(STEPS): out = step()
jax.block_until_ready(out)
extra = {"records_per_s": STEPS * 128 / (time.perf_counter() - t0)}
""",
    "datarax_fn": _OURS_STREAM.replace("CHUNK", "256"),
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
    a = parse_args(__doc__, data_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "dfn_bench_tfds"), repeats=1)
    records = 2_000 if a.quick else 60_000
    data_dir = os.path.join(a.data_dir, str(records))
    ensure_dataset(data_dir, records)
    repeats = a.repeats  # each is a fresh TensorFlow process (tens of seconds); 1 keeps the suite short
    rows = []
    case = f"TFDS {records:,} MNIST-like PNG records"
    for label, runs in interleaved({k: (lambda b=b: run_case(b, data_dir)) for k, b in CASES.items()}, repeats, warmup=False).items():
        rows.append(row("init", f"{case}: time", label, "s", [r["init_s"] for r in runs], note="fresh process, local data_dir"))
        rows.append(row("init", f"{case}: peak RSS", label, "MB", [r["peak_rss_mb"] for r in runs], note="whole process"))
    stream = min(records, 30_000)
    for label, runs in interleaved({k: (lambda b=b: run_case(b, data_dir, str(stream))) for k, b in STREAM.items()}, repeats, warmup=False).items():
        rows.append(row("streaming", "TFDS tfrecord, shuffled (buffer 10,000), batch 128", label, "records/s",
                        [r["records_per_s"] for r in runs], note=f"{stream:,} records"))
    report("TFDS eager init and streaming", rows, a)


if __name__ == "__main__":
    main()
