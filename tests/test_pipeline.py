"""Pipeline: step / scan / iterate semantics, position-keyed stages, resume, no-copy, checkpoints."""

from __future__ import annotations

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_fresh
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn._pipeline.pipeline import record_keys

N = 23
DATA = {"x": np.arange(N, dtype=np.int32), "image": np.arange(N * 4 * 4, dtype=np.uint8).reshape(N, 4, 4, 1)}


def make(shuffle=True, batch_size=5, seed=7, aug=True):
    stages = [dfn.cast("image")]
    if aug:
        stages += [dfn.random_crop("image", padding=1), dfn.random_flip("image")]
    return dfn.Pipeline(dfn.from_arrays(DATA, shuffle=shuffle, seed=seed), stages, batch_size)


def pointer(pipe):
    return pipe.source.data["image"].unsafe_buffer_pointer()


def test_step_is_get_batch_then_stages_with_a_position_key():
    pipe = make()
    pipe, _ = dfn.step(pipe)  # start mid-epoch
    source = pipe.source
    new, batch = dfn.step(pipe)
    src2, raw = dfn.get_batch(source, 5)
    want = pipe.stages(raw, record_keys(pipe.seed, source.epoch, source.index, 5, N))
    chex.assert_trees_all_equal(batch, want)
    assert int(new.source.index) == int(src2.index) == 10
    # pure: stepping the same pipeline again gives the same batch
    chex.assert_trees_all_equal(dfn.step(pipe)[1], batch)


def test_seed_defaults_to_the_source_seed_and_can_be_set():
    assert int(make(seed=7).seed) == 7
    other = dfn.Pipeline(make().source, make().stages, 5, seed=8)
    assert int(other.seed) == 8
    assert not np.array_equal(dfn.step(make())[1]["image"], dfn.step(other)[1]["image"])


def test_eager_jit_scan_and_fori_loop_agree():
    pipe = make()
    eager, p = [], pipe
    for _ in range(7):
        p, b = dfn.step(p)
        eager.append(b)
    eager = jax.tree.map(lambda *xs: jnp.stack(xs), *eager)

    jitted, p2 = [], pipe
    step = jax.jit(dfn.step)
    for _ in range(7):
        p2, b = step(p2)
        jitted.append(b)
    chex.assert_trees_all_equal(jax.tree.map(lambda *xs: jnp.stack(xs), *jitted), eager)

    p3, _, outs = dfn.scan(pipe, lambda c, b: (c, b), 0, length=7)
    chex.assert_trees_all_equal(outs, eager)
    assert dfn.cursor(p3) == dfn.cursor(p)

    def body(i, carry):
        pipe, acc = carry
        pipe, b = dfn.step(pipe)
        return pipe, acc.at[i].set(b["image"])

    p4, acc = jax.jit(lambda pipe: jax.lax.fori_loop(0, 7, body, (pipe, jnp.zeros_like(eager["image"]))))(pipe)
    chex.assert_trees_all_equal(acc, eager["image"])
    assert dfn.cursor(p4) == dfn.cursor(p)


def test_augmentations_replay_exactly_after_resume():
    pipe = make()
    for _ in range(6):  # crosses an epoch boundary (N=23, batch 5)
        pipe, _ = dfn.step(pipe)
    cursor = dfn.cursor(pipe)
    after = [dfn.step(pipe)[1]]
    p = dfn.step(pipe)[0]
    after.append(dfn.step(p)[1])

    fresh = dfn.restore_cursor(make(), cursor)  # a new process would build exactly this
    resumed = [dfn.step(fresh)[1]]
    resumed.append(dfn.step(dfn.step(fresh)[0])[1])
    chex.assert_trees_all_equal(resumed, after)


def test_stage_keys_depend_on_position_only_not_on_history():
    # Reach stream position 15 by 3 steps of 5 and by restoring the cursor directly.
    walked = make()
    for _ in range(3):
        walked, _ = dfn.step(walked)
    jumped = make()
    jumped = eqx.tree_at(lambda p: p.source.index, jumped, jnp.int32(15))
    chex.assert_trees_all_equal(dfn.step(walked)[1], dfn.step(jumped)[1])
    # a different position gives different augmentations of the same records
    data = [np.asarray(jax.random.key_data(record_keys(s, e, p, 1, None)[0])) for s, e, p in [(0, 0, 5), (0, 1, 5), (0, 0, 6), (1, 0, 5)]]
    assert len({d.tobytes() for d in data}) == 4


