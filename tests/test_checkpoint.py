"""Checkpointing: the state is a PyTree (Orbax, equinox), the cursor a few hundred bytes."""

import json
import textwrap

import equinox as eqx
import jax
import numpy as np
import pytest

import datarax_fn as dfn
from conftest import run_fresh, take_n

BUILD = """
import numpy as np, datarax_fn as dfn
def build(seed=7):
    rng = np.random.default_rng(0)
    return dfn.from_arrays({"x": np.arange(37, dtype=np.int32),
                            "img": rng.integers(0, 255, (37, 4, 4, 1), dtype=np.uint8)},
                           shuffle=True, seed=seed)
def print_next_batches(state, k=6):
    import json
    out = []
    for _ in range(k):
        state, b = dfn.get_batch(state, 10)
        out.append(np.asarray(b["x"]).tolist())
    print(json.dumps(out))
"""
exec(BUILD)


def batches(state, k, size=10):
    state, got = take_n(state, k, size)
    return state, got["x"]


def replay_fresh(code):
    """Returns the batches a fresh process prints after running BUILD + ``code``."""
    res = run_fresh(BUILD + textwrap.dedent(code))
    return np.asarray(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.fixture
def saved(tmp_path):
    state, _ = batches(build(), 3)  # 30 records in: mid-epoch 0
    _, expected = batches(state, 6)  # crosses into epochs 1 and 2
    return state, expected


def test_orbax_standard_checkpointer_fresh_process(saved, tmp_path):
    import orbax.checkpoint as ocp

    state, expected = saved
    path = tmp_path / "ckpt"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, state)
    got = replay_fresh(
        f"""
        import jax, orbax.checkpoint as ocp
        target = build()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        with ocp.StandardCheckpointer() as ckptr:
            state = ckptr.restore({str(path)!r}, abstract)
        print_next_batches(state)
        """
    )
    np.testing.assert_array_equal(got, expected)


def test_orbax_checkpoint_manager_with_cursor(saved, tmp_path):
    import orbax.checkpoint as ocp

    state, expected = saved
    with ocp.CheckpointManager(tmp_path / "mgr") as mngr:
        mngr.save(3, args=ocp.args.Composite(cursor=ocp.args.JsonSave(dfn.cursor(state))))
        mngr.wait_until_finished()
    got = replay_fresh(
        f"""
        import orbax.checkpoint as ocp
        with ocp.CheckpointManager({str(tmp_path / "mgr")!r}) as mngr:
            step = mngr.latest_step()
            cur = mngr.restore(step, args=ocp.args.Composite(cursor=ocp.args.JsonRestore()))["cursor"]
        state = dfn.restore_cursor(build(), cur)
        print_next_batches(state)
        """
    )
    np.testing.assert_array_equal(got, expected)


def test_equinox_serialise_leaves(saved, tmp_path):
    state, expected = saved
    eqx.tree_serialise_leaves(tmp_path / "state.eqx", state)
    restored = eqx.tree_deserialise_leaves(tmp_path / "state.eqx", build())
    _, got = batches(restored, 6)
    np.testing.assert_array_equal(got, expected)


def test_cursor_is_small_and_json():
    state, _ = batches(build(), 2)
    cur = dfn.cursor(state)
    blob = json.dumps(cur)
    assert len(blob) < 300 and cur["version"] == 1 and cur["kind"] == "eager"
    assert cur["index"] == 20 and cur["epoch"] == 0 and cur["seed"] == 7 and cur["num_records"] == 37
    state2 = dfn.restore_cursor(build(), json.loads(blob))
    chex_equal = jax.tree.map(lambda a, b: np.array_equal(a, b), state, state2)
    assert all(jax.tree.leaves(chex_equal))


def test_cursor_refuses_another_seed_and_names_it():
    state, _ = batches(build(seed=7), 4)
    assert int(dfn.restore_cursor(build(seed=7), dfn.cursor(state)).index) == 3
    with pytest.raises(ValueError, match=r"differs in seed \(cursor 7, this state 8\)"):
        dfn.restore_cursor(build(seed=8), dfn.cursor(state))


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_cursor_seed_out_of_range_is_a_value_error(seed):
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*32\)"):
        dfn.restore_cursor(build(), {**dfn.cursor(build()), "seed": seed})


def test_cursor_without_version_is_refused():
    old = {k: v for k, v in dfn.cursor(build()).items() if k != "version"}
    with pytest.raises(ValueError, match="version=None.*version 1"):
        dfn.restore_cursor(build(), old)


def test_cursor_rejects_different_data():
    cur = dfn.cursor(build())
    changed = dfn.from_arrays({"x": np.arange(37, dtype=np.int32) + 1, "img": np.asarray(build().data["img"])}, shuffle=True)
    with pytest.raises(ValueError, match="different stream; it differs in fingerprint"):
        dfn.restore_cursor(changed, cur)
    shorter = dfn.from_arrays({"x": np.arange(36, dtype=np.int32), "img": np.zeros((36, 4, 4, 1), np.uint8)}, shuffle=True)
    with pytest.raises(ValueError, match=r"num_records \(cursor 37, this state 36\)"):
        dfn.restore_cursor(shorter, cur)


def test_cursor_rejects_other_shuffle_setting():
    cur = dfn.cursor(build())
    plain = dfn.from_arrays(
        {"x": np.asarray(build().data["x"]), "img": np.asarray(build().data["img"])}, shuffle=False, seed=7
    )
    with pytest.raises(ValueError, match=r"differs in shuffle \(cursor True, this state False\)"):
        dfn.restore_cursor(plain, cur)


def test_cursor_missing_fields():
    with pytest.raises(ValueError, match=r"lacks \['epoch', 'fingerprint'"):
        dfn.restore_cursor(build(), {"version": 1, "kind": "eager", "index": 0})


def _deep(levels):
    x = []
    for _ in range(levels):
        x = [x]
    return x


@pytest.mark.parametrize("field", ["fingerprint", "extra"])
def test_hostile_cursors_are_refused_within_bounds_and_quoted_briefly(field):
    # A 100k-deep field raised RecursionError; a 50 MB field was copied whole into the message.
    state = dfn.from_arrays({"x": np.arange(8, dtype=np.int32)})
    good = dfn.cursor(state)
    with pytest.raises(ValueError, match="nests deeper than 32 levels.*dfn.cursor") as deep:
        dfn.restore_cursor(state, {**good, field: _deep(100_000)})
    with pytest.raises(ValueError, match=r"holds over 1048576 bytes.*dfn.cursor") as huge:
        dfn.restore_cursor(state, {**good, field: "f" * 50_000_000})
    with pytest.raises(ValueError, match=r"holds over 1048576 bytes") as wide:
        dfn.restore_cursor(state, {**good, field: [0] * 200_000})
    assert max(len(str(e.value)) for e in (deep, huge, wide)) < 400
    if field == "fingerprint":  # within bounds but wrong: the message quotes a bounded prefix
        with pytest.raises(ValueError, match=r"fingerprint \(cursor 'ffff.*\.\.\. \(100002 characters\)") as long:
            dfn.restore_cursor(state, {**good, field: "f" * 100_000})
        assert len(str(long.value)) < 600
    assert int(dfn.restore_cursor(state, good).index) == 0  # the dict dfn.cursor returned still restores
