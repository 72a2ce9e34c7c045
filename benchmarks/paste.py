"""``python -m benchmarks.paste DOC [RESULTS]``: put the tables of a benchmark run (default
benchmarks/results/latest.json) into a Markdown document, between its ``<!-- bench:NAME -->``
and ``<!-- /bench:NAME -->`` markers, one pair per benchmark; the rest of the document is left
as it is. Exit 1 when the document has no markers for any benchmark of the run."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, markdown


def block(doc: dict[str, Any], name: str) -> str:
    """The text between the markers: which run, its load, then the tables (one level down)."""
    res = doc["benchmarks"][name]
    m = doc["machine"]
    head = (
        f"*{doc['profile']} run of {doc['started']}, load average {m['load_avg'][0]} at start, "
        f"{m.get('load_avg_end', ['-'])[0]} at end; nice {m.get('nice', 0)}; "
        f"{res.get('seconds', 0):.0f} s.*\n\n"
    )
    if "error" in res:
        return head + f"failed: {res['error']}\n"
    return head + markdown(res.get("tables", [])).replace("### ", "#### ")


def paste(text: str, doc: dict[str, Any]) -> tuple[str, list[str]]:
    """``text`` with every marked block of a benchmark in ``doc`` replaced; the names done."""
    done: list[str] = []
    for name in doc["benchmarks"]:
        pat = re.compile(
            rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S
        )
        text, n = pat.subn(lambda m, nm=name: m.group(1) + block(doc, nm) + "\n" + m.group(2), text)
        if n:
            done.append(name)
    return text, done


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    target = Path(args[0])
    source = Path(args[1]) if len(args) == 2 else RESULTS / "latest.json"
    try:
        doc = json.loads(source.read_text())
        text = target.read_text()
    except (OSError, ValueError) as e:
        print(f"benchmarks.paste: {e}", file=sys.stderr)
        return 2
    new, done = paste(text, doc)
    if not done:
        print(f"benchmarks.paste: no <!-- bench:NAME --> markers in {target}", file=sys.stderr)
        return 1
    target.write_text(new)
    print(f"pasted {', '.join(done)} into {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
