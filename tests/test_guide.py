"""docs/lm_guide.md as its reader runs it: the page's blocks in one process, then its per-process
script as real ``jax.distributed`` groups (gloo on localhost CPU) of 2, then 1, then 4 processes,
each resuming the cursor the last one saved. Every global batch must equal the rows one process
reads from the page's ``lm_stream()`` without a break (tests/test_docs.py runs the blocks too;
this test needs their files and names).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from process_group import run_group
from test_docs import DOCS, python_blocks

import datarax_fn as dfn

GUIDE = (DOCS / "lm_guide.md").read_text()
SCRIPT = re.compile(r"^```py\n(# train_lm\.py .*?)^```$", re.DOTALL | re.MULTILINE)
SIZE = 40  # the script's global batch, over 4 partitions


def run_page(folder) -> dict:
    """Returns the names the page's blocks define, run in order in ``folder`` (the corpora and tokenizer land there)."""
    names: dict = {"__name__": "lm_guide"}
    for line, code in python_blocks(GUIDE):
        code = compile("\n" * (line - 1) + code, str(DOCS / "lm_guide.md"), "exec", dont_inherit=True)
        exec(code, names)  # noqa: S102 -- the page's own blocks, as test_docs runs them
    return names


def merged(results: list[dict]) -> list[dict[str, list]]:
    """Returns each step's global batch stitched from the processes' rows; fails on a row held twice or missing."""
    out = []
    for step in range(len(results[0]["steps"])):
        batch = {}
        for key in results[0]["steps"][step]:
            rows = {}
            for r in results:
                local = dict(map(tuple, r["steps"][step][key]))
                assert not set(local) & set(rows), f"row of {key} held by two processes"
                rows.update(local)
            assert sorted(rows) == list(range(SIZE)), key
            batch[key] = [rows[i] for i in range(SIZE)]
        out.append(batch)
    return out


def test_the_page_has_one_per_process_script():
    found = SCRIPT.findall(GUIDE)
    assert len(found) == 1 and "dfn.get_global_batch(state, 40, sharding)" in found[0]


@pytest.mark.slow
def test_the_guides_script_continues_one_stream_over_2_then_1_then_4_processes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    names = run_page(tmp_path)
    state, want = names["lm_stream"](), []
    for _ in range(8):
        state, batch = dfn.get_batch(state, SIZE)
        want.append({k: np.asarray(v).tolist() for k, v in batch.items()})
    state.close()
    assert not (tmp_path / "cursor.json").exists()  # the first group starts the stream
    spec, done = {"script": SCRIPT.search(GUIDE).group(1), "cwd": str(tmp_path)}, 0
    for processes, devices, steps in ((2, 2, 3), (1, 1, 2), (4, 1, 3)):
        results = run_group({**spec, "devices": devices, "steps": steps}, processes, timeout=150)
        # Each process opened the partitions of its rows only: 4 // processes of them, in order.
        share = 4 // processes
        assert [r["opened"] for r in results] == [list(range(p * share, (p + 1) * share)) for p in range(processes)]
        got = merged(results)
        assert len(got) == steps
        for k, (mine, one) in enumerate(zip(got, want[done:done + steps])):
            assert mine == one, f"{processes} processes, step {done + k}"
        done += steps
    # The cursor the four processes saved is the one-process stream's after its 8 batches.
    assert json.loads((tmp_path / "cursor.json").read_text()) == json.loads(json.dumps(dfn.cursor(state)))
