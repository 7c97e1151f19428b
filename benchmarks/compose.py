"""Mixing and packing records/s against grain and HF, side by side in one process.

Data: two token corpora, A (20,000 records) and B (10,000), each record a list of 1..128
int32 tokens with lognormal lengths (mean about 40), held as 128 zero-padded tokens plus
a length where a loader stores them so. Scenarios:

- ``mix (memory)``: a 70/30 mixture of A and B in memory, batch 128, records/s. ``dfn.mix`` of
  two eager sources per ``get_batch`` call and in a ``jit_step``; grain ``MapDataset.mix``
  (indexed, batched by grain); HF ``interleave_datasets(probabilities=...)`` over the two
  Arrow ``Dataset``s, read with ``.iter(batch_size=128)`` in NumPy format.
- ``mix (stream)``: the same mixture over local parquet files: ``dfn.mix`` of two
  ``from_hf(..., streaming=True)`` streams against HF ``interleave_datasets`` of the two
  streaming ``IterableDataset``s (``.iter(batch_size=128)``, NumPy format; ragged lists).
- ``pack``: corpus A packed first-fit into rows of 512 tokens, 64 bins, rows/s and records/s:
  ``dfn.pack`` over the eager source against grain's ``FirstFitPackIterDataset``
  (``shuffle_bins=False``) over the same records.
"""

from __future__ import annotations

import os
import tempfile
import time

import jax
import numpy as np
from _harness import interleaved, parse_args, report, row, steppers

import datarax_fn as dfn

B, WIDTH, ROW, BINS = 128, 128, 512, 64


def corpus(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lens = np.clip(rng.lognormal(3.4, 0.7, n).astype(np.int32), 1, WIDTH)
    tokens = np.where(np.arange(WIDTH)[None] < lens[:, None], rng.integers(1, 32_000, (n, WIDTH)), 0)
    return {"tokens": tokens.astype(np.int32), "tokens_length": lens}


def lists(arrays: dict[str, np.ndarray]) -> list[list[int]]:
    return [t[:n].tolist() for t, n in zip(arrays["tokens"], arrays["tokens_length"])]


def rate(next_batch, per_call: int, seconds: float) -> float:
    """Returns one sample: records/s of ``next_batch`` over about ``seconds``."""
    out = next_batch()
    jax.block_until_ready(out)
    t, calls = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        out = next_batch()
        calls += 1
    jax.block_until_ready(out)
    return calls * per_call / (time.perf_counter() - t)


def cycle(make):
    """Returns ``next()`` over ``make()``'s iterator, restarting it when it ends."""
    box = [iter(make())]

    def nxt():
        try:
            return next(box[0])
        except StopIteration:
            box[0] = iter(make())
            return next(box[0])

    return nxt


def mix_memory(a, b) -> dict:
    import datasets as hd
    import grain.python as gp

    # Each mixture owns its sources: jit_step donates the data of the state it steps.
    sources = lambda: [dfn.from_arrays(a, shuffle=True, seed=1), dfn.from_arrays(b, shuffle=True, seed=2)]
    eager, jitted = steppers(lambda: dfn.mix(sources(), [0.7, 0.3]), B)
    rows = lambda x: [{k: v[i] for k, v in x.items()} for i in range(len(x["tokens"]))]
    ga = gp.MapDataset.source(rows(a)).shuffle(seed=1)
    gb = gp.MapDataset.source(rows(b)).shuffle(seed=2)
    grain_next = cycle(lambda: gp.MapDataset.mix([ga, gb], [0.7, 0.3]).batch(B))
    features = hd.Features({"tokens": hd.List(hd.Value("int32"))})
    ha = hd.Dataset.from_dict({"tokens": lists(a)}, features=features).shuffle(seed=1)
    hb = hd.Dataset.from_dict({"tokens": lists(b)}, features=features).shuffle(seed=2)
    mixed = hd.interleave_datasets([ha, hb], probabilities=[0.7, 0.3], seed=0,
                                   stopping_strategy="all_exhausted").with_format("numpy")
    hf_next = cycle(lambda: mixed.iter(batch_size=B, drop_last_batch=True))
    return {"datarax_fn mix (get_batch)": eager, "datarax_fn mix (jit_step)": jitted,
            "grain MapDataset.mix": grain_next, "HF interleave_datasets": hf_next}


def mix_stream(a, b, tmp: str) -> dict:
    import datasets as hd

    features = hd.Features({"tokens": hd.List(hd.Value("int32"))})
    folders = []
    for name, arrays in (("a", a), ("b", b)):
        folder = os.path.join(tmp, name)
        os.makedirs(folder, exist_ok=True)
        hd.Dataset.from_dict({"tokens": lists(arrays)}, features=features).to_parquet(os.path.join(folder, "train.parquet"))
        folders.append(folder)
    streams = [dfn.from_hf(f, split="train", streaming=True, max_length=WIDTH, cache_dir=os.path.join(tmp, "c"))
               for f in folders]
    box = [dfn.mix(streams, [0.7, 0.3])]

    def ours():
        box[0], batch = dfn.get_batch(box[0], B)
        return batch

    its = [hd.load_dataset(f, split="train", streaming=True) for f in folders]
    mixed = hd.interleave_datasets(its, probabilities=[0.7, 0.3], seed=0,
                                   stopping_strategy="all_exhausted").with_format("numpy")
    hf_next = cycle(lambda: mixed.iter(batch_size=B, drop_last_batch=True))
    return {"datarax_fn mix of streams": ours, "HF interleave_datasets (streaming)": hf_next}


def pack(a) -> tuple[dict, dict]:
    """Returns ``({loader: next_rows}, {loader: records per row})``."""
    import grain.python as gp
    from grain._src.python.dataset.transformations.packing import (
        FirstFitPackIterDataset,
    )

    box = [dfn.pack(dfn.from_arrays(a), {"tokens": ROW}, num_bins=BINS)]

    def ours():
        box[0], rows = dfn.get_batch(box[0], B)
        return rows

    records = [{"tokens": t} for t in (np.asarray(x, np.int32) for x in lists(a))]
    ds = gp.MapDataset.source(records).repeat().to_iter_dataset()
    it = iter(FirstFitPackIterDataset(ds, length_struct={"tokens": ROW}, num_packing_bins=BINS, shuffle_bins=False))
    theirs = lambda: [next(it) for _ in range(B)]
    fill = float(np.mean(a["tokens_length"]))
    return {"datarax_fn pack": ours, "grain FirstFitPackIterDataset": theirs}, fill


def main() -> None:
    args = parse_args(__doc__)
    repeats, seconds = (2, 0.5) if args.quick else (5, 2.0)
    a, b = corpus(20_000, 0), corpus(10_000, 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scenarios = {"mix (memory)": (mix_memory(a, b), B), "mix (stream)": (mix_stream(a, b, tmp), B)}
        packers, mean_len = pack(a)
        scenarios["pack"] = (packers, B)
        for scenario, (fns, per_call) in scenarios.items():
            samples = interleaved({k: (lambda f=f, n=per_call: rate(f, n, seconds)) for k, f in fns.items()}, repeats)
            for loader, s in samples.items():
                unit = "rows/s" if scenario == "pack" else "records/s"
                note = f"about {ROW / mean_len:.1f} records per row (fill 1 row: {ROW} tokens)" if scenario == "pack" else ""
                rows.append(row(scenario, "70/30 of 20k + 10k token records" if scenario != "pack"
                                else f"first fit, {ROW} tokens, {BINS} bins", loader, unit, s, note))
    report("Mixing and packing, batch 128", rows, args)


if __name__ == "__main__":
    main()