def test_scan_keeps_the_dataset_in_place():
    pipe = make()
    before = pointer(pipe)
    pipe, total, _ = dfn.scan(pipe, lambda c, b: (c + b["x"].sum(), None), jnp.int32(0), length=9)
    assert pointer(pipe) == before

    @dfn.jit_step
    def epoch(total, pipe):
        pipe, total, _ = dfn.scan_epoch(pipe, lambda c, b: (c + b["x"].sum(), None), total)
        return total, pipe

    total, pipe = epoch(total, pipe)
    total, pipe = epoch(total, pipe)
    assert pointer(pipe) == before


def test_scan_epoch_runs_floor_n_over_b_steps_and_carries_the_remainder():
    pipe = make(shuffle=False, aug=False)
    assert dfn.steps_per_epoch(pipe) == 4
    pipe, _, xs = dfn.scan_epoch(pipe, lambda c, b: (c, b["x"]), 0)
    assert xs.shape == (4, 5) and np.asarray(xs).ravel().tolist() == list(range(20))
    pipe, _, xs = dfn.scan_epoch(pipe, lambda c, b: (c, b["x"]), 0)
    assert np.asarray(xs)[0].tolist() == [20, 21, 22, 0, 1]  # the stream straddles epochs


def test_pipeline_is_a_loop_carry_without_weak_types():
    pipe = make()
    out = jax.eval_shape(lambda p: dfn.step(p)[0], pipe)
    chex.assert_trees_all_equal_shapes_and_dtypes(out, pipe)
    assert not any(getattr(x, "weak_type", False) for x in jax.tree.leaves(pipe))


