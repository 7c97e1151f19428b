"""Real HF datasets on local disk for the conversion, streaming and HF tests (no mocks)."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest


def png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    import PIL.Image

    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def wav(x: np.ndarray, sr: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


N_ROWS = 60


def make_dataset(n: int = N_ROWS):
    """Returns an in-memory HF Dataset with image, label, text, ints, floats and lists."""
    import datasets as hd

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 6, 5), dtype=np.uint8)
    features = hd.Features(
        {
            "id": hd.Value("int64"),
            "image": hd.Image(),
            "label": hd.ClassLabel(names=["cat", "dog", "eel"]),
            "text": hd.Value("string"),
            "score": hd.Value("float64"),
            "tokens": hd.List(hd.Value("int32")),
        }
    )
    rows = {
        "id": list(range(n)),
        "image": [png(im) for im in images],
        "label": [i % 3 for i in range(n)],
        "text": [f"row {i} " + "é" * (i % 4) for i in range(n)],
        "score": [i / 4 for i in range(n)],
        "tokens": [list(range(i % 5)) for i in range(n)],
    }
    return hd.Dataset.from_dict(rows, features=features), images


@pytest.fixture(scope="session")
def hf_dataset():
    return make_dataset()


@pytest.fixture(scope="session")
def parquet_folder(tmp_path_factory, hf_dataset):
    root = tmp_path_factory.mktemp("pq")
    ds, _ = hf_dataset
    (root / "data").mkdir()
    ds.to_parquet(str(root / "data" / "train.parquet"))
    return root / "data"


@pytest.fixture(scope="session")
def saved_folder(tmp_path_factory, hf_dataset):
    import datasets as hd

    root = tmp_path_factory.mktemp("saved")
    ds, _ = hf_dataset
    hd.DatasetDict({"train": ds, "test": ds.select(range(10))}).save_to_disk(str(root / "dd"))
    ds.save_to_disk(str(root / "single"))
    return root
