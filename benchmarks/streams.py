"""The streaming host engine side by side with its peers: images/s and cores, memory against partitions, mode, text.

Run: ``python benchmarks/streams.py [--quick] [--json PATH] [--only partitions,mode]``.
Everything is built in a temporary folder (removed at the end); nothing is downloaded.
``--quick`` shrinks every size and takes one 1-second window per image loader (about a minute
on 2 quiet cores); the full run takes 4 windows of 8 s (a few minutes). ``--only`` runs the
named scenarios.

1. ``images``: JPEGs (256-500 px, quality 90, written once with PIL) stored as an HF parquet file
   and a TFDS builder (tfrecord and array_record) holding the same bytes. Every loader decodes,
   center-crops to 224x224 (no resize: the crop is identical everywhere) and batches 128,
   unshuffled, repeating epochs:
   - ``datarax_fn``: ``from_hf("parquet", streaming=True, num_workers=1|2)`` and
     ``from_tfds(..., streaming=True, num_workers=2)`` on tfrecord and array_record, the crop as
     ``transform``;
   - ``tf.data``: the tfrecord split read with ``SkipDecoding``, ``map(tf.io.decode_jpeg +
     crop, num_parallel_calls=AUTOTUNE)``, ``batch``, ``prefetch(AUTOTUNE)`` (TF's decoder with
     ``dct_method="INTEGER_ACCURATE"``, libjpeg's default, as PIL decodes);
   - ``grain``: ``DataLoader(worker_count=0|1|2)`` over ``tfds.data_source`` (array_record,
     ``SkipDecoding``) with an OpenCV decode + the same crop as a ``MapTransform``.
   Samples are timed windows taken round-robin; ``cores used`` is the CPU time (user + sys) of
   the process and its children (live worker processes included) over each window's wall time.
   Targets: datarax_fn / tf.data >= 1.0 for parquet and tfrecord; more than 1.6 cores busy.
2. ``partitions``: a shuffled parquet stream of 1M rows (quick: 100k; ``Dataset.to_parquet``'s
   own row groups, as a user writes them) read with ``partitions=C`` for C = 1, 8, 64, each in
   a fresh process: time from building the source to the first batch of 256, and the peak RSS
   (``VmHWM``, see ``peak_mb``) after 20 more batches. Targets: C=64 / C=1 <= 1.5 (peak) and <= 2 (first batch).
3. ``mode``: the peak RSS of ``from_hf`` (that parquet file) and ``from_tfds`` (the JPEG
   tfrecord builder, cropped by ``transform``) with ``streaming=None`` against each mode's own
   peak (``True``, ``False``), each a fresh process with an empty HF cache of its own, building
   the source and taking 2 batches, in 2 interleaved rounds (``--quick``: the HF case only, no
   TensorFlow processes). Target: default / the mode it chose <= 1.1 (median of paired ratios).
4. ``text``: 1M (quick: 100k) short texts with lognormal lengths loaded eagerly with ``from_hf``:
   the bytes the state holds (sum of its leaves' ``nbytes``) against the Arrow table's
   ``nbytes``, and the process's peak RSS. Target: held / Arrow <= 1.5.
"""

from __future__ import annotations

import gc
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import numpy as np

from _harness import interleaved, paired_ratio, parse_args, report, row, target

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, REPO)  # measure the checkout this script sits in, not an installed copy (children get PYTHONPATH)
CROP, BATCH = 224, 128
TFDS_NAME = "dfn_streams_jpeg"


# ----------------------------------------------------------------------------- the shared transform


def center_crop(im: np.ndarray) -> np.ndarray:
    """Returns the central ``CROP x CROP`` window of one ``(H, W, C)`` image (H, W >= CROP)."""
    y, x = (im.shape[0] - CROP) // 2, (im.shape[1] - CROP) // 2
    return im[y : y + CROP, x : x + CROP]


def crop_batch(batch: dict) -> dict:
    """Returns a datarax_fn chunk with every decoded image center-cropped (the ``transform``)."""
    return {**batch, "image": np.stack([center_crop(np.asarray(im)) for im in batch["image"]])}


try:  # grain's workers unpickle the transform by name: its class lives at module level
    from grain.transforms import Map as _GrainMap
