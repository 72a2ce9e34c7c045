"""Output files of ``capture``, ``run`` and ``demo``: checked before any measurement, and
never lost after it.

``check`` runs before the work starts: the parent directory must exist (it is never created
silently, as ``report`` refuses it too) and a file must really be creatable there: the test
creates and removes a hidden file, because ``access(2)`` says yes to root on /proc or a
read-only mount. ``save`` runs at the end: when the file cannot be written after all (disk
full, directory removed meanwhile), the result goes next to it, else to the temporary
directory, and one line on stderr says where; the caller then exits with
``OutputNotWritable``'s code so that a script notices.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from profiler.errors import OutputNotWritable


def check(path: Path, option: str = "-o") -> Path:
    """Raise ``OutputNotWritable`` (one line) unless ``path`` can be written."""
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise OutputNotWritable(f"bad {option} {path}: {parent} {what} (create it first)")
    if path.is_dir():
        raise OutputNotWritable(f"bad {option} {path}: is a directory")
    try:
        if path.exists():
            with open(path, "r+b"):  # opened for writing, not truncated
                pass
        else:
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise OutputNotWritable(f"bad {option} {path}: cannot write there: {e.strerror}") from None
    return path


def _fallbacks(path: Path) -> list[Path]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{path.stem}.{stamp}-{os.getpid()}{path.suffix}"
    return [path.with_name(name), Path(tempfile.gettempdir()) / f"smp-profiler-{name}"]


def save(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(path)``; if that fails, ``write`` to a fallback next to it or in the temporary
    directory and say where on stderr. Returns where the data went; raises
    ``OutputNotWritable`` only when every place failed."""
    try:
        write(path)
        return path
    except OSError as e:
        first = e
    for other in _fallbacks(path):
        try:
            write(other)
        except OSError:
            continue
        print(
            f"smp-profiler: could not write {path} ({first.strerror or first}); "
            f"saved to {other} instead",
            file=sys.stderr,
        )
        return other
    raise OutputNotWritable(
        f"could not write {path} ({first.strerror or first}) nor a fallback file"
    )


def save_text(path: Path, text: str) -> Path:
    return save(path, lambda p: p.write_text(text))
