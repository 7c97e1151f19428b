"""Image decode rates: our conversion path against PIL and the candidate decoder libraries.

Run: ``.venv/bin/python benchmarks/decode.py [--quick]``. Not run in CI.

Images are generated locally (no download): 60,000 MNIST-sized 28x28 greyscale PNGs, 2,000
CIFAR-sized 32x32 RGB PNGs, 500 256x256 RGB PNGs, and JPEGs of the same sizes (4:2:0). Each
row reports images/s (best of 3) and whether its pixels equal PIL's for every image (JPEG:
PIL is the reference, HF's own reader; PNG: PIL and the pixels written). Rows:

- ``datarax_fn`` - ``Converter({"im": Image()})`` on the encoded column (decode + stack);
- ``before (8788acf)`` - the hand-written zlib + NumPy PNG fast path this replaced, loaded
  from git history (skipped when git or the commit is unavailable);
- ``PIL``, ``pyspng``, ``cv2`` (opencv-python-headless), ``imagecodecs``, ``simplejpeg``:
  each library's decode call alone, single-threaded, where it is installed.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
import types

import numpy as np
import PIL.Image

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


def old_convert() -> types.ModuleType | None:
    """Returns the conversion module of commit 8788acf (the hand-written PNG path), or None."""
    try:
        src = subprocess.run(["git", "show", "8788acf:datarax_fn/_convert.py"], capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("old_convert")
    sys.modules["old_convert"] = mod  # dataclasses look their module up
    exec(compile(src, "old_convert.py", "exec"), mod.__dict__)  # noqa: S102 (our own history)
    return mod


def rate(fn, n: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10x fewer images")
    args = ap.parse_args()
    k = 10 if args.quick else 1
    rng = np.random.default_rng(0)
    digits = (rng.random((60_000 // k, 28, 28)) ** 3 * 255).astype(np.uint8)  # mostly dark, like MNIST
    small = rng.integers(0, 256, (2_000 // k, 32, 32, 3), dtype=np.uint8)
    smooth = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    large = np.stack([np.roll(smooth, i, axis=1) for i in range(500 // k)])
    sets = {
        "PNG 28x28 L": (encode(digits, "PNG"), digits),
        "PNG 32x32 RGB": (encode(small, "PNG"), small),
        "PNG 256x256 RGB": (encode(large, "PNG"), large),
        "JPEG 28x28 L": (encode(digits, "JPEG"), None),
        "JPEG 256x256 RGB": (encode(large, "JPEG"), None),
    }
    libs = candidates()
    old = old_convert()
    print(f"{'images':<18} {'decoder':<24} {'images/s':>10}  exact")
    for name, (data, pixels) in sets.items():
        ref = [pil(b) for b in data]
        png = name.startswith("PNG")
        rows = {"datarax_fn": lambda d=data: cv.Converter({"im": cv.Image()}, num_threads=1)({"im": d})["im"]}
        if old is not None:
            rows["before (8788acf)"] = lambda d=data: old.convert({"im": d}, {"im": old.Image()}, num_threads=1, progress=False)["im"]
        for lib, fn in libs.items():
            if ("PNG only" in lib and not png) or ("JPEG only" in lib and png):
                continue
            rows[lib] = lambda d=data, fn=fn: [fn(b) for b in d]
        for row, fn in rows.items():
            out = fn()
            got = [np.asarray(o).reshape(r.shape) if np.asarray(o).size == r.size else np.asarray(o) for o, r in zip(out, ref)]
            exact = all(g.shape == r.shape and np.array_equal(g, r) for g, r in zip(got, ref))
            if pixels is not None:
                exact = exact and all(np.array_equal(g.reshape(p.shape), p) for g, p in zip(got, pixels))
            print(f"{name:<18} {row:<24} {rate(fn, len(data)):>10,.0f}  {exact}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
