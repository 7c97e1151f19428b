"""Batches laid out across devices and across processes (jax.distributed, gloo on CPU)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import run_fresh

import datarax_fn as dfn

WORKER = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count={devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    pid, nproc, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if nproc > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{{port}}", num_processes=nproc, process_id=pid)
    import numpy as np, datarax_fn as dfn
    state = dfn.from_arrays({{"x": np.arange(37, dtype=np.int32),
                             "img": np.arange(37 * 6, dtype=np.uint8).reshape(37, 2, 3)}},
                            shuffle=True, seed=5)
    sharding = dfn.data_sharding()
    rows = {{}}
    for step in range(3):
        state, batch = dfn.get_global_batch(state, 16, sharding)
        assert batch["x"].shape == (16,) and batch["img"].shape == (16, 2, 3)
        assert batch["x"].sharding == sharding
        for shard in batch["x"].addressable_shards:
            start = shard.index[0].start or 0
            for i, v in enumerate(np.asarray(shard.data).tolist()):
                rows[f"{{step}}:{{start + i}}"] = v
    print(json.dumps({{"rows": rows, "index": int(state.index), "epoch": int(state.epoch)}}))
    """
)


def expected():
    state = dfn.from_arrays(
        {"x": np.arange(37, dtype=np.int32), "img": np.arange(37 * 6, dtype=np.uint8).reshape(37, 2, 3)},
        shuffle=True,
        seed=5,
    )
    out = {}
    for step in range(3):
        state, batch = dfn.get_batch(state, 16)
        out.update({f"{step}:{i}": v for i, v in enumerate(np.asarray(batch["x"]).tolist())})
    return out, int(state.index), int(state.epoch)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, nproc, devices, worker=WORKER):
    script = tmp_path / "worker.py"
    script.write_text(worker.format(devices=devices))
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(p), str(nproc), port], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for p in range(nproc)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_single_device_matches_get_batch():
    state = dfn.from_arrays({"x": np.arange(10, dtype=np.int32)}, shuffle=True, seed=1)
    s1, b1 = dfn.get_global_batch(state, 8, dfn.data_sharding())
    s2, b2 = dfn.get_batch(state, 8)
    np.testing.assert_array_equal(b1["x"], b2["x"])
    assert (int(s1.index), int(s1.epoch)) == (int(s2.index), int(s2.epoch))


def test_four_devices_one_process(tmp_path):
    (out,) = launch(tmp_path, 1, 4)
    rows, index, epoch = expected()
    assert out["rows"] == rows and (out["index"], out["epoch"]) == (index, epoch)


def test_two_processes_two_devices_each(tmp_path):
    outs = launch(tmp_path, 2, 2)
    rows, index, epoch = expected()
    merged = {}
    for out in outs:
        assert not set(merged) & set(out["rows"])  # each row is read by exactly one process
        merged.update(out["rows"])
        assert (out["index"], out["epoch"]) == (index, epoch)  # states stay identical
    assert merged == rows


@pytest.mark.parametrize("placement", ["device", "replicated", "host", "stream"])
@pytest.mark.parametrize("sharding", ["x", None, jax.sharding.PartitionSpec("data")])
def test_a_sharding_of_the_wrong_type_is_a_type_error_naming_the_fix(placement, sharding):
    from conftest import RangeBackend

    def make():
        if placement == "stream":
            return dfn.from_backend(RangeBackend(10), partitions=2)
        return dfn.from_arrays({"x": np.arange(10, dtype=np.int32)}, placement=placement)

    state = make()
    with pytest.raises(TypeError, match=r"get_global_batch: sharding must be a jax.sharding.Sharding, e.g. "
                                        r"dfn.data_sharding\(\).*; got " + type(sharding).__name__):
        dfn.get_global_batch(state, 4, sharding)
    _, batch = dfn.get_global_batch(state, 4, dfn.data_sharding())  # the fix the message names
    assert np.asarray(batch["x"]).tolist() == np.asarray(dfn.get_batch(make(), 4)[1]["x"]).tolist()


def test_rejects_traced_state():
    state = dfn.from_arrays({"x": np.arange(10, dtype=np.int32)})
    with pytest.raises(TypeError, match="host"):
        jax.jit(lambda s: dfn.get_global_batch(s, 4, dfn.data_sharding())[1])(state)


# ----------------------------------------------------------------------------- placements on 8 devices

EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
N, C, B, STEPS = 101, 8, 16, 14  # 14 steps of 16 pass the end of every 12- or 13-record partition


def layout_data(n=N):
    return {"x": np.arange(n, dtype=np.int32), "img": np.arange(n * 6, dtype=np.uint8).reshape(n, 2, 3)}


def single_device_stream(partitions, shuffle=True):
    state = dfn.from_arrays(layout_data(), partitions=partitions, shuffle=shuffle, seed=5)
    out = []
    for _ in range(STEPS):
        state, batch = dfn.get_batch(state, B)
        out.append(np.asarray(batch["x"]).tolist())
    return out


