"""jit_step and the copy warning: carrying the state through a step must keep the very same data buffers."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datarax_fn as dfn


def big_state(shuffle=True):
    # 16 MiB: above the copy-warning threshold.
    return dfn.from_arrays({"x": np.zeros((4096, 1024), np.float32), "y": np.arange(4096, dtype=np.int32)}, shuffle=shuffle)


def ptrs(state):
    return [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(state.data)]


def test_eager_get_batch_keeps_buffers():
    state = big_state()
    before = ptrs(state)
    for _ in range(3):
        state, _ = dfn.get_batch(state, 32)
    assert ptrs(state) == before
    _, _ = dfn.get_batch(state, 32, jax.random.key(0))
    assert ptrs(state) == before


def test_eager_get_batch_compiles_once_per_size():
    state = dfn.from_arrays({"x": np.arange(1000, dtype=np.int32)}, shuffle=True, seed=9)
    from datarax_fn._eager import source as _eager

    state, _ = dfn.get_batch(state, 77)
    size_before = _eager._step.jitted._cache_size()
    for _ in range(5):
        state, _ = dfn.get_batch(state, 77)
    assert _eager._step.jitted._cache_size() == size_before


@pytest.mark.parametrize("by_keyword", [False, True])
def test_jit_step_aliases_the_dataset_passed_by_position_or_keyword(by_keyword):
    @dfn.jit_step
    def step(total, state, *, scale=1):
        state, batch = dfn.get_batch(state, 64)
        return total + batch["y"].sum() * scale, state

    state = big_state()
    before = ptrs(state)
    total = jnp.int32(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", dfn.DatasetCopyWarning)
        for _ in range(3):
            total, state = step(total, state=state, scale=2) if by_keyword else step(total, state, scale=2)
    assert ptrs(state) == before
    assert list(step.compiled) == [((), ("state",)) if by_keyword else ((1,), ())]
    assert int(total) == 2 * int(np.arange(4096)[np.asarray(dfn.permute(np.arange(192), 4096, 0, 0))].sum())


@pytest.mark.parametrize("loop", ["scan", "fori"])
def test_loops_carrying_the_state_keep_buffers(loop):
    def run(state):
        if loop == "scan":
            return jax.lax.scan(lambda s, _: (dfn.get_batch(s, 16)[0], None), state, None, length=5)[0]
        return jax.lax.fori_loop(0, 5, lambda i, s: dfn.get_batch(s, 16)[0], state)

    state = big_state()
    before = ptrs(state)
    state = run(state)  # top level: the carry is forwarded
    assert ptrs(state) == before and int(state.index) == 80
    state = dfn.jit_step(run)(state)  # inside the documented jitted step
    assert ptrs(state) == before and int(state.index) == 160


def test_naive_jit_copies_and_warns():
    state = big_state()
    with pytest.warns(dfn.DatasetCopyWarning, match="jit_step"):
        naive = jax.jit(dfn.get_batch, static_argnums=1)
        new, _ = naive(state, 8)
    assert ptrs(new) != ptrs(state)  # the trap this issue is about


def test_donating_jit_does_not_warn():
    state = big_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error", dfn.DatasetCopyWarning)
        new, _ = jax.jit(dfn.get_batch, static_argnums=1, donate_argnums=0)(state, 8)


def test_small_datasets_do_not_warn():
    state = dfn.from_arrays({"x": np.zeros(10, np.float32)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", dfn.DatasetCopyWarning)
        jax.jit(dfn.get_batch, static_argnums=1)(state, 2)


def test_jit_step_requires_the_state_back():
    @dfn.jit_step
    def leaky(state):
        return dfn.get_batch(state, 2)[1]

    state = dfn.from_arrays({"x": np.zeros(10, np.float32)})
    with pytest.raises(ValueError, match="does not return one"):
        leaky(state)
    assert np.asarray(state.data["x"]).shape == (10,)  # not donated: tracing failed first


def test_jit_step_rejects_manual_donation():
    with pytest.raises(TypeError, match="donate_argnums"):
        dfn.jit_step(lambda s: s, donate_argnums=0)


def test_jit_step_passes_other_args_through_without_donation():
    @dfn.jit_step
    def step(state, w):
        state, b = dfn.get_batch(state, 2)
        return state, w * b["x"].sum()

    state, w = dfn.from_arrays({"x": np.arange(4, dtype=np.float32)}), jnp.float32(2.0)
    state, out = step(state, w)
    assert float(out) == 2.0 and float(w) == 2.0  # w is still alive: not donated


@pytest.mark.parametrize("mib, warned", [(7.9, False), (8.1, True)])
def test_copy_warning_fires_above_8_mib_only(mib, warned):
    rows = int(mib * 2**20 / 4 / 1024)
    state = dfn.from_arrays({"x": np.zeros((rows, 1024), np.float32)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jax.jit(lambda s: dfn.get_batch(s, 2))(state)
    assert [w.category for w in caught] == ([dfn.DatasetCopyWarning] if warned else [])


def test_host_aliased_source_is_copied_at_most_once():
    # from_arrays(copy=False) (what the HF/TFDS loaders use) may alias NumPy memory on CPU;
    # XLA cannot donate that, so the first donated step copies it once and never again.
    buf = np.empty(4096 * 1024 * 4 + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    x = buf[off : off + 4096 * 1024 * 4].view(np.float32).reshape(4096, 1024)
    x[:] = 1.0
    state = dfn.from_arrays({"x": x}, copy=False)
    before = ptrs(state)
    for _ in range(3):
        state, _ = dfn.get_batch(state, 8)  # eager: never a copy
    assert ptrs(state) == before
    step = dfn.jit_step(lambda s: dfn.get_batch(s, 8))
    state, _ = step(state)
    first = ptrs(state)
    for _ in range(3):
        state, _ = step(state)
    assert ptrs(state) == first
    assert float(state.data["x"].sum()) == 4096 * 1024


def test_donation_probe_finds_jax_jit_tracing_frame():
    # _outermost_jit_donates reads a private JAX frame (pjit._trace_for_jit's donated_invars);
    # if JAX moves it, the DatasetCopyWarning goes silent instead of failing, so fail here.
    from datarax_fn._state.jit import _outermost_jit_donates

    seen = {}

    def probe(x, name):
        seen[name] = _outermost_jit_donates()
        return x

    jax.jit(lambda x: probe(x, "plain"))(jnp.zeros(2))
    jax.jit(lambda x: probe(x, "donated"), donate_argnums=0)(jnp.zeros(2))
    jax.jit(lambda x: jax.jit(lambda y: probe(y, "inner"))(x), donate_argnums=0)(jnp.zeros(2))
    assert seen == {"plain": False, "donated": True, "inner": True}, (
        f"datarax_fn._state.jit._outermost_jit_donates no longer finds JAX {jax.__version__}'s jit tracing frame "
        f"(a function named _trace_for_jit with a local donated_invars); got {seen}. Update the lookup."
    )
    assert _outermost_jit_donates() is None  # outside any jit


def test_jit_step_takes_and_returns_an_equinox_model_with_function_leaves():
    import equinox as eqx

    model = eqx.nn.MLP(3, 1, 8, 2, key=jax.random.key(0))  # its activation is a custom_jvp leaf
    data = {"x": np.arange(24, dtype=np.float32).reshape(8, 3) / 24}

    def body(model, state, lr):
        state, batch = dfn.get_batch(state, 4)
        loss, grads = eqx.filter_value_and_grad(lambda m: jax.vmap(m)(batch["x"]).sum())(model)
        return eqx.apply_updates(model, jax.tree.map(lambda g: -lr * g, grads)), state, loss

    step = dfn.jit_step(body)
    reference = eqx.filter_jit(body)
    m1, s1, m2, s2 = model, dfn.from_arrays(data), model, dfn.from_arrays(data)
    sizes = []
    for _ in range(4):
        m1, s1, loss1 = step(m1, s1, 0.1)
        m2, s2, loss2 = reference(m2, s2, 0.1)
        assert float(loss1) == float(loss2)
        sizes.append(next(iter(step.compiled.values()))._cache_size())
    assert m1.activation is jax.nn.relu and isinstance(m1, eqx.nn.MLP)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m2)))
    assert sizes[-1] == sizes[1]  # the function leaves pick the compiled program; they do not recompile it
    assert int(s1.index) == 0 and int(s1.epoch) == 2


def test_a_donated_state_used_again_names_the_donation_and_the_state_to_use():
    # It used to fail far away with JAX's "Array has been deleted", naming neither.
    state = dfn.from_arrays({"x": np.arange(8, dtype=np.int32)})

    @dfn.jit_step
    def step(state):
        return dfn.get_batch(state, 4)

    new, first = step(state)
    donated = r"was donated to an earlier dfn.jit_step call.*Continue with the returned state \(state = step\(state\)"
    with pytest.raises(ValueError, match=r"jit_step\(step\): the source state passed as argument 0 " + donated):
        step(state)
    with pytest.raises(ValueError, match=r"jit_step\(step\): the source state passed as argument 'state' " + donated):
        step(state=state)
    for name, call in [("get_batch", lambda: dfn.get_batch(state, 4)), ("cursor", lambda: dfn.cursor(state)),
                       ("get_batch_at", lambda: dfn.get_batch_at(state, 0, 4))]:
        with pytest.raises(ValueError, match=rf"{name}: this state " + donated):
            call()
    new, second = step(new)  # the fix: the state the step returned
    assert first["x"].tolist() == [0, 1, 2, 3] and second["x"].tolist() == [4, 5, 6, 7]
