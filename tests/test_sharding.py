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


def launch(tmp_path, nproc, devices):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(devices=devices))
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


def test_rejects_traced_state():
    state = dfn.from_arrays({"x": np.arange(10, dtype=np.int32)})
    with pytest.raises(TypeError, match="host"):
        jax.jit(lambda s: dfn.get_global_batch(s, 4, dfn.data_sharding())[1])(state)
