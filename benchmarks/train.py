"""End-to-end training steps/s: a small MLP (784-128-10, Adam) fed by each loader, batch 128.

Scenario ``eager (c) training step``, case ``shuffled``: ``datarax_fn`` runs the whole loop
in ``jit(lax.scan)`` (``get_batch`` and the step in one program); ``datarax_fn jit_step``
calls one jitted step (batch + update) per Python iteration; the peers (NumPy, grain,
tf.data, HF) feed host batches to the same jitted update, as their users do.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import optax
from _harness import interleaved, parse_args, report, row, timed_rate
from _peers import available, mnist_like

import datarax_fn as dfn

B = 128
STEPS = 100


def init_params(key: jax.Array) -> dict:
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (784, 128)) * 0.05, "b1": jnp.zeros(128),
            "w2": jax.random.normal(k2, (128, 10)) * 0.05, "b2": jnp.zeros(10)}


def loss(params: dict, batch: dict) -> jax.Array:
    x = batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 255.0
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


OPT = optax.adam(1e-3)


def update(params, opt_state, batch):
    grads = jax.grad(loss)(params, batch)
    updates, opt_state = OPT.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def loaders(arrays, quick: bool) -> dict:
    """Returns ``{loader: step()}``; each call runs ``STEPS`` training steps (scan) or one step."""
    params = init_params(jax.random.key(0))
    train = {"params": params, "opt": OPT.init(params)}

    def scan_body(carry, _):
        s, p, o = carry
        s, batch = dfn.get_batch(s, B)
        p, o = update(p, o, batch)
        return (s, p, o), None

    scan = dfn.jit_step(lambda s, p, o: jax.lax.scan(scan_body, (s, p, o), None, length=STEPS)[0])
    one = dfn.jit_step(lambda s, p, o: (lambda sb: (sb[0], *update(p, o, sb[1])))(dfn.get_batch(s, B)))
    jupdate = jax.jit(update)
    states = {"scan": [dfn.from_arrays(arrays, shuffle=True), params, train["opt"]],
              "step": [dfn.from_arrays(arrays, shuffle=True), params, train["opt"]]}

    def run_scan():
        states["scan"][:] = scan(*states["scan"])
        return states["scan"][1]

    def run_step():
        states["step"][:] = one(*states["step"])
        return states["step"][1]

    out = {"datarax_fn": (run_scan, STEPS), "datarax_fn jit_step": (run_step, 1)}
    for name, next_batch in available(arrays, B, True, quick=quick).items():
        box = [params, train["opt"]]

        def run_peer(next_batch=next_batch, box=box):
            box[:] = jupdate(*box, next_batch())
            return box[0]

        out[name] = (run_peer, 1)
    return out


def main() -> None:
    args = parse_args(__doc__)
    warnings.simplefilter("ignore", dfn.DatasetCopyWarning)
    seconds = 0.2 if args.quick else 1.0
    fns = {k: (lambda f=f, per=per: timed_rate(f, per, seconds, 10_000, jax.block_until_ready))
           for k, (f, per) in loaders(mnist_like(), args.quick).items()}
    samples = interleaved(fns, 3 if args.quick else 5)
    rows = [row("eager (c) training step", "shuffled", k, "steps/s", s, note="MLP 784-128-10, Adam") for k, s in samples.items()]
    report(f"Training steps/s, batch {B}, MNIST-shaped", rows, args)


if __name__ == "__main__":
    main()
