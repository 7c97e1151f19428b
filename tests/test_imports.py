"""The package's imports, read from the source with ast: a DAG, no private cross-module names,
function-level imports only for heavy backends and each with a comment saying why."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "datarax_fn"
# Backends too heavy to import with datarax_fn; a function may import them lazily.
HEAVY = {"datasets", "tensorflow", "tensorflow_datasets", "PIL", "cv2", "soundfile", "librosa",
         "pyarrow", "array_record", "grain", "orbax", "optax", "tqdm", "huggingface_hub", "fsspec",
         "apache_beam", "pyspng", "matplotlib"}
# Entry points written like user code: they import the public package, which nothing else may.
ENTRY_POINTS = {"datarax_fn.__main__", "datarax_fn._cli.demo"}
# Modules being rewritten elsewhere (into datarax_fn/_loaders/ and datarax_fn/_convert/, and
# the demo); every other check applies to them already, and this one once they land (then
# empty this set).
FUNCTION_IMPORTS_PENDING: set[str] = set()


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def scan(path: pathlib.Path, root: pathlib.Path = PACKAGE):
    """Returns ``(module, [(target, names, at_function_level, lineno, commented)])``."""
    name = module_name(path, root)
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                line = lines[child.lineno - 1]
                above = lines[child.lineno - 2].strip() if child.lineno > 1 else ""
                commented = "#" in line or above.startswith("#")
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        out.append((alias.name, [], in_function, child.lineno, commented))
                else:
                    target = resolve(name, path.name == "__init__.py", child)
                    out.append((target, [a.name for a in child.names], in_function, child.lineno, commented))
            visit(child, nested)

    visit(tree, False)
    return name, out


def package_imports(root: pathlib.Path = PACKAGE):
    """Returns ``{module: imports}`` for every module of the package at ``root``."""
    return dict(scan(p, root) for p in sorted(root.rglob("*.py")))


def internal_edges(imports):
    modules = set(imports)
    edges = {m: set() for m in modules}
    for mod, found in imports.items():
        for target, names, *_ in found:
            if target in modules:
                # `from . import _core` names a module, not a name inside the package.
                subs = {f"{target}.{n}" for n in names} & modules
                edges[mod] |= subs or {target}
    for mod in edges:
        edges[mod].discard(mod)
    return edges


def find_cycle(edges):
    state, stack = {}, []

    def dfs(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def private_imports(imports):
    modules = set(imports)
    bad = []
    for mod, found in imports.items():
        for target, names, _, lineno, _ in found:
            if target in modules and target != mod:
                bad += [f"{mod}:{lineno} imports {target}.{n}" for n in names
                        if n.startswith("_") and f"{target}.{n}" not in modules]
    return bad


def test_the_checks_can_fail(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from ._a import f\n")
    (pkg / "_a.py").write_text("from ._b import _hidden\n\ndef f():\n    return _hidden\n")
    (pkg / "_b.py").write_text("from . import _a\n\n_hidden = 1\n")
    imports = package_imports(pkg)
    edges = internal_edges(imports)
    assert edges["pkg._a"] == {"pkg._b"} and edges["pkg._b"] == {"pkg._a"}
    assert find_cycle({m: e for m, e in edges.items() if m != "pkg"}) == ["pkg._a", "pkg._b", "pkg._a"]
    assert private_imports(imports) == ["pkg._a:1 imports pkg._b._hidden"]


def test_imports_form_a_dag():
    edges = internal_edges(package_imports())
    edges.pop("datarax_fn", None)  # the package re-exports everything; modules never import it
    for mod in set(edges) - ENTRY_POINTS:
        assert "datarax_fn" not in edges[mod], f"{mod} imports the package itself"
    for mod in ENTRY_POINTS & set(edges):
        edges[mod].discard("datarax_fn")
    assert find_cycle(edges) is None


def test_no_module_imports_another_modules_private_names():
    assert private_imports(package_imports()) == []


def test_function_level_imports_are_heavy_backends_with_a_reason():
    bad = []
    for mod, found in package_imports().items():
        if mod in FUNCTION_IMPORTS_PENDING:
            continue
        for target, names, in_function, lineno, commented in found:
            if not in_function:
                continue
            if target.startswith("datarax_fn"):
                bad.append(f"{mod}:{lineno} imports {target} inside a function (import it at the top)")
            elif target.split(".")[0] not in HEAVY:
                bad.append(f"{mod}:{lineno} imports {target} inside a function; it is not a heavy backend")
            elif not commented:
                bad.append(f"{mod}:{lineno} imports {target} inside a function without a comment saying why")
    assert bad == []


# The subpackages in layers: each imports only from the layers before it, and packages of one
# layer never import each other. A module's folder is its concept, so a reader finds it from
# the folder list alone; a new top-level module has to be placed here on purpose.
LAYERS = [
    {"_state", "_convert"},      # the state contract, shuffle, cursors / the conversion rules
    {"_layout"},                 # partitions, placement over devices and processes, the batch gather
    {"_eager", "_streaming"},    # the two kinds of source state
    {"_pipeline"},               # pipeline, stages, statistics, moving batches to devices
    {"_compose"},                # mixtures and packing over the states
    {"_loaders"},                # HF and TFDS adapters onto the two states
    {"_digits"},                 # the bundled dataset
    {"_cli"},                    # the command line: demo and the benchmark runner
]


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else None


def layer_violations(edges, layers):
    rank = {pkg: i for i, layer in enumerate(layers) for pkg in layer}
    bad = []
    for mod, targets in edges.items():
        src = subpackage(mod)
        if src is None:
            continue
        if src not in rank:
            bad.append(f"{mod} is in no layer: place its folder in LAYERS")
            continue
        for target in targets:
            dst = subpackage(target)
            if dst is None or dst == src:
                continue
            if dst not in rank or rank[dst] >= rank[src]:
                bad.append(f"{mod} imports {target}, which is not in an earlier layer")
    return sorted(bad)


def test_the_layer_check_can_fail():
    edges = {"p._a.x": {"p._b.y"}, "p._b.y": set(), "p._c.z": {"p._d.w"}, "p._d.w": set()}
    assert layer_violations(edges, [{"_a"}, {"_b"}, {"_c", "_d"}]) == [
        "p._a.x imports p._b.y, which is not in an earlier layer",
        "p._c.z imports p._d.w, which is not in an earlier layer",
    ]
    assert layer_violations(edges, [{"_b", "_d"}, {"_a", "_c"}]) == []


def test_subpackages_import_only_earlier_layers():
    edges = internal_edges(package_imports())
    edges.pop("datarax_fn", None)
    for mod in ENTRY_POINTS & set(edges):
        edges[mod].discard("datarax_fn")
    assert layer_violations(edges, LAYERS) == []


def test_every_module_sits_in_a_concept_folder():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert top == ["_digits"], f"top-level modules {top}: move each into the folder of its concept"


@pytest.mark.parametrize("folder", ["_state", "_layout", "_eager", "_streaming", "_pipeline"])
def test_state_layers_import_no_backend(folder):
    for path in sorted((PACKAGE / folder).glob("*.py")):
        _, found = scan(path)
        assert not [t for t, *_ in found if t.split(".")[0] in HEAVY], path.name
