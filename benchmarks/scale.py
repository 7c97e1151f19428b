"""Per-batch cost as N grows from 10^4 to 10^7 small records (float32[4] + int32), batch 128.

Rows (scenario ``scale``, case ``N=...``, unit us/batch): ``datarax_fn`` is shuffled
``get_batch`` in ``jit(lax.scan)``; beside it the sequential stream in scan, the shuffled
eager per-step call, and ``jnp.take`` over a precomputed permutation in scan (O(N) memory).
The shuffle is O(1) memory and O(1) work per record, so its cost should stay flat in N;
what grows is the cache misses of random rows, which the take baseline pays too.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from _harness import interleaved, parse_args, report, row, timed_rate

import datarax_fn as dfn

B = 128
STEPS = 200


def small_records(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.random((n, 4), dtype=np.float32), "y": rng.integers(0, 10, n, dtype=np.int32)}


def consume(batch) -> jax.Array:
    return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(batch))


def cases(arrays: dict[str, np.ndarray], seconds: float) -> dict:
    """Returns ``{loader: sample()}``; each sample is microseconds per batch."""

    def body(s, _):
        s, batch = dfn.get_batch(s, B)
        return s, consume(batch)

    scan = dfn.jit_step(lambda s: jax.lax.scan(body, s, None, length=STEPS))
    boxes = {m: [dfn.from_arrays(arrays, shuffle=m != "seq")] for m in ("shuf", "seq", "eager")}

    def in_scan(mode):
        def run():
            boxes[mode][0], out = scan(boxes[mode][0])
            return out

        return run

    def eager():
        boxes["eager"][0], batch = dfn.get_batch(boxes["eager"][0], B)
        return batch

    n = len(arrays["y"])
    data = jax.tree.map(jnp.asarray, arrays)
    perm = jnp.asarray(np.random.default_rng(1).permutation(n).astype(np.int32))

    @jax.jit
    def take(data, perm, start):
        def body(i, _):
            idx = jax.lax.dynamic_slice_in_dim(perm, (start + i * B) % (n - B + 1), B)
            return i + 1, consume(jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data))

        return jax.lax.scan(body, 0, None, length=STEPS)[1]

    pos = [0]

    def take_run():
        pos[0] = (pos[0] + STEPS * B) % n
        return take(data, perm, pos[0])

    def us(fn, per_call):
        return lambda: 1e6 / timed_rate(fn, per_call, seconds, 10_000, jax.block_until_ready)

    return {"datarax_fn": us(in_scan("shuf"), STEPS),
            "datarax_fn sequential, in scan": us(in_scan("seq"), STEPS),
            "datarax_fn shuffled, per step (eager)": us(eager, 1),
            "jnp.take over a precomputed permutation, in scan": us(take_run, STEPS)}


def main() -> None:
    args = parse_args(__doc__)
    warnings.simplefilter("ignore", dfn.DatasetCopyWarning)
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000, 10_000_000)
    repeats = 3 if args.quick else 5
    rows = []
    for n in sizes:
        samples = interleaved(cases(small_records(n), 0.05 if args.quick else 0.25), repeats)
        for loader, s in samples.items():
            rows.append(row("scale", f"N={n}", loader, "us/batch", s, note="shuffled unless named"))
    report(f"Per-batch cost against N, batch {B}", rows, args)


if __name__ == "__main__":
    main()
