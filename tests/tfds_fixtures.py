"""Real TFDS datasets for the tests: small ``GeneratorBasedBuilder``s prepared on local disk.

* ``dfn_toy``: every feature kind (image, class label, text, nested dict, ragged sequence,
  scalar id), 40 train / 8 test records whose values are a pure function of ``idx``.
* ``dfn_digits``: scikit-learn's 8x8 digits (1,797 real images, UCI, CC BY 4.0),
  1,500 train / 297 test.

Both prepare in either file format: ``tfrecord`` (read through tf.data) or ``array_record``
(read through ``tfds.data_source``). ``rewrite_file`` replaces a prepared file with other valid
records, as a sync tool or a second writer would.
"""

from __future__ import annotations

import itertools
import os
import tempfile

import numpy as np
import tensorflow_datasets as tfds

TOY_TRAIN, TOY_TEST = 40, 8
TOY_LABELS = ("cat", "dog", "emu")


def toy_record(i: int) -> dict:
    """Returns record ``i`` of ``dfn_toy``: every value derives from ``i``."""
    return {
        "idx": i,
        "image": ((np.arange(6 * 5 * 3).reshape(6, 5, 3) + 7 * i) % 256).astype(np.uint8),
        "label": i % 3,
        "text": f"récord {i} " + "ab" * (i % 5),
        "nested": {"x": np.float32(i) / 4, "y": np.array([i, -i], np.int64)},
        "seq": np.arange(i % 4, dtype=np.int32) + i,
    }


