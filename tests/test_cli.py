"""The datarax-fn command: demo end to end, inspect on real local HF / TFDS datasets, bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_fresh
from datarax_fn.__main__ import main
from hf_fixtures import hf_dataset, parquet_folder  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_end_to_end_and_passes_the_resume_check(tmp_path, capsys):
    # In-process through the CLI's main (a subprocess would pay the jax import again);
    # test_entry_points checks that `python -m datarax_fn` reaches the same main.
    assert main(["demo", "--epochs", "4", "--no-progress", "--checkpoint-dir", str(tmp_path / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert "statistics (compute_statistics, in jit)" in out
    assert "checkpoint saved (model + optimiser + cursor" in out
    assert "resume check:" in out and "params identical" in out and "-> OK" in out
    assert "no-copy: dataset buffer kept across donated jit_step calls: True" in out
    assert 'eval (remainder="pad"): 5 batches of 64, 299 records, test accuracy' in out
    assert "batches/s" in out
    assert os.listdir(tmp_path / "ckpt") == ["2"]  # the mid-run step (epoch 2 of 4)
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 50.0  # 4 epochs already learn most digits


def test_entry_points(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "datarax_fn", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "inspect" in proc.stdout
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "datarax-fn"]
    assert script.value == "datarax_fn.__main__:main"


def test_inspect_hf_eager(parquet_folder, capsys):  # noqa: F811
    assert main(["inspect", "hf", str(parquet_folder), "--split", "train", "--max-length", "32"]) == 0
    out = capsys.readouterr().out
    assert "EagerSource" in out and "mode: " in out and "eager, because" in out
    assert "len: 60" in out and "['image']: uint8[6, 5, 1]" in out
    assert "one batch of 32:" in out and "throughput:" in out


def test_inspect_hf_streaming_on_a_never_prepared_folder(parquet_folder, tmp_path):  # noqa: F811
    # A fresh process with its own empty HF cache: nothing was prepared, and the stream
    # still knows its length, from the parquet files' metadata.
    args = ["inspect", "hf", str(parquet_folder), "--split", "train", "--streaming", "--max-length", "8", "--image-mode", "L",
            "--exclude-keys", "text", "--batches", "3"]
    res = run_fresh(f"import sys; from datarax_fn.__main__ import main; sys.exit(main({args!r}))",
                    env={"HF_HOME": str(tmp_path / "hf")}, timeout=300)
    assert "StreamingSource" in res.stdout and "streaming" in res.stdout
    assert "len: 60" in res.stdout
    assert "['text']" not in res.stdout and "['tokens']: int32[8]" in res.stdout
    assert "one batch of 32:" in res.stdout
    assert not list((tmp_path / "hf").rglob("*.arrow"))  # streaming prepared nothing


def test_inspect_reports_backend_errors_without_a_traceback(parquet_folder, capsys):  # noqa: F811
    assert main(["inspect", "hf", str(parquet_folder), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "ValueError" in err and "--max-length" in err


def test_inspect_max_length_per_field_and_errors_name_the_flags(parquet_folder, capsys):  # noqa: F811
    # Two ragged fields ('text', 'tokens') that need different lengths: one number cannot serve both.
    base = ["inspect", "hf", str(parquet_folder), "--split", "train", "--streaming", "--batches", "1", "--seconds", "0.1"]
    assert main(base + ["--max-length", "text=16", "--max-length", "tokens=5", "--image-mode", "image=L"]) == 0
    out = capsys.readouterr().out
    assert "['text']: uint8[16]" in out and "['tokens']: int32[5]" in out and "['image']: uint8[6, 5, 1]" in out
    assert main(base + ["--max-length", "text=16", "--image-mode", "L"]) == 2
    err = capsys.readouterr().err
    assert "--max-length tokens=L" in err and "--exclude-keys tokens" in err  # the flags, not Python options
    assert "max_length=" not in err and "exclude_keys=" not in err
    assert main(base + ["--max-length", "16", "--max-length", "tokens=5", "--image-mode", "L"]) == 2
    assert "--max-length: give one value for every field, or KEY=VALUE once per field" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tfds_toy_dir(tmp_path_factory):
    pytest.importorskip("tensorflow_datasets")
    import tfds_fixtures as fx

    return fx.prepare(fx.DfnToy, str(tmp_path_factory.mktemp("tfds_toy")), "array_record")


@pytest.mark.parametrize("streaming", [False, True])
def test_inspect_tfds(tfds_toy_dir, capsys, streaming):
    args = ["inspect", "tfds", "dfn_toy", "--split", "train", "--data-dir", tfds_toy_dir, "--max-length", "32"]
    assert main(args + (["--streaming"] if streaming else [])) == 0
    out = capsys.readouterr().out
    assert ("StreamingSource" in out) == streaming and ("EagerSource" in out) != streaming
    assert "because" in out and "len: 40" in out
    assert "['image']: uint8[6, 5, 3]" in out and "['nested']['x']: float32[]" in out
    assert "one batch of 32:" in out and "throughput:" in out


ROWS_SCRIPT = """
import json, sys
rows = [dict(scenario="eager (a) per step", case="shuffled", loader=name, unit="batches/s", median=m, min=m - 1,
             max=m + 1, repeats=3, note="") for name, m in (("datarax_fn", 300.0), ("NumPy", 100.0))]
