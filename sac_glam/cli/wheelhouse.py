"""``sac-glam wheelhouse``: the wheels an offline node lacks, for ``pip install --no-index``.

A GPU node without internet already has most of the stack (its image ships torch, transformers, ...).
Run this where PyPI is reachable, with the node's Python, platform and ``pip list --format=freeze``::

    sac-glam wheelhouse --out wheels --python 3.12 --platform manylinux_2_28_x86_64 --have-freeze node.txt
    # copy wheels/ and the clone to the node, then on the node:
    pip install --no-index --find-links wheels -e .

How: pip's own resolver decides, for the node's interpreter (``--python-version``, ``--platform``,
``--only-binary=:all:``), what the package (its wheel, built here from the clone) needs. Each package the
node has stands in as an empty *stub* wheel pinned by a constraint at the node's version, so pip takes
it as is and pulls nothing it depends on (the node has those already). Then, from pip's ``--report``:

- a stub in the resolution: the node's package at an accepted version, skipped;
- a pin pip refuses (``ResolutionImpossible`` names "The user requested (constraint) X==V"): the node's
  version is not accepted; the pin is dropped, the wheelhouse gets an accepted version and the
  install replaces the node's (said in the output);
- a need with no wheel for the node ("No matching distribution found for X"): built here with
  ``pip wheel``, kept if pure Python (``py3-none-any``: antlr4-python3-runtime 4.9.3, omegaconf's
  dependency, is only an sdist), else an error naming it;
- every other package is downloaded, at the exact file pip chose.

The command prints each wheel with its size, the total, and the offline install command. ``--out`` is
created, or must be a previous wheelhouse (it holds ``wheelhouse.json``): its wheels that the new
resolution no longer needs are removed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.tags import sys_tags
from packaging.utils import canonicalize_name

MANIFEST = "wheelhouse.json"
#: The build requirement of pyproject.toml: an editable install (``pip install -e .``) on the node
#: builds in an isolated environment, which ``--no-index`` fills from the wheelhouse too.
BUILD_REQUIREMENT = "setuptools>=77"
_MAX_ROUNDS = 8  # each round fixes one refused pin or builds one sdist-only need
_REFUSED_PIN = re.compile(r"The user requested \(constraint\) ([A-Za-z0-9._-]+)==(\S+)")
_NO_WHEEL = re.compile(r"No matching distribution found for ([^\s;]+)")
# A need without a wheel, found while backtracking over its dependents (hydra-core needs
# antlr4-python3-runtime==4.9.*): pip names it under this line, its spec in "X depends on NAME...".
_NO_DIST_BLOCK = re.compile(r"no matching distributions available for your environment:\n((?:[ \t]+\S+\n?)+)")


def expand_platforms(platforms: Sequence[str]) -> list[str]:
    """Every tag a node of ``platforms`` runs: pip takes ``--platform manylinux_2_28_x86_64`` literally,
    while a glibc 2.28 node also runs manylinux_2_27 ... 2_5 wheels and their legacy names
    (manylinux2014 = 2_17, manylinux2010 = 2_12, manylinux1 = 2_5): bitsandbytes 0.50 is 2_24."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    out: list[str] = []
    for p in platforms:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", p)
        tags = [p]
        if m:
            glibc, arch = int(m.group(1)), m.group(2)
            tags = [f"manylinux_2_{v}_{arch}" for v in range(glibc, 4, -1)]
            tags += [f"{legacy[v]}_{arch}" for v in sorted(legacy, reverse=True) if v <= glibc]
        out += [t for t in tags if t not in out]
    return out


@dataclass(frozen=True)
class Target:
    """The node's interpreter: ``python`` "3.12" (None: this one) and its platform tags."""

    python: str | None = None
    platforms: tuple[str, ...] = ()

    def pip_args(self) -> list[str]:
        args = ["--only-binary=:all:"]
        if self.python:
            nodot = self.python.replace(".", "")
            args += ["--python-version", self.python, "--implementation", "cp", "--abi", f"cp{nodot}"]
            args += ["--abi", "abi3", "--abi", "none"]
        for p in expand_platforms(self.platforms):
            args += ["--platform", p]
        return args

    def describe(self) -> str:
        py = f"Python {self.python}" if self.python else f"Python {sys.version.split()[0]} (this one)"
        return f"{py}, {', '.join(self.platforms) if self.platforms else 'this platform'}"


