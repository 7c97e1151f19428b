"""The datarax-fn command: demo end to end, inspect on real local HF / TFDS datasets, bench."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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
    # A fresh process with its own empty HF cache: nothing was prepared, so the stream's
    # length is unknown (num_records is None), which inspect reports instead of crashing.
    args = ["inspect", "hf", str(parquet_folder), "--split", "train", "--streaming", "--max-length", "8", "--image-mode", "L",
            "--exclude-keys", "text", "--batches", "3"]
    res = run_fresh(f"import sys; from datarax_fn.__main__ import main; sys.exit(main({args!r}))",
                    env={"HF_HOME": str(tmp_path / "hf")}, timeout=300)
    assert "StreamingSource" in res.stdout and "streaming" in res.stdout
    assert "len: unknown (stream)" in res.stdout
    assert "['text']" not in res.stdout and "['tokens']: int32[8]" in res.stdout
    assert "one batch of 32:" in res.stdout
    assert not list((tmp_path / "hf").rglob("*.arrow"))  # streaming prepared nothing


def test_inspect_reports_backend_errors_without_a_traceback(parquet_folder, capsys):  # noqa: F811
    assert main(["inspect", "hf", str(parquet_folder), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "ValueError" in err and "max_length" in err


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


def test_bench_runs_every_script_and_reports_failures(tmp_path, monkeypatch, capfd):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "a_table.py").write_text("print('| peer | ratio |')\nprint('| dfn | 1.00 |')\n")
    (bench / "b_fails.py").write_text(textwrap.dedent("import sys\nsys.exit(3)\n"))
    (bench / "_helper.py").write_text("raise SystemExit('helpers are not run')\n")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--only", "a_table"]) == 0
    out = capfd.readouterr().out
    assert "=== a_table.py ===" in out and "| dfn | 1.00 |" in out
    assert main(["bench"]) == 1
    out = capfd.readouterr().out
    assert "b_fails.py exited with 3" in out and "_helper" not in out


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("demo", "inspect", "bench"))
