"""Built-in stages against NumPy references; jit, vmap and chain behaviour."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datarax_fn as dfn
from datarax_fn._pipeline.geometric import crop_offsets, flip_mask

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
LABELS = np.array([0, 2, 1, 9, 3, 5], np.int32)
BATCH = {"image": IMAGES, "label": LABELS}
KEY = jax.random.key(3)


def np_normalize(x, mean, std):
    std = np.where(std > 0, std, 1.0)
    return ((x.astype(np.float32) - mean) / std).astype(np.float32)


def test_normalize_matches_numpy_per_channel():
    mean, std = np.array([10.0, 100.0, 200.0]), np.array([2.0, 0.0, 50.0])  # a zero std counts as 1
    out = dfn.normalize("image", mean=mean, std=std)(BATCH)
    np.testing.assert_allclose(out["image"], np_normalize(IMAGES, mean, std), rtol=1e-6)
    assert out["image"].dtype == jnp.float32
    np.testing.assert_array_equal(out["label"], LABELS)


def test_normalize_from_statistics_and_pipeline_binding():
    source = dfn.from_arrays(BATCH)
    stats = dfn.compute_statistics(source, keys="image")
    want = np_normalize(IMAGES, IMAGES.reshape(-1, 3).mean(0), IMAGES.reshape(-1, 3).std(0))
    np.testing.assert_allclose(dfn.normalize(stats=stats)(BATCH)["image"], want, rtol=1e-5, atol=1e-5)
    pipe = dfn.Pipeline(source, [dfn.normalize("image")], batch_size=6, stats=stats)
    _, batch = dfn.step(pipe)
    np.testing.assert_allclose(batch["image"], want, rtol=1e-5, atol=1e-5)


def test_normalize_errors_name_the_fix():
    with pytest.raises(ValueError, match="no statistics"):
        dfn.normalize("image")(BATCH)
    with pytest.raises(ValueError, match="normalize has no statistics"):
        dfn.Pipeline(dfn.from_arrays(BATCH), [dfn.normalize("image")], batch_size=2)
    with pytest.raises(KeyError, match="available keys"):
        dfn.normalize("nope", mean=0.0, std=1.0)(BATCH)
    with pytest.raises(ValueError, match="together"):
        dfn.normalize("image", mean=0.0)


def test_cast_and_scale_match_numpy():
    out = dfn.cast("image", scale=1 / 255)(BATCH)
    np.testing.assert_allclose(out["image"], IMAGES.astype(np.float32) * np.float32(1 / 255), rtol=1e-7)
    assert out["image"].dtype == jnp.float32
    out = dfn.cast(dtype="int16")(BATCH)
    assert out["image"].dtype == jnp.int16 and out["label"].dtype == jnp.int16
    np.testing.assert_array_equal(out["image"], IMAGES.astype(np.int16))


def test_one_hot_matches_numpy():
    out = dfn.one_hot("label", 10)(BATCH)["label"]
    np.testing.assert_array_equal(out, np.eye(10, dtype=np.float32)[LABELS])
    assert dfn.one_hot("label", np.int64(3))({"label": np.array([2])})["label"].tolist() == [[0, 0, 1]]
    with pytest.raises(ValueError, match="num_classes"):
        dfn.one_hot("label", 0)
    with pytest.raises(TypeError, match="num_classes"):
        dfn.one_hot("label", 3.0)


@pytest.mark.parametrize("bad", [5, 3, -1])
def test_one_hot_refuses_a_label_out_of_range_eagerly_and_under_jit(bad):
    stage = dfn.one_hot("label", 3)
    batch = {"label": np.array([1, bad, 0])}
    with pytest.raises(Exception, match=r"one_hot: key 'label' holds a label outside \[0, 3\)"):
        jax.block_until_ready(stage(batch))
    pipe = dfn.Pipeline(dfn.from_arrays({"label": np.array([0, 1, bad, 2], np.int32)}), [stage], batch_size=4)
    with pytest.raises(Exception, match="Raise num_classes to cover every label"):  # the fix is in the message
        jax.block_until_ready(jax.jit(dfn.step)(pipe))
    fixed = dfn.Pipeline(pipe.source, [dfn.one_hot("label", max(bad, 2) + 1 if bad >= 0 else 3)], batch_size=4)
    if bad >= 0:  # the fix the message names works
        assert jax.jit(dfn.step)(fixed)[1]["label"].argmax(-1).tolist() == [0, 1, bad, 2]


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_random_flip_matches_numpy(p):
    out = dfn.random_flip(["image"], p=p)(BATCH, KEY)
    flip = np.asarray(flip_mask(KEY, 6, p))
    want = np.where(flip[:, None, None, None], IMAGES[:, :, ::-1, :], IMAGES)
    np.testing.assert_array_equal(out["image"], want)
    if p in (0.0, 1.0):
        assert flip.all() == (p == 1.0) and flip.any() == (p == 1.0)


def test_random_flip_other_axis_and_shared_decision():
    batch = {"a": IMAGES, "b": IMAGES.copy()}
    out = dfn.random_flip(("a", "b"), axis=0, p=0.5)(batch, KEY)
    np.testing.assert_array_equal(out["a"], out["b"])  # paired arrays stay aligned
    flip = np.asarray(flip_mask(KEY, 6, 0.5))
    np.testing.assert_array_equal(out["a"], np.where(flip[:, None, None, None], IMAGES[:, ::-1], IMAGES))


@pytest.mark.parametrize("padding,size", [(0, None), (2, None), (1, (3, 2)), (0, (4, 4))])
def test_random_crop_matches_numpy(padding, size):
    out = dfn.random_crop("image", size, padding=padding, fill=7)(BATCH, KEY)["image"]
    h, w = size or (5, 4)
    padded = np.pad(IMAGES, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=7)
    corners = np.asarray(crop_offsets(KEY, 6, (padded.shape[1] - h, padded.shape[2] - w)))
    want = np.stack([padded[i, y : y + h, x : x + w] for i, (y, x) in enumerate(corners)])
    np.testing.assert_array_equal(out, want)
    assert out.shape == (6, h, w, 3) and out.dtype == np.uint8


def test_random_crop_corners_cover_every_position():
    corners = np.asarray(crop_offsets(KEY, 4000, (2, 2)))
    assert {tuple(c) for c in corners} == {(y, x) for y in range(3) for x in range(3)}


def test_random_crop_errors():
    with pytest.raises(ValueError, match="larger than the padded"):
        dfn.random_crop("image", (9, 9))(BATCH, KEY)
    with pytest.raises(ValueError, match="needs a jax.random key"):
        dfn.random_crop("image", padding=1)(BATCH)


def test_apply_to_keys():
    out = dfn.apply_to_keys(lambda x: x * 2, "label")(BATCH)
    np.testing.assert_array_equal(out["label"], LABELS * 2)
    np.testing.assert_array_equal(out["image"], IMAGES)
    noisy = dfn.apply_to_keys(lambda x, k: x + jax.random.normal(k, x.shape), ["a", "b"], with_key=True)
    out = noisy({"a": np.zeros(3), "b": np.zeros(3)}, KEY)
    np.testing.assert_array_equal(out["a"], out["b"])  # the same key for every listed key
    with pytest.raises(TypeError, match="must be callable"):
        dfn.apply_to_keys(3, "a")


ALL_STAGES = [
    dfn.cast("image", scale=0.5),
    dfn.normalize("image", mean=[1.0, 2.0, 3.0], std=[2.0, 3.0, 4.0]),
    dfn.one_hot("label", 10),
    dfn.random_flip("image"),
    dfn.random_crop("image", (4, 3), padding=1),
    dfn.apply_to_keys(jnp.sqrt, "label"),
]


@pytest.mark.parametrize("stage", ALL_STAGES, ids=lambda s: type(s).__name__)
def test_stages_are_jittable_and_vmap_safe(stage):
    eager = stage(BATCH, KEY)
    # a stage is a PyTree: it can be a jit argument (its parameters are leaves)
    chex.assert_trees_all_close(jax.jit(lambda s, b, k: s(b, k))(stage, BATCH, KEY), eager)
    # vmap over a stack of two batches equals running each batch on its own
    stacked = jax.tree.map(lambda x: np.stack([x, x[::-1]]), BATCH)
    keys = jax.random.split(KEY, 2)
    out = jax.vmap(stage)(stacked, keys)
    for i in range(2):
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], out), stage(jax.tree.map(lambda x: x[i], stacked), keys[i]))


def test_chain_applies_in_order_with_folded_keys():
    flip = dfn.random_flip("image", p=0.5)
    chained = dfn.chain(dfn.cast("image"), flip)
    out = chained(BATCH, KEY)
    want = flip(dfn.cast("image")(BATCH), jax.random.fold_in(KEY, 1))
    chex.assert_trees_all_equal(out, want)
    # plain functions are stages too; a list works like varargs
    double = lambda b, k: {**b, "label": b["label"] * 2}  # noqa: E731
    chex.assert_trees_all_equal(dfn.chain([double, double])(BATCH, None)["label"], jnp.asarray(LABELS * 4))
    with pytest.raises(TypeError, match="must be a callable"):
        dfn.chain(3)


def test_stage_needs_dict_batch():
    with pytest.raises(TypeError, match="batch dict"):
        dfn.cast("x")(np.zeros(3))


def test_pipeline_modules_stay_short_or_say_why():
    import pathlib

    import datarax_fn._pipeline as package

    long = []
    for path in sorted(pathlib.Path(package.__file__).parent.glob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400 and "long because" not in text.split('"""')[1]:
            long.append(f"{path.name}: {text.count(chr(10))} lines")
    assert long == []