except ImportError:
    _GrainMap = object


class GrainDecodeCrop(_GrainMap):
    """A grain ``MapTransform``: OpenCV decode (libjpeg-turbo, as datarax_fn) and the same crop."""

    def map(self, ex: dict) -> dict:
        import cv2

        im = cv2.imdecode(np.frombuffer(ex["image"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        return {"image": np.ascontiguousarray(center_crop(im)), "label": ex["label"]}


# ----------------------------------------------------------------------------- data on local disk


def jpegs(n: int, seed: int = 0) -> list[bytes]:
    """Returns ``n`` JPEGs of 256-500 px a side: smooth random fields plus mild noise, like photos compress."""
    import PIL.Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(256, 501, 2))
        small = PIL.Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((w, h), PIL.Image.BICUBIC)
        px = np.clip(np.asarray(small, np.int16) + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        PIL.Image.fromarray(px).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_images(root: str, images: list[bytes]) -> dict[str, str]:
    """Returns ``{format: path}``: the same JPEG bytes as HF parquet and as a TFDS tfrecord / array_record builder."""
    import datasets as hd
    import tensorflow_datasets as tfds

    labels = [i % 10 for i in range(len(images))]
    parquet = os.path.join(root, "images.parquet")
    hd.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images], "label": labels},
                         features=hd.Features({"image": hd.Image(), "label": hd.Value("int64")})).to_parquet(parquet)

    class DfnStreamsJpeg(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=10)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, b in enumerate(images):  # a file object: TFDS stores its bytes as they are
                yield i, {"image": io.BytesIO(b), "label": labels[i]}

    out = {"parquet": parquet}
    for fmt in ("tfrecord", "array_record"):
        out[fmt] = os.path.join(root, fmt)
        DfnStreamsJpeg(data_dir=out[fmt], file_format=fmt).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return out


def write_rows(path: str, n: int) -> None:
    """Writes ``n`` rows (an id, 32 float32 features, a label) with ``Dataset.to_parquet``'s default row groups."""
    import datasets as hd

    rng = np.random.default_rng(0)
    feats = hd.Features({"id": hd.Value("int64"), "feat": hd.Sequence(hd.Value("float32"), length=32),
                         "label": hd.Value("int64")})
    hd.Dataset.from_dict({"id": np.arange(n), "feat": rng.standard_normal((n, 32), dtype=np.float32),
                          "label": rng.integers(0, 10, n)}, features=feats).to_parquet(path)


# ----------------------------------------------------------------------------- 1. images/s and cores