LAYOUT = r"""
import json, re, jax, numpy as np, datarax_fn as dfn
from test_sharding import layout_data, B, STEPS

def rows(batch):
    x = batch["x"]
    assert np.array_equal(np.asarray(batch["img"]), (np.asarray(x)[:, None, None] * 6 + np.arange(6).reshape(2, 3)) % 256)
    return sorted((s.device.id, s.index[0].start, s.index[0].stop) for s in x.addressable_shards), np.asarray(x).tolist()

def collectives(hlo):
    found = {k: 0 for k in ("all-gather", "all-to-all", "collective-permute", "reduce-scatter")}
    for k in found:
        found[k] = hlo.count(k + "(")
    found["non-scalar all-reduce"] = len(re.findall(r"= [a-z0-9]+\[[0-9,]+\][^ ]* all-reduce\(", hlo))
    found["all-reduce"] = hlo.count("all-reduce(")
    return found

out = {}
for name, placement, partitions, shuffle in [("replicated", "replicated", 8, True), ("partitioned", "partitioned", 8, True),
                                             ("plain", "partitioned", 8, False), ("replicated-1", "replicated", 1, True)]:
    state = dfn.from_arrays(layout_data(), partitions=partitions, placement=placement, shuffle=shuffle, seed=5)
    held = [s.data.shape[0] for s in state.data["x"].addressable_shards]
    eager, layouts = [], []
    s = state
    for _ in range(STEPS):
        s, batch = dfn.get_batch(s, B)
        layout, values = rows(batch)
        eager.append(values); layouts.append(layout)
    step = dfn.jit_step(lambda s: dfn.get_batch(s, B))
    before = [sh.data.unsafe_buffer_pointer() for sh in state.data["img"].addressable_shards]
    hlo = jax.jit(lambda s: dfn.get_batch(s, B), donate_argnums=0).lower(state).compile().as_text()
    jitted, s = [], state
    for _ in range(STEPS):
        s, batch = step(s)
        jitted.append(rows(batch)[1])
    after = [sh.data.unsafe_buffer_pointer() for sh in s.data["img"].addressable_shards]
    body = lambda s, _: dfn.get_batch(s, B)[::-1]
    scanned = jax.jit(lambda s: jax.lax.scan(lambda s, _: tuple(reversed(body(s, _))), s, None, length=STEPS)[1])(
        dfn.from_arrays(layout_data(), partitions=partitions, placement=placement, shuffle=shuffle, seed=5))
    out[name] = {"held": held, "eager": eager, "layouts": layouts, "jitted": jitted, "same_buffers": before == after,
                 "scanned": np.asarray(scanned["x"]).tolist(), "collectives": collectives(hlo),
                 "spec": str(batch["x"].sharding.spec), "cursor": dfn.cursor(s)}
state = dfn.from_arrays(layout_data(), partitions=8, placement="host", shuffle=True, seed=5)
host = []
for _ in range(STEPS):
    state, batch = dfn.get_batch(state, B)
    host.append(rows(batch))
out["host"] = {"eager": [v for _, v in host], "layouts": [l for l, _ in host]}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def eight_devices():
    res = run_fresh(LAYOUT, env=EIGHT, timeout=400)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_eight_devices_batches_equal_the_single_device_stream(eight_devices):
    want = {8: single_device_stream(8), 1: single_device_stream(1)}
    for name, partitions in [("replicated", 8), ("partitioned", 8), ("replicated-1", 1)]:
        got = eight_devices[name]
        assert got["eager"] == want[partitions], name
        assert got["jitted"] == want[partitions], name
        assert sum(got["scanned"], []) == sum(want[partitions], []), name
    assert eight_devices["plain"]["eager"] == single_device_stream(8, shuffle=False)
    assert eight_devices["host"]["eager"] == want[8]


def test_eight_devices_each_device_holds_its_rows_and_its_partitions(eight_devices):
    own_rows = [[d, 2 * d, 2 * d + 2] for d in range(8)]  # device d holds rows [2d, 2d + 2) of every batch
    for name in ("replicated", "partitioned", "replicated-1", "host"):
        assert all(layout == own_rows for layout in eight_devices[name]["layouts"]), name
    assert eight_devices["partitioned"]["spec"] == "P('data',)"
    assert eight_devices["replicated"]["held"] == [N] * 8  # memory x devices
    assert eight_devices["partitioned"]["held"] == [13] * 8  # one padded partition of ceil(101 / 8) rows each


def test_eight_devices_steps_never_copy_or_move_the_dataset(eight_devices):
    for name in ("replicated", "partitioned", "plain", "replicated-1"):
        got = eight_devices[name]
        assert got["same_buffers"], name
        # Only scalars (the cursor entering shard_map, a cycle-walk loop's condition) may be reduced.
        moved = {k: v for k, v in got["collectives"].items() if k != "all-reduce" and v}
        assert moved == {}, (name, got["collectives"])


SILENT = """
import jax, jax.numpy as jnp, numpy as np, datarax_fn as dfn
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((8,), ("data",))
state = dfn.from_arrays({"x": np.arange(64, dtype=np.float32)})
params = jax.device_put(jnp.ones(16), NamedSharding(mesh, P("data")))
step = jax.jit(lambda s, p: dfn.get_batch(s, 16)[1]["x"] * p)
for context in (False, True):
    try:
        if context:
            with jax.set_mesh(mesh):
                step(state, params)
        else:
            step(state, params)
        print("ran")
    except ValueError as e:
        print(str(e).replace(chr(10), " "))
