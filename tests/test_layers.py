"""The package's layering: envs -> prompts -> llm -> buffers -> algos -> backends -> train, with the
factory above the backends (it builds them) and no backend importing back up that flow.

Read from the source (imports inside functions too), so it holds without lamorel installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sac_glam"
#: What a backend may import from the package: the layers below it, and other backends.
BELOW_BACKENDS = ("config", "envs", "prompts", "llm", "buffers", "algos", "backends")


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
    source.write_text("import sac_glam.config\ndef f():\n    from sac_glam.factory import make_agent\n")
    assert sac_glam_imports(source) == {"sac_glam.config", "sac_glam.factory"}


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