def cpu_seconds() -> float:
    """Returns the user + sys CPU seconds of this process and its children, live worker processes included."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime
    try:
        import psutil

        for c in psutil.Process().children(recursive=True):
            try:
                t = c.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass  # exited between the listing and the read: counted in RUSAGE_CHILDREN
    except ImportError:
        pass
    return total


def window(next_batch: Callable[[], Any], seconds: float, max_batches: int) -> tuple[float, float]:
    """Returns ``(images/s, cores used)`` over batches taken for ``seconds`` (after 2 that drain read-ahead)."""
    for _ in range(2):
        next_batch()
    t, c, n = time.perf_counter(), cpu_seconds(), 0
    while n < max_batches and (n < 2 or time.perf_counter() - t < seconds):
        b = next_batch()
        n += 1
    assert b["image"].shape == (BATCH, CROP, CROP, 3), b["image"].shape
    wall = time.perf_counter() - t
    return n * BATCH / wall, (cpu_seconds() - c) / wall


def ours(make: Callable[[], Any]) -> tuple[Callable[[], Any], Callable[[], None]]:
    import datarax_fn as dfn

    box = {"s": make()}

    def next_batch():
        box["s"], b = dfn.get_batch(box["s"], BATCH)
        return b

    return next_batch, lambda: box["s"].close()


def image_loaders(paths: dict[str, str], n: int) -> dict[str, tuple[Callable[[], Any], Callable[[], None]]]:
    """Returns ``{loader: (next_batch, close)}`` for every loader of scenario 1 whose library is installed."""
    import datarax_fn as dfn

    out: dict[str, Any] = {}
    common = dict(transform=crop_batch, chunk_size=BATCH)
    for w in (1, 2):
        out[f"datarax_fn HF parquet workers={w}"] = ours(lambda w=w: dfn.from_hf(
            "parquet", split="train", data_files=paths["parquet"], streaming=True, num_workers=w, image_mode="RGB", **common))
    for fmt in ("tfrecord", "array_record"):
        out[f"datarax_fn {fmt} workers=2"] = ours(lambda fmt=fmt: dfn.from_tfds(
            TFDS_NAME, "train", data_dir=paths[fmt], streaming=True, num_workers=2, **common))
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds

        tf.config.set_visible_devices([], "GPU")

        def tf_decode(ex):
            im = tf.io.decode_jpeg(ex["image"], channels=3, dct_method="INTEGER_ACCURATE")
            s = tf.shape(im)
            return {"image": tf.image.crop_to_bounding_box(im, (s[0] - CROP) // 2, (s[1] - CROP) // 2, CROP, CROP),
                    "label": ex["label"]}

        ds = tfds.builder(TFDS_NAME, data_dir=paths["tfrecord"]).as_dataset(
            split="train", decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(try_autocache=False))
        ds = ds.repeat().map(tf_decode, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH, drop_remainder=True)
        it = iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))
        out["tf.data tfrecord AUTOTUNE"] = (lambda: next(it), lambda: None)
    except ImportError:
        pass
    try:
        import grain
        import tensorflow_datasets as tfds
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags, as an absl app parses them
            flags.FLAGS(sys.argv[:1])
        for w in (0, 1, 2):
            source = tfds.data_source(TFDS_NAME, split="train", data_dir=paths["array_record"],
                                      decoders={"image": tfds.decode.SkipDecoding()}, download=False)
            loader = grain.DataLoader(
                data_source=source, sampler=grain.samplers.IndexSampler(len(source), shuffle=False, num_epochs=None),
                operations=[GrainDecodeCrop(), grain.transforms.Batch(BATCH, drop_remainder=True)], worker_count=w)
            it_g = iter(loader)
            out[f"grain array_record worker_count={w}"] = (lambda it_g=it_g: next(it_g), lambda: None)
    except ImportError:
        pass
    return out


def images(paths: dict[str, str], n: int, quick: bool) -> list[dict]:
    loaders = image_loaders(paths, n)
    seconds, repeats = (1.0, 1) if quick else (8.0, 4)
    samples = interleaved({k: (lambda f=f: window(f[0], seconds, 1000)) for k, f in loaders.items()}, repeats, warmup=False)
    for _, close in loaders.values():
        close()
    case = f"{n:,} JPEGs 256-500 px -> 224 crop, batch {BATCH}"
    rows = []
    for k, s in samples.items():
        rows.append(row("images", case, k, "images/s", [r[0] for r in s], note="unshuffled, decode + crop"))
        rows.append(row("images", "cores used (CPU s / wall s)", k, "cores", [r[1] for r in s]))
    rate = {k: [r[0] for r in s] for k, s in samples.items()}
    tfd = "tf.data tfrecord AUTOTUNE"
    if tfd in rate:
        for k in ("datarax_fn HF parquet workers=2", "datarax_fn tfrecord workers=2"):
            rows.append(target(f"{k[11:]} / tf.data images/s", paired_ratio(rate[k], rate[tfd]), ">=", 1.0,
                               note="median of per-round ratios"))
    best = max((k for k in samples if k.startswith("datarax_fn")), key=lambda k: np.median(rate[k]))
    rows.append(target("datarax_fn cores used (fastest row)", float(np.median([r[1] for r in samples[best]])), ">=", 1.6,
                       note=best[11:]))
    return rows


# ----------------------------------------------------------------------------- fresh-process cases


def peak_mb() -> float:
    """Returns this process's peak resident memory in MB since it started (exec), from ``VmHWM``.

    ``ru_maxrss`` is not used where ``VmHWM`` exists: Linux carries the parent's high-water mark
    across fork + exec, so a child of a large parent reports at least the parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(spec: dict) -> dict:
    """Returns one fresh-process measurement (what ``spec["case"]`` names); runs in the child."""
    import logging

    import jax
    import jax.numpy as jnp

    import datarax_fn as dfn

    jnp.zeros(1).block_until_ready()
    base = peak_mb()
    out: dict[str, Any] = {"base_mb": base}
    t0 = time.perf_counter()
    if spec["case"] == "partitions":
        state = dfn.from_hf("parquet", split="train", data_files=spec["path"], streaming=True, shuffle=True, seed=0,
                            partitions=spec["partitions"])
        state, b = dfn.get_batch(state, 256)
        out["first_batch_s"] = time.perf_counter() - t0
        for _ in range(20):
            state, b = dfn.get_batch(state, 256)
        state.close()
    elif spec["case"] == "mode":
        log = logging.getLogger("datarax_fn")  # the mode and why (basicConfig is a no-op once TF set up logging)
        log.setLevel(logging.INFO)
        log.addHandler(logging.StreamHandler())
        log.propagate = False  # printed once, by the handler above
        if spec["loader"] == "hf":
            state = dfn.from_hf("parquet", split="train", data_files=spec["path"], streaming=spec["streaming"],
                                cache_dir=spec["cache"])
        else:
            state = dfn.from_tfds(TFDS_NAME, "train", data_dir=spec["path"], streaming=spec["streaming"],
                                  transform=crop_batch)
        for _ in range(2):
            state, b = dfn.get_batch(state, 64)
        jax.block_until_ready(b)
        out["streaming"] = isinstance(state, dfn.StreamingSource)
        getattr(state, "close", lambda: None)()
    elif spec["case"] == "text":
        import datasets as hd

        rng = np.random.default_rng(0)
        lengths = np.maximum(1, rng.lognormal(3.7, 0.8, spec["rows"]).astype(np.int64))
        ends = np.cumsum(lengths)
        blob = rng.integers(97, 123, int(ends[-1]), dtype=np.uint8).tobytes().decode("ascii")
        texts = [blob[e - n : e] for e, n in zip(ends.tolist(), lengths.tolist())]
        ds = hd.Dataset.from_dict({"text": texts})
        del texts, blob
        out["arrow_bytes"] = ds.data.nbytes
        out["longest"] = int(lengths.max())
        t0 = time.perf_counter()
        state = dfn.from_hf(ds, streaming=False)
        out["held_bytes"] = sum(int(x.nbytes) for x in jax.tree.leaves(state.data))
    out["s"] = time.perf_counter() - t0
    out["peak_mb"] = peak_mb()
    return out