"""


def test_a_single_device_state_in_a_multi_device_jit_is_refused():
    lines = run_fresh(SILENT, env=EIGHT).stdout.strip().splitlines()
    assert "incompatible devices" in lines[-2] and "s.data['x']" in lines[-2]
    assert "placement='device'" in lines[-1] and "dfn.place(state, 'replicated')" in lines[-1]


GLOBAL = """
import json, numpy as np, datarax_fn as dfn
from test_sharding import layout_data, B
sharding = dfn.data_sharding()
out = {}
for placement in ("device", "replicated", "partitioned", "host"):
    state = dfn.from_arrays(layout_data(), partitions=8, placement=placement, shuffle=True, seed=5)
    got = []
    for _ in range(3):
        state, batch = dfn.get_global_batch(state, B, sharding)
        assert batch["x"].sharding == sharding, batch["x"].sharding
        got.append(np.asarray(batch["x"]).tolist())
    out[placement] = got
print(json.dumps(out))
"""


def test_eight_devices_get_global_batch_in_every_placement():
    out = json.loads(run_fresh(GLOBAL, env=EIGHT).stdout.strip().splitlines()[-1])
    want = single_device_stream(8)[:3]
    assert out == {p: want for p in ("device", "replicated", "partitioned", "host")}


GUIDE = """
import pathlib, sys, jax
from test_docs import python_blocks
assert jax.device_count() == 8
page = pathlib.Path("docs/sharding.md")
scope = {"__name__": "guide"}
for line, code in python_blocks(page.read_text()):
    exec(compile("\\n" * (line - 1) + code, str(page), "exec"), scope)
print(scope["devices"], scope["state"].data["image"].addressable_shards[0].data.shape[0])
"""


def test_the_sharding_guide_runs_on_eight_devices():
    # The guide's blocks run on one device in test_docs; here every recipe runs over 8.
    out = run_fresh(GUIDE, env=EIGHT).stdout.split()
    assert out[-2:] == ["8", "16"]  # 128 records in 8 partitions: one of 16 rows per device


SHARDED = WORKER.split("import numpy as np, datarax_fn as dfn")[0] + """
import numpy as np, datarax_fn as dfn
n, partitions = 37, 4
everything = np.arange(n, dtype=np.int32)
records = dfn.local_records(n, partitions)
state = dfn.from_local_partitions({{"x": everything[records.start:records.stop]}}, num_records=n,
                                  partitions=partitions, fingerprint="arange-37", shuffle=True, seed=5)
held = [s.data.shape[0] for s in state.data["x"].addressable_shards]
rows = {{}}
step = dfn.jit_step(lambda s: dfn.get_batch(s, 8))
for k in range(6):
    if k % 2:
        state, batch = step(state)
    else:
        state, batch = dfn.get_global_batch(state, 8, dfn.data_sharding())
    for shard in batch["x"].addressable_shards:
        start = shard.index[0].start or 0
        for i, v in enumerate(np.asarray(shard.data).tolist()):
            rows[f"{{k}}:{{start + i}}"] = v
print(json.dumps({{"rows": rows, "records": [records.start, records.stop], "held": held,
                  "index": int(state.index), "epoch": int(state.epoch)}}))
"""


def test_sharded_mode_two_processes_equal_one_process(tmp_path):
    alone = dfn.from_arrays({"x": np.arange(37, dtype=np.int32)}, partitions=4, shuffle=True, seed=5)
    want = {}
    for k in range(6):
        alone, batch = dfn.get_batch(alone, 8)
        want.update({f"{k}:{i}": v for i, v in enumerate(np.asarray(batch["x"]).tolist())})
    (single,) = launch(tmp_path, 1, 4, SHARDED)
    pair = launch(tmp_path, 2, 2, SHARDED)
    assert single["rows"] == want and single["records"] == [0, 37] and single["held"] == [10] * 4
    # process 0 holds partitions 0-1 (records [0, 18)), process 1 partitions 2-3 ([18, 37))
    assert [p["records"] for p in pair] == [[0, 18], [18, 37]] and all(p["held"] == [10, 10] for p in pair)
    assert not set(pair[0]["rows"]) & set(pair[1]["rows"])
    assert {**pair[0]["rows"], **pair[1]["rows"]} == want
    assert {(p["index"], p["epoch"]) for p in [single, *pair]} == {(int(alone.index), int(alone.epoch))}