class DfnToy(tfds.core.GeneratorBasedBuilder):
    """Every feature kind, on 48 records."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="datarax_fn test dataset with every feature kind.",
            features=tfds.features.FeaturesDict(
                {
                    "idx": tfds.features.Scalar(np.int64),
                    "image": tfds.features.Image(shape=(6, 5, 3)),
                    "label": tfds.features.ClassLabel(names=list(TOY_LABELS)),
                    "text": tfds.features.Text(),
                    "nested": {"x": np.float32, "y": tfds.features.Tensor(shape=(2,), dtype=np.int64)},
                    "seq": tfds.features.Sequence(np.int32),
                }
            ),
            supervised_keys=("text", "label"),
            citation="@misc{dfn_toy, title={datarax_fn toy}}",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(0, TOY_TRAIN), "test": self._generate_examples(TOY_TRAIN, TOY_TEST)}

    def _generate_examples(self, start, count):
        for i in range(start, start + count):
            yield i, toy_record(i)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Returns scikit-learn's digits as uint8 (1797, 8, 8, 1) images and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.uint8)[..., None], d.target.astype(np.int64)


class DfnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits (UCI ML hand-written digits, CC BY 4.0)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="UCI ML hand-written digits (8x8, values 0..16), as shipped by scikit-learn.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            citation="@misc{uci_digits, author={Alpaydin, E. and Kaynak, C.}, title={Optical Recognition "
            "of Handwritten Digits}, year={1998}, publisher={UCI Machine Learning Repository}}",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(0, 1500), "test": self._generate_examples(1500, 1797)}

    def _generate_examples(self, lo, hi):
        images, labels = digits_arrays()
        for i in range(lo, hi):
            yield i, {"image": images[i], "label": labels[i]}


def prepare(builder_cls: type, data_dir: str, file_format: str = "tfrecord", num_shards: int | None = None) -> str:
    """Returns ``data_dir`` after preparing ``builder_cls`` there in ``file_format`` (no network),
    each split in ``num_shards`` files (None: TFDS decides; one file for these small splits)."""
    builder = builder_cls(data_dir=data_dir, file_format=file_format)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False, num_shards=num_shards))
    return data_dir


def tfrecord_frames(data: bytes) -> list[int]:
    """Returns the byte offsets where each TFRecord frame starts, and the end."""
    import struct

    at = [0]
    while at[-1] < len(data):
        (length,) = struct.unpack_from("<Q", data, at[-1])
        at.append(at[-1] + 16 + length)
    return at


def rewrite_file(path: str, how: str, in_place: bool = False) -> None:
    """Rewrites a prepared train file with other valid records: ``how`` "same size" (a tfrecord's
    frames in reverse order; an array_record's own bytes written again) or "other size" (a
    tfrecord's last frame dropped; an array_record the same shard of the test split). ``in_place`` writes
    over the open file; else a new file replaces it (a new inode, as ``cp`` then ``mv`` do)."""
    with open(path, "rb") as f:
        data = f.read()
    if ".tfrecord-" in os.path.basename(path):
        frames = tfrecord_frames(data)
        parts = [data[a:b] for a, b in itertools.pairwise(frames)]
        new = b"".join(parts[::-1]) if how == "same size" else b"".join(parts[:-1])
    elif how == "same size":
        new = data
    else:
        with open(path.replace("-train.", "-test."), "rb") as f:  # other records (an array_record's size is
            new = f.read()  # a multiple of 64 KiB: the same size here)
    target = path if in_place else path + ".new"
    with open(target, "wb") as f:
        f.write(new)
    if not in_place:
        os.replace(target, path)


def prepared_digits(file_format: str = "array_record") -> str:
    """Returns a temporary data_dir holding ``dfn_digits`` (for docs and quick experiments)."""
    return prepare(DfnDigits, os.path.join(tempfile.mkdtemp(prefix="dfn_digits_"), file_format), file_format)


PARITY_N = 12
PARITY_LABELS = ("a", "b", "c")


def parity_jpeg(i: int) -> bytes:
    """Returns record ``i``'s JPEG bytes: the same bytes go into the HF and the TFDS copy."""
    import io

    import PIL.Image

    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def parity_record(i: int) -> dict:
    """Returns record ``i`` of ``dfn_parity`` (an image, a label and a text) with the image as JPEG bytes."""
    return {"idx": i, "image": parity_jpeg(i), "label": i % 3, "text": "ünï " * (i % 4) + str(i)}


class DfnParity(tfds.core.GeneratorBasedBuilder):
    """JPEG images, labels and text: built as HF and as TFDS to check both give the same arrays."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "idx": tfds.features.Scalar(np.int64),
                "image": tfds.features.Image(shape=(8, 6, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=list(PARITY_LABELS)),
                "text": tfds.features.Text(),
                "tags": tfds.features.Tensor(shape=(2,), dtype=np.str_),  # excluded by the parity test
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        import io

        for i in range(PARITY_N):
            rec = parity_record(i)
            # The image is stored as given (no re-encoding), so HF and TFDS hold the same bytes.
            yield i, {**rec, "image": io.BytesIO(rec["image"]), "tags": np.array([f"t{i}".encode(), b"x"], dtype=object)}


NESTED_RECORDS = (
    {"x": [[1, 2], []], "t": [["ab", "é"], []], "b": [[b"a\x00"], []], "lb": [b"a\x00", b"\x00"], "seq": [5]},
    {"x": [], "t": [], "b": [], "lb": [], "seq": []},
    {"x": [[3]], "t": [[""]], "b": [[b"\x00", b"xy"]], "lb": [b"\x00\x00"], "seq": [6, 7]},
)


class DfnNested(tfds.core.GeneratorBasedBuilder):
    """Lists of lists of numbers, text and bytes (ragged ``tf.RaggedTensor``s in tf.data) beside
    one-level lists (padded in tf.data); bytes end in NUL bytes. Records keep their order."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        F = tfds.features
        return tfds.core.DatasetInfo(
            builder=self,
            features=F.FeaturesDict({
                "x": F.Sequence(F.Sequence(np.int16)),
                "t": F.Sequence(F.Sequence(F.Text())),
                "b": F.Sequence(F.Sequence(F.Tensor(shape=(), dtype=np.object_))),
                "lb": F.Sequence(F.Tensor(shape=(), dtype=np.object_)),
                "seq": F.Sequence(np.int32),
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        yield from enumerate(NESTED_RECORDS)
