"""The docs cannot rot: every ```python block of README.md and docs/*.md runs, and the site builds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """Returns ``(first line number, code)`` of each ```python block; other fences do not run."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path, tmp_path, monkeypatch):
    # One fresh namespace per file; the blocks of a file run in order and share it, as a
    # reader would run them. The working directory is a temporary one.
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for line, code in python_blocks(path):
        # Leading newlines make tracebacks point at the line in the Markdown file.
        exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)


def test_my_pages_have_examples():
    for name in ("index", "quickstart", "state", "shuffling", "checkpointing", "training_loops"):
        assert python_blocks(ROOT / "docs" / f"{name}.md"), f"docs/{name}.md has no runnable example"


def test_fence_parser_finds_blocks_and_skips_other_languages(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("x\n```python\na = 1\n```\n```bash\nexit 1\n```\n```python\nb = a + 1\n```\n")
    assert python_blocks(page) == [(3, "a = 1\n"), (9, "b = a + 1\n")]


def test_nav_lists_every_page():
    nav = set(re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert nav == pages, f"in nav only: {sorted(nav - pages)}; pages not in nav: {sorted(pages - nav)}"


def test_mkdocs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.fail("mkdocs is not installed; install the docs extra: pip install -e '.[docs]'")
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