@settings(max_examples=12)
@given(n=st.integers(1, 30), batch_size=st.integers(1, 12), shuffle=st.booleans(), epochs=st.integers(1, 2), start=st.integers(0, 29))
def test_iterate_remainder_modes(n, batch_size, shuffle, epochs, start):
    start %= n
    source = dfn.from_arrays({"x": np.arange(n, dtype=np.int32)}, shuffle=shuffle, seed=3)
    source = dfn.restore_cursor(source, {**dfn.cursor(source), "index": start})
    pipe = dfn.Pipeline(source, (), batch_size)
    # the records each pass should cover: rest of the current epoch, then whole epochs
    passes = [np.asarray(dfn.get_batch_at(source, 0, n)["x"])[start:]]
    for e in range(1, epochs):
        passes.append(np.asarray(dfn.get_batch_at(source, e * n, n)["x"]))

    drop = [b["x"] for _, b in dfn.iterate(pipe, epochs=epochs, remainder="drop")]
    partial = [b["x"] for _, b in dfn.iterate(pipe, epochs=epochs, remainder="partial")]
    padded = [b for _, b in dfn.iterate(pipe, epochs=epochs, remainder="pad")]

    assert all(len(b) == batch_size for b in drop)
    assert all(b["x"].shape == (batch_size,) and b["mask"].shape == (batch_size,) for b in padded)
    want = np.concatenate(passes)
    got_partial = np.concatenate([np.asarray(b) for b in partial])
    np.testing.assert_array_equal(got_partial, want)
    got_pad = np.concatenate([np.asarray(b["x"])[np.asarray(b["mask"])] for b in padded])
    np.testing.assert_array_equal(got_pad, want)
    for b in padded:  # padded rows are zeros and only ever at the end
        m = np.asarray(b["mask"])
        assert (np.asarray(b["x"])[~m] == 0).all() and np.array_equal(m, np.sort(m)[::-1])
    kept = np.concatenate([p[: len(p) // batch_size * batch_size] for p in passes])
    np.testing.assert_array_equal(np.concatenate([np.asarray(b) for b in drop]) if drop else np.zeros(0, np.int32), kept)


def test_iterate_yields_checkpointable_states_and_drops_on_plain_iteration():
    pipe = make(shuffle=False, aug=False)
    states = [p for p, _ in dfn.iterate(pipe, remainder="partial")]
    assert [int(s.source.index) for s in states] == [5, 10, 15, 20, 0]
    assert int(states[-1].source.epoch) == 1
    assert [b["x"].tolist()[0] for b in pipe] == [0, 5, 10, 15]  # for batch in pipeline


def test_pad_applies_the_stages_with_one_shape():
    pipe = make(aug=True)
    shapes = {jax.tree.map(lambda x: x.shape, b)["image"] for _, b in dfn.iterate(pipe, remainder="pad")}
    assert shapes == {(5, 4, 4, 1)}


def test_iterate_errors():
    pipe = make()
    with pytest.raises(ValueError, match="remainder"):
        list(dfn.iterate(pipe, remainder="nope"))
    with pytest.raises(ValueError, match="batch_size is 5"):
        dfn.iterate(pipe, 4)
    with pytest.raises(ValueError, match="epochs"):
        dfn.iterate(pipe, epochs=0)
    bad = dfn.Pipeline(dfn.from_arrays({"mask": np.zeros(3, bool)}), (), 2)
    with pytest.raises(ValueError, match="already has a 'mask'"):
        list(dfn.iterate(bad, remainder="pad"))
    with pytest.raises(ValueError, match="batch_size"):
        dfn.Pipeline(pipe.source, (), 0)
    with pytest.raises(TypeError, match="stats"):
        dfn.Pipeline(pipe.source, (), 2, stats=3)


def test_generic_functions_and_cursor_roundtrip():
    pipe = make()
    assert dfn.num_records(pipe) == N
    spec = dfn.element_spec(pipe)
    assert spec["image"] == jax.ShapeDtypeStruct((4, 4, 1), jnp.float32)
    pipe, _ = dfn.step(pipe)
    c = dfn.cursor(pipe)
    assert c["kind"] == "pipeline" and c["source"]["index"] == 5
    restored = dfn.restore_cursor(make(), c)
    chex.assert_trees_all_equal(dfn.step(restored)[1], dfn.step(pipe)[1])
    with pytest.raises(ValueError, match="kind='eager' and cannot restore a 'pipeline' state"):
        dfn.restore_cursor(make(), c["source"])


def test_donating_the_pipeline_leaves_the_callers_statistics_alive():
    source = dfn.from_arrays(DATA)
    stats = dfn.compute_statistics(source, keys="image")
    pipe = dfn.Pipeline(source, [dfn.normalize("image")], 5, stats=stats)

    @dfn.jit_step
    def run(pipe):
        pipe, _, _ = dfn.scan(pipe, lambda c, b: (c, None), 0, length=2)
        return pipe

    pipe = run(pipe)
    float(stats.mean["image"][0])  # still readable: the pipeline holds its own copies
    assert int(pipe.source.index) == 10


def test_orbax_checkpoint_of_the_whole_pipeline(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    pipe = make()
    pipe, _ = dfn.step(pipe)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "pipe", pipe)
        ckpt.wait_until_finished()
        restored = ckpt.restore(tmp_path / "pipe", make())
    chex.assert_trees_all_equal(dfn.step(restored)[1], dfn.step(pipe)[1])


def test_streaming_source_pipeline_iterates_on_the_host():
    hd = pytest.importorskip("datasets")
    ds = hd.Dataset.from_dict({"x": list(range(10))}, features=hd.Features({"x": hd.Value("int32")}))
    stream = dfn.from_hf(ds, streaming=True, shuffle=True, seed=1)
    pipe = dfn.Pipeline(stream, [dfn.cast("x", scale=2.0)], batch_size=4)
    batches = [b for _, b in dfn.iterate(pipe, epochs=2, remainder="pad")]
    assert len(batches) == 6 and all(b["x"].shape == (4,) for b in batches)
    for e in range(2):
        valid = np.concatenate([np.asarray(b["x"])[np.asarray(b["mask"])] for b in batches[3 * e : 3 * e + 3]])
        assert sorted(valid.tolist()) == [2.0 * i for i in range(10)]
    # the same cursor replays the same batches
    _, first = dfn.step(pipe)
    chex.assert_trees_all_equal(dfn.step(pipe)[1], first)


# ----------------------------------------------------------------------------- one iterate, one get_batch


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 13), size=st.integers(1, 6), shuffle=st.booleans(), epochs=st.integers(1, 2), start=st.integers(0, 12))
def test_iterate_remainder_means_the_same_on_a_source_and_a_pipeline(n, size, shuffle, epochs, start):
    source = dfn.from_arrays({"x": np.arange(n, dtype=np.int32)}, shuffle=shuffle, seed=1)
    source = dfn.restore_cursor(source, {**dfn.cursor(source), "index": start % n})
    pipe = dfn.Pipeline(source, (), size)
    for remainder in ("straddle", "drop", "pad", "partial"):
        plain = [(int(s.index), jax.tree.map(np.asarray, b)) for s, b in dfn.iterate(source, size, epochs=epochs, remainder=remainder)]
        piped = [(int(p.index), jax.tree.map(np.asarray, b)) for p, b in dfn.iterate(pipe, epochs=epochs, remainder=remainder)]
        assert len(plain) == len(piped), remainder
        for (i, a), (j, b) in zip(plain, piped):
            assert i == j and a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    # the defaults: a source straddles, a pipeline drops
    assert len(list(dfn.iterate(source, size, epochs=epochs))) == len(list(dfn.iterate(source, size, epochs=epochs, remainder="straddle")))
    assert len(list(dfn.iterate(pipe, epochs=epochs))) == len(list(dfn.iterate(pipe, epochs=epochs, remainder="drop")))


def test_iterate_pads_a_plain_source_and_a_stream():
    source = dfn.from_arrays({"x": np.arange(5, dtype=np.int32)})
    padded = [b for _, b in dfn.iterate(source, 4, remainder="pad")]
    assert [b["x"].tolist() for b in padded] == [[0, 1, 2, 3], [4, 0, 0, 0]]
    assert [b["mask"].tolist() for b in padded] == [[True] * 4, [True, False, False, False]]
    import datasets

    stream = dfn.from_hf(datasets.Dataset.from_dict({"x": list(range(5))}), streaming=True)
    got = [(b["x"].tolist(), b["mask"].tolist()) for _, b in dfn.iterate(stream, 4, remainder="pad")]
    assert got == [([0, 1, 2, 3], [True] * 4), ([4, 0, 0, 0], [True, False, False, False])]
    assert [b["x"].tolist() for _, b in dfn.iterate(stream, 4, remainder="partial")] == [[0, 1, 2, 3], [4]]
    stream.close()


def test_iterate_option_errors_name_the_fix():
    source = dfn.from_arrays({"x": np.arange(5, dtype=np.int32)})
    with pytest.raises(TypeError, match="size is required"):
        dfn.iterate(source)
    with pytest.raises(ValueError, match="remainder must be one of"):
        dfn.iterate(source, 2, remainder="nope")


def test_get_batch_on_a_pipeline_is_step():
    pipe = make()
    for _ in range(3):  # across the epoch boundary (23 records, batch 5)
        new, want = dfn.step(pipe)
        moved, got = dfn.get_batch(pipe, 5)
        chex.assert_trees_all_equal(got, want)
        assert (int(moved.index), int(moved.epoch)) == (int(new.index), int(new.epoch))
        pipe = new
    _, part = dfn.get_batch(pipe, 3)  # another size: the next 3 records through the stages
    assert part["x"].tolist() == dfn.step(pipe)[1]["x"].tolist()[:3]


def test_generic_functions_a_pipeline_lacks_name_what_to_use():
    pipe = make()
    with pytest.raises(TypeError, match=r"dfn.step\(pipeline\)"):
        dfn.get_batch(pipe, 5, jax.random.key(0))
    with pytest.raises(TypeError, match=r"get_batch_at\(pipeline.source"):
        dfn.get_batch_at(pipe, 0, 5)
    with pytest.raises(TypeError, match=r"get_global_batch\(pipeline.source"):
        dfn.get_global_batch(pipe, 4, None)
    with pytest.raises(TypeError, match="does not implement get_batch") as info:

        class Bare(dfn.Source):
            pass

        dfn.get_batch(Bare(), 2)
    assert "got Bare" not in str(info.value)


# ----------------------------------------------------------------------------- stage fingerprints


def _lambda_pipe(stage):
    return dfn.Pipeline(dfn.from_arrays({"x": np.arange(8, dtype=np.int32)}), [stage], batch_size=2)


def scaled(factor):
    return lambda batch, key: {"x": batch["x"] * factor}


def test_a_cursor_is_refused_on_stages_that_compute_something_else():
    saved = dfn.cursor(dfn.step(_lambda_pipe(lambda b, k: {"x": b["x"] * 2}))[0])
    with pytest.raises(ValueError, match="stages"):  # the same shape of code, another constant
        dfn.restore_cursor(_lambda_pipe(lambda b, k: {"x": b["x"] * 3}), saved)
    restored = dfn.restore_cursor(_lambda_pipe(lambda b, k: {"x": b["x"] * 2}), saved)
    assert dfn.step(restored)[1]["x"].tolist() == [4, 6]
    # closed-over values and defaults are part of what a stage computes
    with pytest.raises(ValueError, match="stages"):
        dfn.restore_cursor(_lambda_pipe(scaled(3)), dfn.cursor(_lambda_pipe(scaled(2))))
    dfn.restore_cursor(_lambda_pipe(scaled(2)), dfn.cursor(_lambda_pipe(scaled(2))))

    def with_default(batch, key, factor=2):
        return {"x": batch["x"] * factor}

    def other_default(batch, key, factor=3):
        return {"x": batch["x"] * factor}

    other_default.__code__ = with_default.__code__.replace(co_name="other_default")
    with pytest.raises(ValueError, match="stages"):
        dfn.restore_cursor(_lambda_pipe(other_default), dfn.cursor(_lambda_pipe(with_default)))


def test_stage_fingerprints_ignore_line_numbers_and_hold_across_processes():
    code = (
        "import numpy as np, jax.numpy as jnp, datarax_fn as dfn\n"
        "SHIFT = 5\n"
        "def shift(batch, key):\n"
        "    return {'x': batch['x'] + SHIFT}\n"
        "stages = [dfn.cast('x'), lambda b, k: {'x': jnp.tanh(b['x'])}, shift, dfn.random_flip('x', axis=0)]\n"
        "pipe = dfn.Pipeline(dfn.from_arrays({'x': np.arange(8, dtype=np.int32)}), stages, batch_size=2)\n"
        "print(dfn.cursor(pipe)['stages'])\n"
    )
    # another process, the code three lines lower, then the global it reads changed
    out = run_fresh("\n\n\n" + code + "SHIFT = 6\nprint(dfn.cursor(pipe)['stages'])\n")
    moved, shifted = out.stdout.split()[-2:]
    namespace: dict = {}
    exec(compile(code.replace("print(", "digest = ("), "in_process", "exec"), namespace)  # noqa: S102
    assert moved == namespace["digest"]
    assert shifted != moved


def test_stages_that_cannot_be_fingerprinted_are_refused_until_named():
    import threading

    lock = threading.Lock()

    def guarded(batch, key):
        with lock:
            return batch

    with pytest.raises(ValueError, match=r"'lock' holds a lock.*dfn.named_stage"):
        dfn.cursor(_lambda_pipe(guarded))
    named = _lambda_pipe(dfn.named_stage(guarded, "guarded-v1"))
    moved = dfn.step(named)[0]
    restored = dfn.restore_cursor(_lambda_pipe(dfn.named_stage(guarded, "guarded-v1")), dfn.cursor(moved))
    assert int(restored.index) == 2
    with pytest.raises(ValueError, match="stages"):
        dfn.restore_cursor(_lambda_pipe(dfn.named_stage(guarded, "guarded-v2")), dfn.cursor(moved))
    with pytest.raises(TypeError, match="non-empty str"):
        dfn.named_stage(guarded, "")


# ----------------------------------------------------------------------------- per-record keys


def _augmented_stream(batch_size, records, shuffle=True, n=12):
    images = np.arange(n * 2 * 3, dtype=np.float32).reshape(n, 2, 3, 1)
    source = dfn.from_arrays({"image": images, "id": np.arange(n, dtype=np.int32)}, shuffle=shuffle, seed=5)
    pipe = dfn.Pipeline(source, [dfn.random_flip("image"), dfn.random_crop("image", padding=1)], batch_size)
    out = []
    while sum(len(b["id"]) for b in out) < records:
        pipe, batch = dfn.step(pipe)
        out.append(jax.tree.map(np.asarray, batch))
    return {k: np.concatenate([b[k] for b in out])[:records] for k in out[0]}


def test_a_record_gets_the_same_flip_at_batch_sizes_4_and_6():
    flips = {}
    for size in (4, 6):
        images = np.arange(12 * 2 * 3, dtype=np.float32).reshape(12, 2, 3, 1)
        pipe = dfn.Pipeline(dfn.from_arrays({"image": images}), [dfn.random_flip("image")], size)
        rows = []
        for _ in range(12 // size):
            pipe, batch = dfn.step(pipe)
            rows.append(np.asarray(batch["image"]))
        got = np.concatenate(rows)
        flips[size] = [int(not np.array_equal(g, x)) for g, x in zip(got, images)]
    assert flips[4] == flips[6]
    assert 0 < sum(flips[4]) < 12  # some records flipped, some not


@settings(max_examples=4, deadline=None)
@given(sizes=st.lists(st.sampled_from([2, 5, 7, 12]), min_size=2, max_size=2, unique=True), shuffle=st.booleans())
def test_augmentations_follow_the_record_not_the_batch(sizes, shuffle):
    # 30 records: two and a half epochs of 12, so batches straddle epoch boundaries
    a, b = (_augmented_stream(size, 30, shuffle) for size in sizes)
    np.testing.assert_array_equal(a["id"], b["id"])
    np.testing.assert_array_equal(a["image"], b["image"])
    # a record is augmented afresh each epoch: its first and second visit differ somewhere
    assert not np.array_equal(a["image"][:12], a["image"][12:24][np.argsort(a["id"][12:24])][a["id"][:12]])


class Scale:
    """A callable object as a stage: its class's code and its attributes identify it."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, batch, key):
        return {"x": batch["x"] * self.factor}


def test_callable_objects_are_fingerprinted_by_their_class_code_and_attributes():
    saved = dfn.cursor(dfn.step(_lambda_pipe(Scale(2)))[0])
    assert int(dfn.restore_cursor(_lambda_pipe(Scale(2)), saved).index) == 2
    with pytest.raises(ValueError, match="stages"):
        dfn.restore_cursor(_lambda_pipe(Scale(3)), saved)


# ----------------------------------------------------------------------------- streams that filter or expand


def _row_changing(mode: str, partitions: int):
    from test_stream_filter import _counts, _stream

    return _stream("random", 30, 4, True, _counts(30, 1, partitions), mode, partitions)


def _keyed(batch, key):
    return {**batch, "key": jax.random.key_data(key)}


def _per_partition(pipe, steps: int, partitions: int) -> tuple[list[list], dfn.Pipeline]:
    """Returns each partition's ``(id, k, key data)`` records in stream order over ``steps`` steps."""
    seqs = [[] for _ in range(partitions)]
    for _ in range(steps):
        pipe, batch = dfn.step(pipe)
        per = pipe.batch_size // partitions
        for j, row in enumerate(zip(batch["id"].tolist(), batch["k"].tolist(), batch["key"].tolist())):
            seqs[j // per].append((row[0], row[1], tuple(row[2])))
    return seqs, pipe


@pytest.mark.parametrize("partitions", [1, 2])
def test_a_stream_that_expands_keys_each_record_by_its_place_whatever_the_batch_size(partitions):
    # Keyed by (seed, partition, records served): a batch of 4 and one of 6 give a record the same key,
    # no two records share one (within an epoch or across), and a JSON cursor resumes the same keys.
    import json

    fours, _ = _per_partition(dfn.Pipeline(_row_changing("expand", partitions), [_keyed], 4), 18, partitions)
    sixes, mid = _per_partition(dfn.Pipeline(_row_changing("expand", partitions), [_keyed], 6), 6, partitions)
    rest, _ = _per_partition(dfn.restore_cursor(dfn.Pipeline(_row_changing("expand", partitions), [_keyed], 6),
                                                json.loads(json.dumps(dfn.cursor(mid)))), 6, partitions)
    for c in range(partitions):
        assert sixes[c] + rest[c] == fours[c]
        keys = [key for _, _, key in fours[c]]
        assert len(set(keys)) == len(keys)
    # Over an epoch end: a record seen again in the next epoch gets a new key.
    records = [record[:2] for record in fours[0]]
    assert len(set(records)) < len(records)  # the records of the next epoch too
    assert len({key for seq in fours for _, _, key in seq}) == sum(map(len, fours))


def test_iterate_walks_one_epoch_of_a_filtered_stream_as_steps_do():
    from test_stream_filter import _counts

    pipe = dfn.Pipeline(_row_changing("filter", 1), [_keyed], 4)
    walked = [b for _, b in dfn.iterate(pipe, epochs=1, remainder="straddle")]
    kept = int((_counts(30, 1, 1) % 2 == 1).sum())
    assert len(walked) == -(-kept // 4)  # the last batch straddles into the next epoch
    for batch in walked:
        pipe, stepped = dfn.step(pipe)
        chex.assert_trees_all_equal(batch, stepped)
