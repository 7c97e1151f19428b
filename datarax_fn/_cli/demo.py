"""The ``datarax-fn demo``: train a small classifier on the embedded digits, checkpoint, resume.

Every step is the library's public API plus the idiomatic JAX stack: the digits go
through a ``Pipeline`` whose ``normalize`` stage reads ``compute_statistics``; the model
is an ``equinox.nn.MLP`` and the optimiser ``optax.adam``; training runs
``lax.fori_loop`` over epochs of ``scan_epoch`` inside one ``dfn.jit_step`` (the pipeline
is donated, so the dataset is never copied); an Orbax ``CheckpointManager`` saves the
model, the optimiser state and the pipeline's cursor mid-run; a fresh pipeline restored
from that checkpoint must continue bit for bit; eval walks the test split with
``remainder="pad"``.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import datarax_fn as dfn

PyTree = Any
HIDDEN = 128
NUM_CLASSES = 10
OPTIMISER = optax.adam(2e-3)


def init_model(key: jax.Array) -> tuple[eqx.nn.MLP, eqx.nn.MLP]:
    """Returns ``(params, static)``: the array leaves of a 64-128-10 ReLU MLP and the rest.

    ``jax.jit`` takes arrays only, so the model travels through the jitted step as its
    arrays (``params``, a leaf of the carry) and is rebuilt with ``eqx.combine`` inside.
    """
    model = eqx.nn.MLP(64, NUM_CLASSES, HIDDEN, depth=1, activation=jax.nn.relu, key=key)
    return eqx.partition(model, eqx.is_array)


def logits_of(params: eqx.nn.MLP, static: eqx.nn.MLP, images: jax.Array) -> jax.Array:
    """Returns the logits of a batch of images (the MLP itself takes one flat record)."""
    model = eqx.combine(params, static)
    return jax.vmap(model)(images.reshape(images.shape[0], -1))


def loss_fn(params: eqx.nn.MLP, static: eqx.nn.MLP, batch: dict) -> jax.Array:
    logits = logits_of(params, static, batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


@dfn.jit_step(static_argnames=("static", "epochs"))
def train_epochs(params: eqx.nn.MLP, opt_state: optax.OptState, pipe: dfn.Pipeline, *, static: eqx.nn.MLP, epochs: int):
    """Runs ``epochs`` epochs with ``lax.fori_loop``; the pipeline (and its dataset) is donated."""

    def train_step(carry, batch):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, static, batch)
        updates, opt_state = OPTIMISER.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def one_epoch(_, carry):
        params, opt_state, pipe, _ = carry
        pipe, (params, opt_state), losses = dfn.scan_epoch(pipe, train_step, (params, opt_state))
        return params, opt_state, pipe, losses.mean()

    return jax.lax.fori_loop(0, epochs, one_epoch, (params, opt_state, pipe, jnp.float32(0)))


@eqx.filter_jit
def count_correct(params: eqx.nn.MLP, static: eqx.nn.MLP, batch: dict) -> jax.Array:
    hits = jnp.argmax(logits_of(params, static, batch["image"]), axis=-1) == batch["label"]
    return jnp.sum(hits & batch["mask"])


def make_pipeline(split: dict, stats: dfn.Statistics, *, train: bool, batch_size: int, seed: int) -> dfn.Pipeline:
    source = dfn.from_arrays(split, shuffle=train, seed=seed, name="digits")
    stages = [dfn.cast("image"), dfn.normalize("image")]
    if train:  # a one-pixel random shift; its keys come from (seed, epoch, index)
        stages.append(dfn.random_crop("image", padding=1))
    return dfn.Pipeline(source, stages, batch_size, stats=stats)


def _train(params, opt_state, pipe, static, epochs: int, per_call: int, bar) -> tuple:
    loss = jnp.float32(0)
    done = 0
    while done < epochs:
        k = min(per_call, epochs - done)
        params, opt_state, pipe, loss = train_epochs(params, opt_state, pipe, static=static, epochs=k)
        done += k
        if bar is not None:
            bar.set_postfix(loss=f"{float(loss):.4f}")
            bar.update(k)
    return params, opt_state, pipe, loss


def _trees_equal(a: PyTree, b: PyTree) -> tuple[bool, float]:
    diffs = [float(jnp.max(jnp.abs(x - y))) if x.size else 0.0 for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    same = all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return same, max(diffs)


def run(
    epochs: int = 60, batch_size: int = 64, seed: int = 0, checkpoint_dir: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Runs the demo, prints its report and returns the numbers (accuracy, resume check, ...)."""
    import orbax.checkpoint as ocp  # lazy: orbax only for the demo's checkpoint
    from tqdm.auto import tqdm  # lazy: only when a progress bar is shown

    if epochs < 2:
        raise ValueError(f"demo: epochs must be >= 2 (it checkpoints half way); got {epochs}.")
    say = tqdm.write  # prints above the progress bar instead of through it
    train, test = dfn.load_digits("train"), dfn.load_digits("test")
    n_train, n_test = len(train["label"]), len(test["label"])

    # 1. statistics inside jit, then the pipeline that normalises with them
    stats = dfn.compute_statistics(dfn.from_arrays(train), keys="image", batch_size=256)
    pipe = make_pipeline(train, stats, train=True, batch_size=batch_size, seed=seed)
    steps = dfn.steps_per_epoch(pipe)
    say(f"datarax_fn demo: 8x8 digits, {n_train} train / {n_test} test records, MLP 64-{HIDDEN}-{NUM_CLASSES}, "
        f"batch {batch_size}, {steps} steps/epoch")
    say(f"statistics (compute_statistics, in jit): image mean {float(stats.mean['image'][0]):.4f}, "
        f"std {float(stats.std['image'][0]):.4f}, min {int(stats.min['image'][0])}, max {int(stats.max['image'][0])}")

    params, static = init_model(jax.random.key(seed))
    opt_state = OPTIMISER.init(params)
    half = epochs // 2
    per_call = max(1, min(5, half))
    pointer = pipe.source.data["image"].unsafe_buffer_pointer()

    # 2. first half, then the checkpoint: model, optimiser and the cursor (no data)
    bar = tqdm(total=epochs, unit="epoch", desc="train", disable=not progress, leave=False)
    t0 = time.perf_counter()
    params, opt_state, pipe, loss = _train(params, opt_state, pipe, static, half, per_call, bar)
    jax.block_until_ready(params)
    t_first = time.perf_counter() - t0
    no_copy = pipe.source.data["image"].unsafe_buffer_pointer() == pointer

    ckpt_root = checkpoint_dir or tempfile.mkdtemp(prefix="datarax_fn_demo_")
    manager = ocp.CheckpointManager(ckpt_root, options=ocp.CheckpointManagerOptions(max_to_keep=2))
    cursor = dfn.cursor(pipe)
    manager.save(
        half,
        args=ocp.args.Composite(
            train=ocp.args.StandardSave({"params": params, "opt": opt_state, "stats": {"mean": pipe.stats.mean, "std": pipe.stats.std}}),
            cursor=ocp.args.JsonSave(cursor),
        ),
    )
    manager.wait_until_finished()
    # The source's own epoch lags the training epochs: each scan_epoch runs N // batch
    # full batches and the leftover records open the next one (no short batches).
    say(f"epoch {half}: loss {float(loss):.4f}; checkpoint saved (model + optimiser + cursor: source at "
        f"stream epoch {cursor['source']['epoch']}, index {cursor['source']['index']}) to {ckpt_root}")

    # 3. second half in this process: the reference continuation, timed
    t0 = time.perf_counter()
    params_a, opt_a, pipe_a, loss_a = _train(params, opt_state, pipe, static, epochs - half, per_call, bar)
    jax.block_until_ready(params_a)
    t_second = time.perf_counter() - t0
    bar.close()
    batches_per_s = (epochs - half) * steps / t_second

    # 4. restore into a fresh pipeline (statistics read back as precomputed) and continue
    restored = manager.restore(
        half,
        args=ocp.args.Composite(
            train=ocp.args.StandardRestore({"params": params_a, "opt": opt_a, "stats": {"mean": pipe_a.stats.mean, "std": pipe_a.stats.std}}),
            cursor=ocp.args.JsonRestore(),
        ),
    )
    manager.close()
    saved = restored["train"]
    fresh = make_pipeline(train, dfn.Statistics(**saved["stats"], min=stats.min, max=stats.max, count=stats.count),
                          train=True, batch_size=batch_size, seed=seed)
    fresh = dfn.restore_cursor(fresh, restored["cursor"])
    # Orbax hands back plain containers for optax's NamedTuples and equinox's Modules: put
    # the restored leaves back into the structures the jitted step was traced with.
    params_b = jax.tree.unflatten(jax.tree.structure(params), jax.tree.leaves(saved["params"]))
    opt_b = jax.tree.unflatten(jax.tree.structure(opt_state), jax.tree.leaves(saved["opt"]))
    params_b, opt_b, pipe_b, _ = _train(params_b, opt_b, fresh, static, epochs - half, per_call, None)
    same_params, max_diff = _trees_equal(params_a, params_b)
    same_opt, _ = _trees_equal(opt_a, opt_b)
    same_cursor = dfn.cursor(pipe_a) == dfn.cursor(pipe_b)
    resumed_ok = same_params and same_opt and same_cursor
    say(f"epoch {epochs}: loss {float(loss_a):.4f}; {batches_per_s:,.0f} batches/s "
        f"(first half incl. compile {t_first:.2f}s, second half {t_second:.2f}s)")
    say(f"resume check: restored epoch {half} and trained {epochs - half} more epochs: params "
        f"{'identical' if same_params else 'DIFFER'} (max |diff| {max_diff:.1e}), optimiser "
        f"{'identical' if same_opt else 'DIFFERS'}, cursor {'identical' if same_cursor else 'DIFFERS'} -> "
        f"{'OK' if resumed_ok else 'FAILED'}")
    say(f"no-copy: dataset buffer kept across donated jit_step calls: {no_copy}")

    # 5. eval with remainder="pad": fixed-shape batches and a mask, so no recompiles
    eval_pipe = make_pipeline(test, pipe_a.stats, train=False, batch_size=batch_size, seed=seed)
    correct, batches = 0, 0
    for _, batch in dfn.iterate(eval_pipe, remainder="pad"):
        correct += int(count_correct(params_a, static, batch))
        batches += 1
    accuracy = correct / n_test
    say(f'eval (remainder="pad"): {batches} batches of {batch_size}, {n_test} records, '
        f"test accuracy {accuracy:.2%}")
    return {
        "accuracy": accuracy,
        "batches_per_s": batches_per_s,
        "resume_ok": resumed_ok,
        "no_copy": no_copy,
        "loss": float(loss_a),
        "checkpoint_dir": ckpt_root,
    }