@dataclass
class Plan:
    """What the wheelhouse holds and why (the printed summary)."""

    wheels: dict[str, tuple[str, Path]] = field(default_factory=dict)  # name -> (version, file)
    kept: dict[str, str] = field(default_factory=dict)  # the node's packages used as they are
    replaced: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (node's, new)
    built: list[str] = field(default_factory=list)  # sdist-only needs built here


def parse_freeze(text: str) -> tuple[dict[str, str], list[str]]:
    """``pip freeze`` / ``pip list --format=freeze`` lines -> ({canonical name: version}, skipped lines).
    ``name @ url`` lines (conda, direct URLs) carry no version: skipped, so the caller can warn."""
    have: dict[str, str] = {}
    skipped: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*===?\s*(\S+)", line)
        if m:
            have[canonicalize_name(m.group(1))] = m.group(2)
        else:
            skipped.append(line)
    return have, skipped


def stub_version(version: str) -> str:
    """The stub's version: the node's with a local label added (``2.5.0`` -> ``2.5.0+nodestub``,
    ``2.11.0+cu130`` -> ``2.11.0+cu130.nodestub``). The constraint ``==`` the public version matches
    it (PEP 440 ignores local labels there) and pip takes it over the index's equal public release,
    which ranks lower (a local version sorts after its public one); every range compares it as the
    node's version."""
    public, _, local = version.partition("+")
    return f"{public}+{local + '.' if local else ''}nodestub"


def write_stub(name: str, version: str, directory: Path) -> Path:
    """An empty wheel of the node's ``name`` ``version`` (:func:`stub_version`), with no dependencies:
    the node's installed package as pip's resolver sees it (the node has what it depends on)."""
    dist, version = re.sub(r"[-_.]+", "_", name), stub_version(version)
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: sac-glam-wheelhouse\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, body in {**files, f"{info}/RECORD": record}.items():
            z.writestr(f, body)
    return path


def _pip(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)


def _local_path(url: str) -> Path | None:
    """The file of a ``file://`` URL (pip's report quotes ``+`` in local versions), else None."""
    parsed = urlparse(url)
    return Path(unquote(parsed.path)).resolve() if parsed.scheme == "file" else None


def _is_pure(wheel: Path) -> bool:
    return wheel.name.endswith(("-py3-none-any.whl", "-py2.py3-none-any.whl"))


def resolve(
    requirements: Sequence[str],
    have: dict[str, str],
    target: Target,
    work: Path,
    pip_extra: Sequence[str] = (),
    log=print,
) -> tuple[list[dict], Plan]:
    """pip's resolution of ``requirements`` on ``target`` with the node's packages ``have`` pinned
    as stubs: (the report's install items that are not stubs, the plan so far). ``pip_extra`` goes to
    every pip call (the tests pass ``--no-index --find-links DIR``)."""
    stubs, built, constraints = work / "stubs", work / "built", work / "constraints.txt"
    stubs.mkdir(parents=True, exist_ok=True)
    built.mkdir(parents=True, exist_ok=True)
    pinned = dict(have)
    stub_files = {n: write_stub(n, v, stubs) for n, v in have.items()}
    plan = Plan()
    for _ in range(_MAX_ROUNDS):
        constraints.write_text("".join(f"{n}=={v.partition('+')[0]}\n" for n, v in sorted(pinned.items())))
        report = work / "report.json"
        proc = _pip([
            "install", "--dry-run", "--ignore-installed", "--report", str(report),
            "--target", str(work / "target"), *target.pip_args(), "--find-links", str(stubs),
            "--find-links", str(built), "-c", str(constraints), *pip_extra, *requirements,
        ])  # fmt: skip
        if proc.returncode == 0:
            items = json.loads(report.read_text())["install"]
            real = []
            for it in items:
                name, version = canonicalize_name(it["metadata"]["name"]), it["metadata"]["version"]
                local = _local_path(it["download_info"]["url"])
                if local is not None and local.parent == stubs.resolve():
                    plan.kept[name] = have[name]
                    continue
                real.append(it)
                if name in have:
                    plan.replaced[name] = (have[name], version)
            return real, plan
        output = proc.stdout + proc.stderr
        refused = _REFUSED_PIN.findall(output)
        missing = _NO_WHEEL.findall(output) + _no_dist_specs(output)
        if refused:
            for name, version in refused:
                name = canonicalize_name(name)
                log(f"  the node's {name} {version} is not accepted: the wheelhouse gets one that is")
                pinned.pop(name, None)
                stub = stub_files.pop(name, None)
                if stub is not None:
                    stub.unlink()
        elif missing:
            spec = missing[0]
            log(f"  {spec}: no wheel for the node; building one here")
            wheel = _build_pure(spec, built, pip_extra)
            plan.built.append(wheel.name)
        else:
            raise RuntimeError("pip could not resolve the wheelhouse:\n" + _errors(output))
    raise RuntimeError(f"pip's resolution did not settle in {_MAX_ROUNDS} rounds")


def _no_dist_specs(output: str) -> list[str]:
    """The needs pip found no distribution of while backtracking, each with the spec that asked for it."""
    block = _NO_DIST_BLOCK.search(output)
    specs = []
    for name in block.group(1).split() if block else []:
        asked = re.search(rf"depends on ({re.escape(name)}[^\s,]*)", output, re.IGNORECASE)
        specs.append(asked.group(1) if asked else name)
    return specs


def _errors(output: str) -> str:
    """pip's output without its notes on the extra local indexes some machines configure."""
    return "\n".join(line for line in output.splitlines() if " is ignored: " not in line).strip()


def _build_pure(spec: str, built: Path, pip_extra: Sequence[str]) -> Path:
    """``pip wheel`` of an sdist-only requirement into ``built``: must give a pure-Python wheel."""
    before = set(built.glob("*.whl"))
    with tempfile.TemporaryDirectory() as tmp:
        proc = _pip(["wheel", "--no-deps", "--no-binary", ":all:", "-w", tmp, *pip_extra, spec])
        made = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(made) != 1:
            raise RuntimeError(
                f"{spec} has no wheel for the node and did not build here:\n{proc.stderr.strip()}"
            )
        if not _is_pure(made[0]):
            raise RuntimeError(
                f"{spec} has no wheel for the node, and its build here ({made[0].name}) is not pure "
                "Python: build it on a machine like the node (pip wheel) and add it to the wheelhouse"
            )
        dest = built / made[0].name
        shutil.move(str(made[0]), dest)
    assert dest not in before
    return dest


def fetch(items: list[dict], out: Path, target: Target, pip_extra: Sequence[str], plan: Plan) -> None:
    """The resolution's files into ``out``: built wheels copied, the others downloaded by their URL."""
    urls = []
    for it in items:
        url: str = it["download_info"]["url"]
        name, version = canonicalize_name(it["metadata"]["name"]), it["metadata"]["version"]
        local = _local_path(url)
        path = out / (local.name if local is not None else unquote(urlparse(url).path.rsplit("/", 1)[-1]))
        if local is not None and local.parent != out.resolve():
            shutil.copy2(local, path)
        elif local is None and not path.exists():
            urls.append(url)
        plan.wheels[name] = (version, path)
    if urls:
        proc = _pip(
            ["download", "--no-deps", "--quiet", "-d", str(out), *target.pip_args(), *pip_extra, *urls]
        )
        if proc.returncode != 0:
            raise RuntimeError("pip download failed:\n" + proc.stderr.strip())
    missing = [str(p) for _, p in plan.wheels.values() if not p.exists()]
    if missing:
        raise RuntimeError(f"not in the wheelhouse after the download: {', '.join(missing)}")


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise SystemExit(
            f"sac-glam wheelhouse: --out {out} is not empty and not a wheelhouse ({MANIFEST} missing)"
        )
    out.mkdir(parents=True, exist_ok=True)


def _source_dir(src: Path | None) -> Path:
    root = src if src is not None else Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise SystemExit(
            f"sac-glam wheelhouse: no pyproject.toml in {root}: run it from a clone, or pass --src CLONE"
        )
    return root


def _own_wheel(src: Path, out: Path) -> Path:
    """The package's own wheel, built from the clone into ``out`` (replacing an older build)."""
    for old in out.glob("sac_glam-*.whl"):
        old.unlink()
    proc = _pip(["wheel", "--no-deps", "--quiet", "-w", str(out), str(src)])
    made = list(out.glob("sac_glam-*.whl"))
    if proc.returncode != 0 or len(made) != 1:
        raise SystemExit(f"sac-glam wheelhouse: building the package's wheel failed:\n{proc.stderr.strip()}")
    return made[0]


def summary(plan: Plan, out: Path, extras: str, target: Target) -> str:
    lines = [f"wheelhouse {out} for {target.describe()}:"]
    total = 0
    for name, (version, path) in sorted(plan.wheels.items(), key=lambda kv: -kv[1][1].stat().st_size):
        size = path.stat().st_size
        total += size
        lines.append(f"  {size / 1e6:7.1f} MB  {name} {version}")
    lines.append(f"total {total / 1e6:.1f} MB in {len(plan.wheels)} wheels")
    if plan.kept:
        lines.append("the node's, kept: " + ", ".join(f"{n} {v}" for n, v in sorted(plan.kept.items())))
    for name, (old, new) in sorted(plan.replaced.items()):
        lines.append(f"the node's {name} {old} is not accepted: the install replaces it with {new}")
    if plan.built:
        lines.append("built here (no wheel on the index): " + ", ".join(plan.built))
    spec = f"'.[{extras}]'" if extras else "."
    lines += [
        "on the node (no internet):",
        f"  pip install --no-index --find-links {out} -e {spec}        # in the clone (scripts/gpu_check.sh needs it)",
        f"  pip install --no-index --find-links {out} 'sac-glam{f'[{extras}]' if extras else ''}'     # or the package alone",
    ]
    return "\n".join(lines)


def build(
    out: Path,
    have: dict[str, str],
    target: Target,
    extras: str = "",
    src: Path | None = None,
    pip_extra: Sequence[str] = (),
    log=print,
) -> Plan:
    """Build the wheelhouse in ``out`` (see the module's docstring); returns what it holds."""
    _prepare_out(out)
    own = _own_wheel(_source_dir(src), out)
    spec = f"[{extras}]" if extras else ""
    requirements = [f"sac-glam{spec} @ {own.resolve().as_uri()}", BUILD_REQUIREMENT]
    with tempfile.TemporaryDirectory(prefix="sac-glam-wheelhouse-") as tmp:
        work = Path(tmp)
        log(f"resolving for {target.describe()} ...")
        # setuptools is fetched even where the node has it: pip's isolated build environment (``-e .``)
        # sees only the wheelhouse, not the node's packages.
        have = {n: v for n, v in have.items() if n != "setuptools"}
        items, plan = resolve(requirements, have, target, work, pip_extra, log)
        log(f"fetching {len(items)} wheels ...")
        fetch(items, out, target, pip_extra, plan)
    keep = {p.name for _, p in plan.wheels.values()}
    for stale in out.glob("*.whl"):
        if stale.name not in keep:
            stale.unlink()
    manifest = {
        "target": {"python": target.python, "platforms": list(target.platforms)},
        "extras": extras,
        "have": have,
        "wheels": {n: {"version": v, "file": p.name} for n, (v, p) in sorted(plan.wheels.items())},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return plan


def _have(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, str]:
    have: dict[str, str] = {}
    if args.have_freeze:
        if not args.have_freeze.is_file():
            parser.error(f"--have-freeze {args.have_freeze}: no such file")
        have, skipped = parse_freeze(args.have_freeze.read_text())
        if skipped:
            print(
                f"sac-glam wheelhouse: {len(skipped)} lines without a version ignored (e.g. {skipped[0]!r}); "
                "`pip list --format=freeze` on the node gives every version",
                file=sys.stderr,
            )
    for item in filter(None, (s.strip() for s in ",".join(args.have).split(","))):
        got, bad = parse_freeze(item)
        if bad:
            parser.error(f"--have {item!r}: expected NAME==VERSION")
        have.update(got)
    return have


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sac-glam wheelhouse",
        description="Download the wheels an offline node lacks for this package (docs/paper_scale.md).",
    )
    parser.add_argument("--out", required=True, type=Path, help="the wheelhouse directory (created)")
    parser.add_argument("--python", help="the node's Python, e.g. 3.12 (default: this interpreter)")
    parser.add_argument(
        "--platform", action="append", default=[],
        help="the node's platform tag, e.g. manylinux_2_28_x86_64 (repeatable; default: this machine's; "
        "on the node: python -c 'import packaging.tags as t; print(next(t.sys_tags()))')",
    )  # fmt: skip
    parser.add_argument(
        "--have-freeze", type=Path, help="the node's `pip list --format=freeze` (or pip freeze)"
    )
    parser.add_argument("--have", action="append", default=[], help="NAME==VER,... the node has (repeatable)")
    parser.add_argument("--extras", default="", help="the package's extras to include, e.g. report")
    parser.add_argument("--src", type=Path, help="the clone to build the package from (default: this one)")
    parser.add_argument(
        "--with-torch", action="store_true",
        help="allow torch into the wheelhouse when the node has none (PyPI's CUDA build: several GB)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.python and not re.fullmatch(r"3\.\d+", args.python):
        parser.error(f"--python {args.python!r}: expected 3.X")
    if args.python and not args.platform:
        args.platform = [next(t.platform for t in sys_tags())]
    have = _have(args, parser)
    if "torch" not in have and not args.with_torch:
        parser.error(
            "the node's torch is not in --have/--have-freeze: install the cluster's torch on the node "
            "first and list it, or pass --with-torch for PyPI's (several GB)"
        )
    target = Target(args.python, tuple(args.platform))
    try:
        plan = build(args.out, have, target, args.extras, args.src)
    except RuntimeError as e:
        print(f"sac-glam wheelhouse: {e}", file=sys.stderr)
        return 1
    print(summary(plan, args.out, args.extras, target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
