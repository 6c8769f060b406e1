"""``sac-glam wheelhouse`` offline: pip's resolution over a local folder of tiny wheels, the node's
packages as stubs (kept when accepted, replaced when not), the platform tags, the freeze parsing.
The real thing (PyPI, the package's own wheel, an sdist-only need) runs in ``.ci/node_stack.sh``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from sac_glam.cli import wheelhouse as wh


def _wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{info}/METADATA", meta)
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def index(tmp_path: Path) -> Path:
    """app 1.0 needs liba >= 1 and libb < 2; liba 1.0 and 2.0, libb 1.0 and 3.0, libc 1.0 exist."""
    d = tmp_path / "index"
    d.mkdir()
    _wheel(d, "app", "1.0", ("liba>=1", "libb<2", "libc"))
    for name, version in [
        ("liba", "1.0"),
        ("liba", "2.0"),
        ("libb", "1.0"),
        ("libb", "3.0"),
        ("libc", "1.0"),
    ]:
        _wheel(d, name, version)
    return d


def test_resolution_keeps_accepted_node_packages_and_replaces_refused_ones(
    index: Path, tmp_path: Path
) -> None:
    # liba 2.0 is on the index too: the node's stub must still win (its local label ranks it higher).
    have = {"liba": "2.0", "libb": "3.0", "unrelated": "9.9+cu130"}
    log: list[str] = []
    items, plan = wh.resolve(
        ["app==1.0"],
        have,
        wh.Target(),
        tmp_path / "work",
        ["--no-index", "--find-links", str(index)],
        log.append,
    )
    assert sorted(it["metadata"]["name"] for it in items) == ["app", "libb", "libc"]
    assert plan.kept == {"liba": "2.0"}  # the node's version, not the stub's
    assert plan.replaced == {"libb": ("3.0", "1.0")}
    assert any("libb 3.0 is not accepted" in line for line in log)
    out = tmp_path / "out"
    out.mkdir()
    wh.fetch(items, out, wh.Target(), ["--no-index", "--find-links", str(index)], plan)
    assert sorted(p.name for p in out.iterdir()) == [
        "app-1.0-py3-none-any.whl", "libb-1.0-py3-none-any.whl", "libc-1.0-py3-none-any.whl",
    ]  # fmt: skip
    text = wh.summary(plan, out, "", wh.Target())
    assert "the node's libb 3.0 is not accepted: the install replaces it with 1.0" in text
    assert f"pip install --no-index --find-links {out} -e ." in text


def test_a_need_without_any_distribution_is_an_error(index: Path, tmp_path: Path) -> None:
    _wheel(index, "broken", "1.0", ("nowhere>=1",))
    with pytest.raises(RuntimeError, match="nowhere"):
        wh.resolve(
            ["broken"], {}, wh.Target(), tmp_path / "w", ["--no-index", "--find-links", str(index)], print
        )


def test_stub_versions_compare_as_the_node_version() -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    assert wh.stub_version("2.11.0+cu130") == "2.11.0+cu130.nodestub"
    v = Version(wh.stub_version("2.4.0"))
    assert v > Version("2.4.0") and v in SpecifierSet("==2.4.0") and v in SpecifierSet("<=2.4.0")
    assert v not in SpecifierSet("<2.4") and v not in SpecifierSet(">2.4.0")


def test_manylinux_platforms_expand_to_every_older_glibc() -> None:
    tags = wh.expand_platforms(["manylinux_2_28_x86_64"])
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_24_x86_64" in tags  # bitsandbytes 0.50
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_29_x86_64" not in tags
    assert wh.expand_platforms(["macosx_11_0_arm64"]) == ["macosx_11_0_arm64"]


def test_freeze_parsing() -> None:
    have, skipped = wh.parse_freeze(
        "# a comment\nTorch==2.11.0+cu130\nhuggingface_hub==1.33.0  # pinned\n-e /src/thing\n"
        "numpy @ file:///croot/numpy\nmy.pkg===1.0\n\n"
    )
    assert have == {"torch": "2.11.0+cu130", "huggingface-hub": "1.33.0", "my-pkg": "1.0"}
    assert skipped == ["numpy @ file:///croot/numpy"]


def test_cli_refuses_a_node_without_torch_and_a_bad_python(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        wh.main(["--out", str(tmp_path / "w"), "--have", "numpy==2.5.0"])
    assert "torch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        wh.main(["--out", str(tmp_path / "w"), "--python", "312", "--have", "torch==2.11.0"])
    assert "expected 3.X" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "other.txt").write_text("x")
    with pytest.raises(SystemExit, match="not a wheelhouse"):
        wh.main(["--out", str(tmp_path / "full"), "--have", "torch==2.11.0"])