rows += [dict(scenario="scale", case=f"N={n}", loader="datarax_fn in scan", unit="us/batch", median=float(n.bit_length()),
              min=1.0, max=99.0, repeats=3, note="") for n in (10_000, 10_000_000)]
rows += [dict(scenario="targets", case="shuffled / sequential", loader="datarax_fn", unit="x", median=m, min=m, max=m,
              repeats=1, note="target <= 1.5") for m in (1.2, 1.8)]
assert "--quick" in sys.argv
json.dump(rows, open(sys.argv[sys.argv.index("--json") + 1], "w"))
"""


def test_bench_gathers_the_rows_into_a_table_plots_and_the_page(tmp_path, monkeypatch, capfd):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "rows.py").write_text(ROWS_SCRIPT)
    (bench / "_helper.py").write_text("raise SystemExit('helpers are not run')\n")
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    page.write_text("# Benchmarks\n\nkept\n\n<!-- bench:begin -->\nold figures\n<!-- bench:end -->\n\nkept too\n")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick", "--out", "out", "--page", str(page)]) == 0
    out = capfd.readouterr().out
    assert "=== rows.py: 6 rows" in out and "_helper" not in out
    md = (tmp_path / "out" / "results.md").read_text()
    # NumPy's row: datarax_fn is 300 / 100 = 3.00 times faster; the targets are judged from their notes.
    assert "| shuffled | NumPy | 100 | 99 | 101 | batches/s | 3.00 |  |" in md
    assert "| shuffled / sequential | 1.200 | target <= 1.5 | met |" in md
    assert "| shuffled / sequential | 1.800 | target <= 1.5 | missed |" in md
    assert "Command: `datarax-fn bench --quick --out out --page" in md
    for name in ("throughput.png", "scale.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (page.parent / "img" / f"bench_{name}").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n\n<!-- bench:begin -->") and text.endswith("<!-- bench:end -->\n\nkept too\n")
    assert "old figures" not in text and "![bench_scale](img/bench_scale.png)" in text
    assert "| N=10000000 | datarax_fn in scan | 24 | 1 | 99 | us/batch |" in text
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["loader"] for r in rows][:2] == ["datarax_fn", "NumPy"] and rows[0]["script"] == "rows"


def test_bench_reports_a_failing_script_and_runs_the_rest(tmp_path, monkeypatch, capfd):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "a_rows.py").write_text(ROWS_SCRIPT)
    (bench / "b_fails.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick", "--only", "b_fails", "a_rows"]) == 1
    out = capfd.readouterr().out
    assert "=== b_fails.py: 0 rows" in out and "exited with 3" in out and "=== a_rows.py: 6 rows" in out
    assert "Scripts that failed: b_fails.py (exit 3)." in (tmp_path / "bench-results" / "results.md").read_text()
    # A partial run replaces its own rows and keeps the other scripts' rows from the last run.
    assert main(["bench", "--quick", "--only", "b_fails"]) == 1
    md = (tmp_path / "bench-results" / "results.md").read_text()
    assert "| shuffled | NumPy | 100 | 99 | 101 | batches/s | 3.00 |  |" in md
    assert "Rows of a_rows come from the previous run." in md
    assert main(["bench", "--only", "nothing_matches"]) == 2


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("demo", "inspect", "bench"))
