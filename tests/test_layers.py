"""The package's layering: config at the ground floor, then prompts -> envs -> llm -> pretrain -> buffers ->
algos -> backends -> run -> analysis -> api, with the command line and the benchmarks on top; no module
imports one above it, so no import circle anywhere (docs/design.md, "Package layout").

Read from the source (imports inside functions too), so it holds without lamorel installed.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sac_glam"
#: What a backend may import from the package: the layers below it, and other backends.
BELOW_BACKENDS = ("config", "envs", "prompts", "llm", "pretrain", "buffers", "algos", "backends")
#: The top-level units of ``sac_glam/`` from the ground floor up: each imports only units before it.
#: ``<root>`` is ``sac_glam/__init__.py`` (its lazy API); ``helptext`` turns docstrings into --help.
LAYERS = ("config", "helptext", "prompts", "envs", "llm", "pretrain", "buffers", "algos", "backends", "run",
          "analysis", "api", "<root>", "cli", "benchmarks")  # fmt: skip


def sac_glam_imports(path: Path) -> set[str]:
    """The ``sac_glam.*`` modules ``path`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sac_glam")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sac_glam"):
            found.add(node.module)
    return found


def test_sac_glam_imports_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import sac_glam.config\ndef f():\n    from sac_glam.run.factory import make_agent\n")
    assert sac_glam_imports(source) == {"sac_glam.config", "sac_glam.run.factory"}


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "backends").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_backends_import_nothing_above_them(path):
    above = [m for m in sac_glam_imports(path) if m.split(".")[1] not in BELOW_BACKENDS]
    assert not above, (
        f"{path.relative_to(PACKAGE)} imports {above}: the factory and the loop sit above the backends"
    )


def test_the_lamorel_backend_is_a_package_of_files_under_400_lines():
    files = sorted((PACKAGE / "backends" / "lamorel").glob("*.py"))
    assert {p.name for p in files} >= {
        "__init__.py",
        "client.py",
        "module_functions.py",
        "process.py",
        "server.py",
    }
    lengths = {p.name: len(p.read_text().splitlines()) for p in files}
    assert max(lengths.values()) < 400, lengths


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere; ``from pkg import name`` counts ``pkg.name``
    when that is a module, else ``pkg`` (an attribute of its ``__init__``)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}

    def resolve(name: str) -> str:
        while name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("sac_glam")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sac_glam"):
                assert node.level == 0, f"{path}: relative import"
                names |= {f"{node.module}.{a.name}" for a in node.names}
        graph[mod] = {resolve(n) for n in names} - {mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan): each holds an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_cycles_finds_a_circle_and_only_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_import_graph_reads_submodules_and_attributes(tmp_path):
    pkg = tmp_path / "sac_glam"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "sub/x.py", "y.py"):
        (pkg / name).write_text("")
    (pkg / "y.py").write_text("from sac_glam.sub import x\nfrom sac_glam import __version__\n")
    graph = import_graph(pkg)
    assert graph["sac_glam.y"] == {"sac_glam.sub.x", "sac_glam"}


def test_no_import_circle_in_the_package():
    found = cycles(import_graph())
    assert not found, f"import circles: {found}"


def test_every_unit_imports_only_units_below_it():
    units = {unit(m) for m in import_graph()}
    assert units == set(LAYERS), f"top-level units not in LAYERS: {units ^ set(LAYERS)}"
    upward = collections.defaultdict(set)
    for mod, deps in import_graph().items():
        for dep in deps:
            if LAYERS.index(unit(dep)) > LAYERS.index(unit(mod)):
                upward[mod].add(dep)
    assert not upward, f"imports against the layering {LAYERS}: {dict(upward)}"


def test_the_configuration_imports_nothing_else_of_the_package():
    outside = {
        (mod, dep)
        for mod, deps in import_graph().items()
        if unit(mod) == "config"
        for dep in deps
        if unit(dep) != "config"
    }
    assert not outside, outside


def test_the_design_page_lists_every_unit_of_the_package():
    """docs/design.md's layout is ``ls sac_glam`` with one line each: a new unit must be described there."""
    listing = (
        (PACKAGE.parent / "docs" / "design.md").read_text().split("    sac_glam/\n", 1)[1].split("\n\n", 1)[0]
    )
    described = {line.split()[0].rstrip("/").removesuffix(".py") for line in listing.splitlines()}
    assert described == set(LAYERS) - {"<root>"}, described ^ (set(LAYERS) - {"<root>"})