def fresh(spec: dict, timeout: float) -> dict:
    """Returns ``child(spec)`` run in a fresh Python process (TF and JAX quiet, CPU only)."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "TF_CPP_MIN_LOG_LEVEL": "2",
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{spec} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["log"] = [ln for ln in proc.stderr.splitlines() if "stream" in ln.lower() or "eager" in ln.lower()][-1:]
    return res


def partitions(path: str, n: int, repeats: int, timeout: float) -> list[dict]:
    cs = (1, 8, 64)
    def one(c: int) -> dict:
        try:
            return fresh({"case": "partitions", "path": path, "partitions": c}, timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as e:  # out of memory or time: a NaN row, the others stay
            print(f"partitions={c}: {str(e)[-300:]}", file=sys.stderr)
            return {"first_batch_s": float("nan"), "peak_mb": float("nan"), "base_mb": float("nan")}

    runs = interleaved({c: (lambda c=c: one(c)) for c in cs}, repeats, warmup=False)
    case = f"{n:,}-row shuffled parquet stream"
    rows = []
    for c in cs:
        rows.append(row("partitions", f"{case}: first batch", f"datarax_fn partitions={c}", "s",
                        [r["first_batch_s"] for r in runs[c]], note="build + first batch of 256, fresh process"))
        rows.append(row("partitions", f"{case}: peak RSS", f"datarax_fn partitions={c}", "MB",
                        [r["peak_mb"] for r in runs[c]], note=f"after 21 batches; {runs[c][0]['base_mb']:.0f} MB after imports"))
    peak = {c: [r["peak_mb"] for r in runs[c]] for c in cs}
    first = {c: [r["first_batch_s"] for r in runs[c]] for c in cs}
    rows.append(target("partitions: peak RSS C=64 / C=1", paired_ratio(peak[64], peak[1]), "<=", 1.5))
    rows.append(target("partitions: first batch C=64 / C=1", paired_ratio(first[64], first[1]), "<=", 2.0))
    return rows


def modes(paths: dict[str, str], timeout: float, quick: bool, repeats: int) -> list[dict]:
    rows = []
    cases = [("hf", paths["rows"], "from_hf parquet rows")]
    if not quick:  # quick: no TensorFlow processes (seconds each)
        cases.append(("tfds", paths["tfrecord"], "from_tfds JPEG tfrecord"))
    names = {None: "streaming=None (default)", True: "streaming=True", False: "streaming=False"}
    for loader, path, what in cases:
        def one(m: bool | None, loader: str = loader, path: str = path) -> dict:
            # Each process its own empty HF cache: the first to load eagerly would otherwise prepare
            # the Arrow cache that the later ones only map.
            cache = tempfile.mkdtemp(prefix="dfn_mode_cache_")
            try:
                return fresh({"case": "mode", "loader": loader, "path": path, "streaming": m, "cache": cache}, timeout)
            finally:
                shutil.rmtree(cache, ignore_errors=True)

        runs = interleaved({m: (lambda m=m: one(m)) for m in names}, repeats, warmup=False)
        chosen = bool(runs[None][0]["streaming"])
        for m, rs in runs.items():
            note = f"chose {'streaming' if chosen else 'eager'}" if m is None else ""
            rows.append(row("mode", f"{what}: peak RSS", f"datarax_fn {names[m]}", "MB", [r["peak_mb"] for r in rs], note=note))
        peaks = {m: [r["peak_mb"] for r in rs] for m, rs in runs.items()}
        rows.append(target(f"mode {loader}: default peak / chosen mode's peak", paired_ratio(peaks[None], peaks[chosen]),
                           "<=", 1.1, note=f"chose {'streaming' if chosen else 'eager'}"))
        print(f"mode {loader}, the default's log: {runs[None][0]['log']}", flush=True)
    return rows


def text(n: int, timeout: float) -> list[dict]:
    r = fresh({"case": "text", "rows": n}, timeout)
    case = f"{n:,} lognormal texts (longest {r['longest']:,} B)"
    return [row("text", case, "Arrow table nbytes", "MB", [r["arrow_bytes"] / 2**20]),
            row("text", case, "datarax_fn eager data nbytes", "MB", [r["held_bytes"] / 2**20]),
            row("text", case, "datarax_fn eager process peak RSS", "MB", [r["peak_mb"]], note=f"load {r['s']:.1f} s"),
            target("text: held bytes / Arrow bytes", r["held_bytes"] / r["arrow_bytes"], "<=", 1.5)]


def main() -> None:
    args = parse_args(__doc__, child="", only="")
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    q = args.quick
    wanted = set(args.only.split(",")) if args.only else {"images", "partitions", "mode", "text"}
    n_images, n_rows, n_text = (512, 100_000, 100_000) if q else (3_000, 1_000_000, 1_000_000)
    timeout = 180 if q else 300  # per fresh process
    root = tempfile.mkdtemp(prefix="dfn_bench_streams_")
    rows: list[dict] = []
    try:
        t = time.perf_counter()
        need_images = "images" in wanted or ("mode" in wanted and not q)  # quick mode cases read no images
        paths = write_images(root, jpegs(n_images)) if need_images else {}
        paths["rows"] = os.path.join(root, "rows.parquet")
        write_rows(paths["rows"], n_rows)
        print(f"data written in {time.perf_counter() - t:.1f} s under {root}", flush=True)
        for name, step in (("images", lambda: images(paths, n_images, q)),
                           ("partitions", lambda: partitions(paths["rows"], n_rows, 1 if q else 2, timeout)),
                           ("mode", lambda: modes(paths, timeout, q, 2)),
                           ("text", lambda: text(n_text, timeout))):
            if name not in wanted:
                continue
            t = time.perf_counter()
            try:
                rows += step()
            except Exception as e:  # one failing scenario still leaves the others' rows
                traceback.print_exc()
                rows.append(row(name, f"FAILED: {type(e).__name__}: {str(e)[-200:]}", "datarax_fn", "x", [float("nan")]))
            print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
            gc.collect()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report("Streams: images/s and cores, memory against partitions, the default mode, text bytes", rows, args)


if __name__ == "__main__":
    main()
