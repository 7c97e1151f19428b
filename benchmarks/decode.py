"""Image decode rates: our conversion path against PIL and the maintained decoder libraries.

Images are generated locally (no download): MNIST-sized 28x28 greyscale PNGs (20,000),
CIFAR-sized 32x32 RGB PNGs (2,000), 256x256 RGB PNGs (200), and JPEGs (quality 90) of the
28x28 and 256x256 sets. Scenario ``decode``, one case per set, unit images/s, measured
interleaved (one pass over the set per sample). Every row turns the encoded bytes into one
``(N, H, W[, C])`` array (decode + ``np.stack``), so every row does the same work; ``note``
says whether its pixels equal PIL's for every image (PIL is the reference: HF's own reader).

- ``datarax_fn``: ``Converter({"im": Image()})`` on the encoded column, default threads;
- ``PIL``, ``pyspng``, ``cv2`` (opencv-python-headless), ``imagecodecs``, ``simplejpeg``:
  each library's decode call, single-threaded, where it is installed.

Targets: ``datarax_fn`` >= 1.0x the fastest exact library, for PNG and for JPEG.
"""

from __future__ import annotations

import statistics
import io
import sys

import numpy as np
import PIL.Image

from _harness import interleaved, paired_ratio, parse_args, report, row, target, timed_rate

from datarax_fn import _convert as cv


def encode(arrays: np.ndarray, fmt: str) -> list[bytes]:
    out = []
    for a in arrays:
        buf = io.BytesIO()
        PIL.Image.fromarray(a).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


def pil(b: bytes) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(b)))


def candidates() -> dict[str, object]:
    """Returns ``{name: decode(bytes) -> array}`` for every installed candidate library."""
    out: dict[str, object] = {"PIL": pil}
    try:
        import pyspng

        out["pyspng (PNG only)"] = lambda b: pyspng.load(b)
    except ImportError:
        pass
    try:
        import cv2

        def cv2_decode(b: bytes) -> np.ndarray:
            a = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)
            return a[:, :, ::-1] if a.ndim == 3 and a.shape[2] == 3 else a

        out["cv2"] = cv2_decode
    except ImportError:
        pass
    try:
        import imagecodecs

        out["imagecodecs"] = lambda b: imagecodecs.imread(b)
    except ImportError:
        pass
    try:
        import simplejpeg

        out["simplejpeg (JPEG only)"] = lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB")
    except ImportError:
        pass
    return out


def main() -> None:
    args = parse_args(__doc__)
    k = 10 if args.quick else 1
    rng = np.random.default_rng(0)
    digits = (rng.random((20_000 // k, 28, 28)) ** 3 * 255).astype(np.uint8)  # mostly dark, like MNIST
    small = rng.integers(0, 256, (2_000 // k, 32, 32, 3), dtype=np.uint8)
    smooth = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    large = np.stack([np.roll(smooth, i, axis=1) for i in range(200 // k)])
    sets = {
        "PNG 28x28 L": encode(digits, "PNG"),
        "PNG 32x32 RGB": encode(small, "PNG"),
        "PNG 256x256 RGB": encode(large, "PNG"),
        "JPEG 28x28 L": encode(digits, "JPEG"),
        "JPEG 256x256 RGB": encode(large, "JPEG"),
    }
    libs = candidates()
    rows = []
    best: dict[str, list[tuple[float, float, str]]] = {"PNG": [], "JPEG": []}
    for name, data in sets.items():
        ref = np.stack([pil(b) for b in data])
        png = name.startswith("PNG")
        fns = {"datarax_fn": lambda d=data: cv.Converter({"im": cv.Image()})({"im": d})["im"]}
        for lib, fn in libs.items():
            if ("PNG only" in lib and not png) or ("JPEG only" in lib and png):
                continue
            fns[lib] = lambda d=data, fn=fn: np.stack([fn(b) for b in d])
        exact = {k: np.array_equal(np.asarray(f()).reshape(ref.shape), ref) for k, f in fns.items()}
        samples = interleaved({k: (lambda f=f: timed_rate(f, len(data), 0.0, 1)) for k, f in fns.items()},
                              3 if args.quick else 5, warmup=False)  # the exactness check above warmed each row
        for k, s in samples.items():
            rows.append(row("decode", name, k, "images/s", s, note="exact" if exact[k] else "NOT equal to PIL"))
        peers = [(statistics.median(s), k) for k, s in samples.items() if k != "datarax_fn" and exact[k]]
        if peers:
            top, who = max(peers)
            best["PNG" if png else "JPEG"].append((paired_ratio(samples["datarax_fn"], samples[who]), top, f"{name}: {who}"))
    for fmt, ratios in best.items():
        if ratios:
            worst = min(ratios)
            rows.append(target(f"{fmt} decode / fastest exact library (worst set)", worst[0], ">=", 1.0,
                               note=f"{worst[2]}; median of per-round ratios"))
    report("Image decode, images/s (decode + stack into one array)", rows, args)


if __name__ == "__main__":
    sys.exit(main())
