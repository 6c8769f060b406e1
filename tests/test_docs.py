"""The documentation: README links resolve on GitHub, and the code cites pages the repository has.

``make docs`` (``mkdocs build --strict``, in ``make lint``) checks the links between ``docs/`` pages;
mkdocs does not read ``README.md``, so its links are checked here, with GitHub's heading anchors.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Files of the repository that may cite documentation (code, configs, tests, scripts, launch files).
CITING = ["sac_glam", "tests", "experiments", "plots", "slurm", "lamorel_configs", "scripts"]
SUFFIXES = {".py", ".yaml", ".sh", ".sbatch", ".md", ".toml"}


def github_anchor(heading: str) -> str:
    """GitHub's id for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {github_anchor(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def test_github_anchor_matches_githubs_rule():
    assert (
        github_anchor(" Running on Lamorel (LLM servers, several GPUs)")
        == "running-on-lamorel-llm-servers-several-gpus"
    )
    assert github_anchor("Training: `lamorel-launch`") == "training-lamorel-launch"


def test_readme_links_resolve_to_files_and_headings():
    readme = ROOT / "README.md"
    links = [m for m in LINK.findall(readme.read_text()) if not m.startswith(("http://", "https://"))]
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        target, _, anchor = link.partition("#")
        path = (readme.parent / target) if target else readme
        assert path.is_file(), f"README links to {link}: no such file"
        if anchor:
            assert anchor in anchors(path), f"README links to {link}: no such heading in {path.name}"


def test_every_docs_page_is_in_the_mkdocs_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f": {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


def test_citations_name_pages_the_repository_has():
    outside = ("playground_text_spec" + ".md", "lamorel_notes" + ".md", "DESIGN" + ".md")  # not in a clone
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile", *(ROOT / "docs").glob("*.md")]
    for folder in CITING:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    cited = 0
    for path in files:
        text = path.read_text(errors="replace")
        for name in outside:
            assert name not in text, f"{path.relative_to(ROOT)} cites {name}, which a clone does not have"
        for page in re.findall(r"docs/(\w+\.md)", text):
            cited += 1
            assert (ROOT / "docs" / page).is_file(), (
                f"{path.relative_to(ROOT)} cites docs/{page}: no such page"
            )
    assert cited >= 10
