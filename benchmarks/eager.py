"""Eager-source throughput against its peers, side by side in one process, batch 128.

Dataset: 60,000 x 28 x 28 uint8 images plus int32 labels (MNIST-shaped). Scenarios:

- ``eager (a) per step``: one call per step from Python. ``datarax_fn`` is eager
  ``dfn.get_batch`` (a compiled kernel per call); ``datarax_fn jit_step`` the documented
  jitted step; the peers yield host NumPy batches (NumPy fancy indexing, grain, tf.data, HF).
- ``eager (b) in scan``: ``get_batch`` inside ``jit(lax.scan)`` for a whole epoch (468
  batches), against ``jnp.take`` over a precomputed permutation and the memcpy ceiling (a
  contiguous slice). Every row consumes each batch the same way (a sum of every byte).

Targets (rows of scenario ``targets``): eager shuffled <= 1.5x eager sequential per call;
sequential in-scan <= shuffled in-scan per batch; in-scan shuffled >= 1.0x the take baseline.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from _harness import interleaved, paired_ratio, parse_args, rates, report, row, steppers, target, timed_rate
from _peers import available, mnist_like

import datarax_fn as dfn

B = 128


def consume(batch) -> jax.Array:
    return sum(jnp.sum(x, dtype=jnp.int32) for x in jax.tree.leaves(batch))


def per_step(arrays, shuffle: bool) -> dict:
    """Returns ``{loader: sample()}`` for scenario (a): each sample is batches/s over many calls."""
    eager, jitted = steppers(lambda: dfn.from_arrays(arrays, shuffle=shuffle), B)
    return {"datarax_fn": eager, "datarax_fn jit_step": jitted}


def in_scan(arrays, shuffle: bool, steps: int) -> dict:
    """Returns ``{loader: run()}`` for scenario (b): ``run`` consumes ``steps`` batches in one scan."""

    def body(s, _):
        s, batch = dfn.get_batch(s, B)
        return s, consume(batch)

    run = dfn.jit_step(lambda s: jax.lax.scan(body, s, None, length=steps))
    box = [dfn.from_arrays(arrays, shuffle=shuffle)]

    def ours():
        box[0], out = run(box[0])
        return out

    data = jax.tree.map(jnp.asarray, arrays)
    n = len(arrays["label"])
    perm = jnp.asarray(np.random.default_rng(1).permutation(n).astype(np.int32))

    @jax.jit
    def take(data, perm):
        def body(i, _):
            idx = jax.lax.dynamic_slice_in_dim(perm, i * B, B)
            return i + 1, consume(jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data))

        return jax.lax.scan(body, 0, None, length=steps)[1]

    @jax.jit
    def memcpy(data):
        def body(i, _):
            return i + 1, consume(jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, i * B, B), data))

        return jax.lax.scan(body, 0, None, length=steps)[1]

    out = {"datarax_fn": ours}
    if shuffle:
        out["jnp.take over a precomputed permutation"] = lambda: take(data, perm)
    else:
        out["memcpy ceiling (contiguous slice)"] = lambda: memcpy(data)
    return out


def main() -> None:
    args = parse_args(__doc__)
    repeats = 3 if args.quick else 7
    calls = 100 if args.quick else 400
    seconds = 0.1 if args.quick else 0.4
    steps = 60_000 // B
    warnings.simplefilter("ignore", dfn.DatasetCopyWarning)
    arrays = mnist_like()
    # Both streams and every loader of a scenario are sampled round-robin in one phase, so
    # the ratios the targets take (shuffled against sequential) see the same machine load.
    steps_fns, scan_fns = {}, {}
    for shuffle in (False, True):
        case = "shuffled" if shuffle else "sequential"
        fns = per_step(arrays, shuffle)
        if shuffle:
            fns.update(available(arrays, B, shuffle, quick=args.quick))
        steps_fns.update({(case, k): (lambda f=f: timed_rate(f, 1, seconds, calls, jax.block_until_ready)) for k, f in fns.items()})
        scan_fns.update({(case, k): (lambda f=f: rates(f, steps, 1, 1, jax.block_until_ready, warmup=False)[0])
                         for k, f in in_scan(arrays, shuffle, steps).items()})
    a_samples, b_samples = interleaved(steps_fns, repeats), interleaved(scan_fns, repeats)
    rows = [row("eager (a) per step", case, loader, "batches/s", s) for (case, loader), s in a_samples.items()]
    rows += [row("eager (b) in scan", case, loader, "batches/s", s, note=f"{steps} batches per scan")
             for (case, loader), s in b_samples.items()]
    ours = ("shuffled", "datarax_fn")
    note = "median of per-round ratios"
    rows += [
        target("eager per-step shuffled / sequential (time per call)",
               paired_ratio(a_samples[("sequential", "datarax_fn")], a_samples[ours]), "<=", 1.5, note),
        target("sequential / shuffled in scan (time per batch)",
               paired_ratio(b_samples[ours], b_samples[("sequential", "datarax_fn")]), "<=", 1.0, note),
        target("in-scan shuffled / jnp.take over a precomputed permutation (speed)",
               paired_ratio(b_samples[ours], b_samples[("shuffled", "jnp.take over a precomputed permutation")]), ">=", 1.0, note),
    ]
    report(f"Eager throughput, batch {B}, 60,000 x 28 x 28 uint8 + int32, {jax.devices()[0].platform}", rows, args)


if __name__ == "__main__":
    main()
