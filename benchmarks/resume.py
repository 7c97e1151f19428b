"""Resume cost of shuffled replay streams at 1 %, 50 % and 99 % of an epoch: shard seeks vs replay.

Run: ``.venv/bin/python benchmarks/resume.py [--quick] [--json PATH]``.

Data (written once under ``benchmarks/.cache``, which ignores itself): ``N`` records of an
int64 ``idx`` and an 8-byte ``tag`` (1,000,000; 20,000 with ``--quick``), as

- four local parquet files in row groups of 10,000, read by ``load_dataset("parquet",
  streaming=True)``;
- a TFDS tfrecord split in 16 files (what TFDS writes for about a GiB in 64 MiB shards), and
  without ``--quick`` the same split as one file (what TFDS writes for these 40 MB).

Each source is shuffled (``shuffle_buffer_size=1000``). For every position a cursor at that
index is restored and the first batch of 256 read (``restore_cursor`` + ``get_batch``); the
build of the state (``from_hf`` / ``from_tfds``: metadata, file listing, the probe chunk) does
not depend on the position and has its own row. ``replay`` is the path every resume took
before: the same source without shard lengths, so it iterates (HF) or ``tf.data``-``skip``s
(TFDS) every record before the position's window.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from _harness import parse_args, row, save

import datarax_fn as dfn
from datarax_fn._loaders import hf as hf_loader
from datarax_fn._loaders import tfds as tfds_loader

CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")
POSITIONS = (0.01, 0.50, 0.99)
BATCH, WINDOW, MAX = 256, 1000, {"tag": 8}


def tag(i: int) -> bytes:
    return b"r%07d" % i


def parquet_files(n: int, payload: int = 0) -> list[str]:
    """Returns four parquet files of ``n`` records in all (written once); ``payload`` bytes pad each tag."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = os.path.join(CACHE, f"parquet-{n}" + (f"-{payload}" if payload else ""))
    paths = [os.path.join(folder, f"part-{f}.parquet") for f in range(4)]
    if not all(map(os.path.exists, paths)):
        os.makedirs(folder, exist_ok=True)
        for f, path in enumerate(paths):
            rows = range(f * n // 4, (f + 1) * n // 4)
            table = pa.table({"idx": pa.array(rows, pa.int64()), "tag": pa.array([tag(i) + bytes(payload) for i in rows], pa.binary())})
            pq.write_table(table, path + ".tmp", row_group_size=10_000)
            os.replace(path + ".tmp", path)
    return paths


def tfrecord_dir(n: int, shards: int) -> str:
    """Returns a TFDS data_dir holding ``dfn_bench`` (``n`` records in ``shards`` tfrecord files), written once.

    Written with ``tf.io.TFRecordWriter`` and ``tfds.folder_dataset.write_metadata``: the same
    bytes TFDS's own writer produces for these features, 20x faster than a builder.
    """
    root = os.path.join(CACHE, f"tfds-{n}-{shards}")
    version = os.path.join(root, "dfn_bench", "1.0.0")
    if os.path.exists(os.path.join(version, "dataset_info.json")):
        return root
    import tensorflow as tf
    import tensorflow_datasets as tfds

    os.makedirs(version, exist_ok=True)
    example, feature = tf.train.Example, tf.train.Feature
    lengths, size = [], 0
    for s in range(shards):
        lo, hi = s * n // shards, (s + 1) * n // shards
        with tf.io.TFRecordWriter(os.path.join(version, f"dfn_bench-train.tfrecord-{s:05d}-of-{shards:05d}")) as w:
            for i in range(lo, hi):
                rec = example(features=tf.train.Features(feature={
                    "idx": feature(int64_list=tf.train.Int64List(value=[i])),
                    "tag": feature(bytes_list=tf.train.BytesList(value=[tag(i)]))})).SerializeToString()
                size += len(rec)
                w.write(rec)
        lengths.append(hi - lo)
    features = tfds.features.FeaturesDict({"idx": tfds.features.Scalar(np.int64),
                                           "tag": tfds.features.Tensor(shape=(), dtype=np.object_)})
    split = tfds.core.SplitInfo(name="train", shard_lengths=lengths, num_bytes=size)
    tfds.folder_dataset.write_metadata(data_dir=version, features=features, split_infos=[split], check_data=False,
                                       disable_shuffling=True)
    return root


def make_hf(files: list[str], max_length: dict = MAX):
    return dfn.from_hf("parquet", "train", data_files={"train": files}, streaming=True, shuffle=True,
                       shuffle_buffer_size=WINDOW, max_length=max_length, cache_dir=os.path.join(CACHE, "hf"))


def make_hf_1k(files: list[str]):
    return make_hf(files, {"tag": 8 + 1024})


def make_tfds(data_dir: str):
    return dfn.from_tfds("dfn_bench", "train", data_dir=data_dir, streaming=True, shuffle=True,
                         shuffle_buffer_size=WINDOW, max_length=MAX)


def replaying(make, *args):
    """Returns ``make(*args)`` built without shard lengths: every resume replays from the epoch start."""
    saved = hf_loader._parquet_row_groups, tfds_loader._shard_pieces
    hf_loader._parquet_row_groups = lambda stream: None
    tfds_loader._shard_pieces = lambda info, split: None
    try:
        return make(*args)
    finally:
        hf_loader._parquet_row_groups, tfds_loader._shard_pieces = saved


def resume_seconds(state, index: int) -> float:
    """Returns the seconds to restore a cursor at ``index`` of epoch 0 and read the first batch."""
    cursor = {**dfn.cursor(state), "index": index}
    t = time.perf_counter()
    resumed, batch = dfn.get_batch(dfn.restore_cursor(state, cursor), BATCH)
    took = time.perf_counter() - t
    resumed.close()
    assert len(batch["idx"]) == BATCH
    return took


def measure(scenario: str, make, arg, n: int, repeats: int, replay_repeats: int) -> list[dict]:
    rows, builds = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        state = make(arg)
        builds.append(time.perf_counter() - t)
        state.close()
    rows.append(row(scenario, "build", "datarax_fn", "s", builds, "from_hf / from_tfds; independent of the position"))
    seek, old = make(arg), (replaying(make, arg) if replay_repeats else None)
    for p in POSITIONS:
        case, index = f"{p:.0%}", int(n * p)
        rows.append(row(scenario, case, "datarax_fn", "s", [resume_seconds(seek, index) for _ in range(repeats)],
                        "shard seek + one window"))
        if old is not None:
            rows.append(row(scenario, case, "replay", "s", [resume_seconds(old, index) for _ in range(replay_repeats)],
                            "every record before the window"))
    seek.close()
    if old is not None:
        old.close()
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'scenario':<26}{'case':<7}{'loader':<12}{'median s':>10}{'min':>9}{'max':>9}  x")
    for r in rows:
        base = next((x for x in rows if x["scenario"] == r["scenario"] and x["case"] == r["case"]
                     and x["loader"] == "datarax_fn"), r)
        ratio = r["median"] / base["median"] if base["median"] else float("nan")
        print(f"{r['scenario']:<26}{r['case']:<7}{r['loader']:<12}{r['median']:>10.4f}{r['min']:>9.4f}"
              f"{r['max']:>9.4f}  {ratio:.1f}")


def main() -> None:
    args = parse_args(__doc__)
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".gitignore"), "w") as f:
        f.write("*\n")
    n = 20_000 if args.quick else 1_000_000
    repeats = 1 if args.quick else 3
    rows = measure("resume hf-parquet", make_hf, parquet_files(n), n, repeats, 1)
    rows += measure("resume tfds-tfrecord-16", make_tfds, tfrecord_dir(n, 16), n, repeats, 1)
    if not args.quick:
        # Records of about 1 KB, a common size: HF replays those at about 1 µs each locally.
        rows += measure("resume hf-parquet-1KB", make_hf_1k, parquet_files(n, 1024), n, repeats, 1)
        rows += measure("resume tfds-tfrecord-1", make_tfds, tfrecord_dir(n, 1), n, repeats, 0)
    print_table(rows)
    save(rows, args)


if __name__ == "__main__":
    sys.exit(main())
