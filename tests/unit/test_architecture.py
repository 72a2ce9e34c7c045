"""The import graph of profiler/ against the floors of docs/architecture.md.

Every import is counted, also those inside functions (a lazy import is still an arrow): a
module on no floor, an import up a floor, an import circle, or a doc naming a module that
does not exist each fail here.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "profiler"
DOC = ROOT / "docs" / "architecture.md"


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of profiler/ (a package by its __init__)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The profiler modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if sub in known else target)
    out = set()
    for f in found:  # the deepest known module named: ``import profiler.capture.engine``
        while f and f not in known:
            f = f.rpartition(".")[0]
        if f and f != name:
            out.add(f)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def floors_from_doc(text: str) -> list[tuple[int, list[str]]]:
    """(floor, names) from the table between ``<!-- floors -->`` markers."""
    block = text.split("<!-- floors -->", 1)[1].split("<!-- /floors -->", 1)[0]
    rows = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            rows.append((int(cells[0]), re.findall(r"`([\w/]+)`", cells[1])))
    return rows


def floor_of() -> dict[str, int]:
    """Each floor entry as a dotted prefix: ``capture/`` is the package, ``cli`` a module."""
    out: dict[str, int] = {}
    for floor, names in floors_from_doc(DOC.read_text()):
        for n in names:
            key = "profiler" if n == "__init__" else "profiler." + n.rstrip("/")
            assert key not in out, f"{n} is on two floors in {DOC.name}"
            out[key] = floor
    return out


def floor(module: str, floors: dict[str, int]) -> int | None:
    while module:
        if module in floors:
            return floors[module]
        module = module.rpartition(".")[0]
    return None


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_is_on_a_floor_and_every_floor_entry_exists() -> None:
    floors = floor_of()
    mods = modules()
    assert not [m for m in mods if floor(m, floors) is None], f"add them to {DOC.name}"
    assert not [k for k in floors if k not in mods], f"{DOC.name} names modules that are gone"


def test_no_import_points_up_a_floor() -> None:
    floors = floor_of()
    up = [
        f"{m} (floor {floor(m, floors)}) imports {t} (floor {floor(t, floors)})"
        for m, targets in graph().items()
        for t in sorted(targets)
        if (floor(t, floors) or 0) > (floor(m, floors) or 0)
    ]
    assert up == []


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_the_checks_can_fail() -> None:
    """The cycle finder sees a circle and a self-made up-arrow is caught."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    floors = floor_of()
    assert floor("profiler.capture.engine", floors) == 2
    assert floor("profiler.daemon.metrics", floors) == 4
    assert floor("profiler.errors", floors) == 0


def test_every_path_the_doc_names_exists() -> None:
    text = DOC.read_text()
    named = set(re.findall(r"\b((?:profiler|bpf|docs)/[\w/.-]+\.(?:py|c|h|md))", text))
    assert named, "the doc names no files: the pattern is wrong"
    assert not [p for p in sorted(named) if not (ROOT / p).exists()]
    packages = sorted(p.parent.name for p in PKG.glob("*/__init__.py"))
    assert not [p for p in packages if f"`{p}/`" not in text], "every package on a floor"


def test_help_imports_no_heavy_module() -> None:
    """The CLI assembles every command's options: importing it must not pull numpy, rich,
    bcc, kubernetes or the probe in (``--help`` stays instant; a top-level import in a
    ``commands/<name>.py`` would break that)."""
    heavy = ("numpy", "rich", "bcc", "kubernetes", "prometheus_client", "yaml", "psutil")
    code = (
        "import sys; import profiler.cli; "
        f"print(sorted({{k.split('.')[0] for k in sys.modules}} & set({heavy!r})))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["profiler.cli", "profiler.commands.report"])
def test_commands_are_the_top_floor(module: str) -> None:
    assert floor(module, floor_of()) == max(f for f, _ in floors_from_doc(DOC.read_text()))