# ----------------------------------------------------------------------------- random_resized_crop


def _np_resize(a: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    """Linear resize of an (H, W, ...) array with half-pixel centres, in float64 NumPy."""
    for axis, out in enumerate(size):
        n = a.shape[axis]
        step = n / out
        width = max(step, 1.0) if antialias else 1.0
        sample = (np.arange(out) + 0.5) * step - 0.5
        w = np.maximum(0.0, 1.0 - np.abs(sample[:, None] - np.arange(n)[None, :]) / width)
        w /= w.sum(1, keepdims=True)
        a = np.moveaxis(np.tensordot(w, np.moveaxis(a, axis, 0), axes=1), 0, axis)
    return a


@pytest.mark.parametrize("antialias", [True, False])
def test_random_resized_crop_equals_crop_then_resize_in_numpy(antialias):
    from datarax_fn._pipeline.geometric import resized_crop_boxes
    from datarax_fn._pipeline.stages import row_keys

    images = np.random.default_rng(1).integers(0, 256, (6, 20, 30, 3), np.uint8)
    key = jax.random.key(4)
    out = dfn.random_resized_crop("image", (9, 13), antialias=antialias)({"image": images}, key)["image"]
    assert out.dtype == np.float32
    boxes = np.asarray(resized_crop_boxes(row_keys(key, 6), 20, 30, (0.08, 1.0), (3 / 4, 4 / 3)))
    assert len({tuple(b) for b in boxes}) > 1  # the rows got different boxes
    for row, (top, left, h, w) in enumerate(boxes):
        assert 0 <= top and top + h <= 20 and 0 <= left and left + w <= 30 and h > 0 and w > 0
        want = _np_resize(images[row, top:top + h, left:left + w].astype(np.float64), (9, 13), antialias)
        np.testing.assert_allclose(np.asarray(out[row]), want, rtol=0, atol=2e-3)


def test_random_resized_crop_boxes_follow_scale_ratio_and_the_centred_fallback():
    from datarax_fn._pipeline.geometric import resized_crop_boxes

    keys = jax.random.split(jax.random.key(0), 400)
    boxes = np.asarray(resized_crop_boxes(keys, 64, 64, (0.25, 0.5), (0.5, 2.0)))
    area = boxes[:, 2] * boxes[:, 3] / 64**2
    aspect = boxes[:, 3] / boxes[:, 2]
    assert area.min() > 0.2 and area.max() < 0.56 and aspect.min() > 0.45 and aspect.max() < 2.2
    assert (boxes[:, 0] + boxes[:, 2] <= 64).all() and (boxes[:, 1] + boxes[:, 3] <= 64).all()
    # nothing fits a ratio-2 box covering the whole square: the centred crop, ratio clamped
    fallback = np.asarray(resized_crop_boxes(keys[:3], 40, 40, (1.0, 1.0), (2.0, 2.0)))
    assert fallback.tolist() == [[10, 0, 20, 40]] * 3
    # the whole image at its own ratio: the stage is a plain resize
    images = np.random.default_rng(2).random((2, 12, 18, 1)).astype(np.float32)
    out = dfn.random_resized_crop(None, (6, 9), scale=(1.0, 1.0), ratio=(1.5, 1.5))({"x": images}, keys[0])["x"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.asarray(out), np.stack([_np_resize(i.astype(np.float64), (6, 9), True) for i in images]),
                               rtol=0, atol=1e-5)


def test_random_resized_crop_shares_a_box_across_keys_and_runs_in_a_pipeline():
    images = np.random.default_rng(3).integers(0, 256, (8, 16, 16, 3), np.uint8)
    stage = dfn.random_resized_crop(["image", "copy"], 8)
    out = stage({"image": images, "copy": images.copy()}, jax.random.key(1))
    np.testing.assert_array_equal(out["image"], out["copy"])
    pipe = dfn.Pipeline(dfn.from_arrays({"image": images}), [dfn.random_resized_crop("image", 8)], batch_size=4)
    _, eager = dfn.step(pipe)
    _, jitted = jax.jit(dfn.step)(pipe)
    np.testing.assert_array_equal(eager["image"], jitted["image"])
    assert eager["image"].shape == (4, 8, 8, 3)


def test_random_resized_crop_option_errors():
    with pytest.raises(TypeError, match="size"):
        dfn.random_resized_crop("image", "big")
    with pytest.raises(ValueError, match="scale"):
        dfn.random_resized_crop("image", 8, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="ratio"):
        dfn.random_resized_crop("image", 8, ratio=(0.0, 1.0))
    with pytest.raises(TypeError, match="scale"):
        dfn.random_resized_crop("image", 8, scale=0.5)
    with pytest.raises(ValueError, match="needs a jax.random key"):
        dfn.random_resized_crop("image", 8)({"image": np.zeros((1, 4, 4, 1))})
    assert dfn.random_resized_crop("image", np.int64(8)).size == (8, 8)


def test_a_stage_written_for_one_key_gets_the_per_row_fix_in_a_pipeline():
    def noisy(batch, key):
        return {"x": batch["x"] + jax.random.normal(key, batch["x"].shape)}

    assert noisy({"x": jnp.zeros(3)}, KEY)["x"].shape == (3,)  # one key: works on its own
    pipe = dfn.Pipeline(dfn.from_arrays({"x": np.zeros(6, np.float32)}), [noisy], batch_size=3)
    with pytest.raises((TypeError, ValueError), match=r"one key per row \(shape \(3,\)\).*jax.vmap"):
        dfn.step(pipe)

    def per_row(batch, key):
        keys = dfn.row_keys(key, len(batch["x"]))
        return {"x": batch["x"] + jax.vmap(lambda k: jax.random.normal(k))(keys)}

    fixed = dfn.Pipeline(pipe.source, [per_row], batch_size=3)
    two = dfn.Pipeline(pipe.source, [per_row], batch_size=2)
    np.testing.assert_array_equal(dfn.step(fixed)[1]["x"][:2], dfn.step(two)[1]["x"])  # per record
    with pytest.raises(ValueError, match="one key or 3 keys"):
        dfn.row_keys(jax.random.split(KEY, 2), 3)
