"""The peer loaders, each as ``make(arrays, batch, shuffle) -> next_batch()`` over in-memory arrays.

Every peer yields host NumPy batches of the same MNIST-shaped arrays, shuffled with its own
documented API, restarting when an epoch ends; a missing library gives no entry.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

Arrays = dict[str, np.ndarray]


def _forever(epoch: Callable[[int], Iterator[Any]]) -> Callable[[], Any]:
    state = {"epoch": 0, "it": epoch(0)}

    def next_batch() -> Any:
        try:
            return next(state["it"])
        except StopIteration:
            state["epoch"] += 1
            state["it"] = epoch(state["epoch"])
            return next(state["it"])

    return next_batch


def numpy_fancy(arrays: Arrays, batch: int, shuffle: bool) -> Callable[[], Any]:
    n = len(next(iter(arrays.values())))

    def epoch(e: int) -> Iterator[Any]:
        order = np.random.default_rng(e).permutation(n) if shuffle else np.arange(n)
        for lo in range(0, n - batch + 1, batch):
            idx = order[lo : lo + batch]
            yield {k: v[idx] for k, v in arrays.items()}

    return _forever(epoch)


def grain_map_dataset(arrays: Arrays, batch: int, shuffle: bool) -> Callable[[], Any]:
    import grain  # optional peer

    n = len(next(iter(arrays.values())))

    def epoch(e: int) -> Iterator[Any]:
        ds = grain.MapDataset.source(_RecordSource(arrays))
        if shuffle:
            ds = ds.shuffle(seed=e)
        ds = ds.batch(batch, drop_remainder=True)
        return (ds[i] for i in range(n // batch))

    return _forever(epoch)


def grain_data_loader(arrays: Arrays, batch: int, shuffle: bool) -> Callable[[], Any]:
    import grain  # optional peer

    n = len(next(iter(arrays.values())))

    def epoch(e: int) -> Iterator[Any]:
        sampler = grain.samplers.IndexSampler(n, shuffle=shuffle, seed=e, num_epochs=1)
        loader = grain.DataLoader(data_source=_RecordSource(arrays), sampler=sampler,
                                  operations=[grain.transforms.Batch(batch, drop_remainder=True)], worker_count=0)
        return iter(loader)

    return _forever(epoch)


def tf_data(arrays: Arrays, batch: int, shuffle: bool) -> Callable[[], Any]:
    import tensorflow as tf  # optional peer
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        ds = ds.shuffle(len(next(iter(arrays.values()))), seed=0, reshuffle_each_iteration=True)
    ds = ds.batch(batch, drop_remainder=True).repeat().prefetch(2)
    it = iter(tfds.as_numpy(ds))
    return lambda: next(it)


def hf_iter(arrays: Arrays, batch: int, shuffle: bool) -> Callable[[], Any]:
    import datasets  # optional peer

    feats = {}
    for k, v in arrays.items():
        if v.ndim == 1:
            feats[k] = datasets.Value(str(v.dtype))
        else:
            feats[k] = datasets.Array2D(v.shape[1:], str(v.dtype)) if v.ndim == 3 else datasets.Sequence(datasets.Value(str(v.dtype)))
    ds = datasets.Dataset.from_dict(dict(arrays), features=datasets.Features(feats))

    def epoch(e: int) -> Iterator[Any]:
        d = ds.shuffle(seed=e) if shuffle else ds
        return d.with_format("numpy").iter(batch_size=batch, drop_last_batch=True)

    return _forever(epoch)


class _RecordSource:
    """A grain random-access source over in-memory arrays (one record: a dict of rows)."""

    def __init__(self, arrays: Arrays):
        self.arrays = arrays
        self.n = len(next(iter(arrays.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[i] for k, v in self.arrays.items()}


PEERS = {
    "NumPy fancy indexing": numpy_fancy,
    "grain MapDataset shuffle+batch": grain_map_dataset,
    "grain DataLoader": grain_data_loader,
    "tf.data (tfds.as_numpy)": tf_data,
    "HF with_format(numpy).iter": hf_iter,
}


def available(arrays: Arrays, batch: int, shuffle: bool, quick: bool = False) -> dict[str, Callable[[], Any]]:
    """Returns ``{peer name: next_batch}`` for every peer whose library is installed.

    ``quick`` leaves out the peers that cost seconds to import (tf.data, HF).
    """
    out = {}
    for name, make in PEERS.items():
        if quick and name.startswith(("tf.data", "HF")):
            continue
        try:
            out[name] = make(arrays, batch, shuffle)
        except ImportError:
            continue
    return out


def mnist_like(n: int = 60_000, seed: int = 0) -> Arrays:
    """Returns ``n`` random 28x28 uint8 images and int32 labels (MNIST-shaped)."""
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), "label": rng.integers(0, 10, n, dtype=np.int32)}
