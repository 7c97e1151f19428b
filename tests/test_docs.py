"""The docs cannot rot: every ```python block of README.md, docs/ and the public docstrings runs,
the API pages document every public name once, and the site builds with warnings as errors."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import datarax_fn as dfn

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
FENCE = re.compile(r"^[ \t]*```python[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
DIRECTIVE = re.compile(r"^:::[ \t]+(\S+)", re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """Returns ``(first line number, dedented code)`` of each ```python block; other fences do not run."""
    blocks = []
    for m in FENCE.finditer(text):
        lines = m.group(1).splitlines(keepends=True)
        indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
        blocks.append((text.count("\n", 0, m.start(1)) + 1, "".join(x[indent:] for x in lines)))
    return blocks


def run_blocks(text: str, filename: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs the blocks of one text in order in one fresh module, as a reader's script would."""
    module = types.ModuleType(f"docs_example_{abs(hash(filename))}")
    # Registered like an imported script, so dataclasses (eqx.Module) defined in it resolve.
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for line, code in python_blocks(text):
        # Leading newlines make tracebacks point at the line in the file; dont_inherit keeps
        # this file's `from __future__ import annotations` out of the examples.
        exec(compile("\n" * (line - 1) + code, filename, "exec", dont_inherit=True), module.__dict__)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pages that write files write them here
    run_blocks(path.read_text(), str(path), monkeypatch)


def test_guides_have_runnable_examples():
    for name in ("index", "quickstart", "state", "shuffling", "checkpointing", "training_loops",
                 "pipelines", "writing_a_source", "cli", "faq"):
        assert python_blocks((DOCS / f"{name}.md").read_text()), f"docs/{name}.md has no runnable example"


# ----------------------------------------------------------------------------- docstrings


def public_names() -> list[str]:
    return sorted(getattr(dfn, "__all__", None) or [n for n in dir(dfn) if not n.startswith("_")])


def public_docstrings() -> dict[str, tuple[str, str]]:
    """Returns ``{qualified name: (source file, docstring)}`` for every public object of datarax_fn.

    Covers the package, each public name, the public methods and properties a public class
    defines itself, and the implementations registered on the generic functions (their
    examples are part of the API too, e.g. ``iterate`` on a ``Pipeline``).
    """
    found: dict[str, tuple[str, str]] = {"datarax_fn": (inspect.getsourcefile(dfn), dfn.__doc__ or "")}

    def add(name: str, obj: object) -> None:
        doc = inspect.getdoc(obj) if not isinstance(obj, property) else obj.__doc__
        if doc and "```python" in doc:
            target = obj.fget if isinstance(obj, property) else inspect.unwrap(obj)
            try:
                where = inspect.getsourcefile(target) or "?"
            except TypeError:
                where = "?"
            found[name] = (str(Path(where).relative_to(ROOT)) if where.startswith(str(ROOT)) else where, doc)

    for name in public_names():
        obj = getattr(dfn, name)
        add(f"datarax_fn.{name}", obj)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (callable(member) or isinstance(member, property)):
                    add(f"datarax_fn.{name}.{attr}", member)
        for cls, impl in getattr(obj, "registry", {}).items():
            if cls is not object:
                add(f"datarax_fn.{name}[{cls.__name__}]", impl)
    return found


DOCSTRINGS = public_docstrings()


@pytest.mark.parametrize("name", sorted(DOCSTRINGS))
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    where, doc = DOCSTRINGS[name]
    run_blocks(doc, f"{where} ({name} docstring)", monkeypatch)


def test_docstring_collector_sees_examples_of_functions_and_registered_implementations():
    # Guards the collector: an empty or narrowed collection would make the test above vacuous.
    assert {"datarax_fn.get_batch", "datarax_fn.scan", "datarax_fn.collect_to_array"} <= set(DOCSTRINGS)
    assert len(DOCSTRINGS) >= 20


def test_fence_parser_finds_blocks_dedents_and_skips_other_languages():
    text = "x\n```python\na = 1\n```\n```bash\nexit 1\n```\n    ```python\n    b = a + 1\n    ```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (9, "b = a + 1\n")]


# ----------------------------------------------------------------------------- site


def nav_pages() -> list[str]:
    return re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)


def test_nav_lists_every_page_once():
    nav = nav_pages()
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert len(nav) == len(set(nav)), f"listed twice in nav: {sorted({p for p in nav if nav.count(p) > 1})}"
    assert set(nav) == pages, f"in nav only: {sorted(set(nav) - pages)}; not in nav: {sorted(pages - set(nav))}"


def api_directives() -> list[tuple[str, str]]:
    """Returns ``(page, identifier)`` for every ``::: identifier`` in docs/api/."""
    return [(str(p.relative_to(DOCS)), ident) for p in sorted((DOCS / "api").glob("*.md"))
            for ident in DIRECTIVE.findall(p.read_text())]


def test_api_pages_document_every_public_name_once_by_its_public_path():
    entries = api_directives()
    private = [(page, ident) for page, ident in entries if any(part.startswith("_") for part in ident.split("."))]
    assert not private, f"private paths on API pages (use datarax_fn.<name>): {private}"
    named = [ident.removeprefix("datarax_fn.") for _, ident in entries]
    twice = sorted({n for n in named if named.count(n) > 1})
    assert not twice, f"documented more than once: {twice}"
    missing = sorted(set(public_names()) - set(named))
    assert not missing, f"public names without an API entry: {missing}"
    unknown = sorted(set(named) - set(public_names()))
    assert not unknown, f"API entries for names datarax_fn does not export: {unknown}"


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
    for page in nav_pages():
        built = tmp_path / "site" / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.exists(), f"{page} was not built"


def test_docs_name_the_class_end_of_stream_really_is():
    # "`dfn.EndOfStream` (a `StopIteration`)" sent readers to `except StopIteration:`,
    # which never catches it: every "(a `X`)" said of it must be one of its bases.
    import builtins
    import re

    claims = []
    for page in PAGES:
        for match in re.finditer(r"EndOfStream`\s+\(an?\s+`(\w+)`", page.read_text()):
            base = getattr(builtins, match.group(1), None)
            if base is None or not issubclass(dfn.EndOfStream, base):
                claims.append(f"{page.name}: EndOfStream is not a {match.group(1)}")
    assert claims == []
