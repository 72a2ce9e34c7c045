"""One module per command: its options (Typer annotations on its ``main``) and its work.

``main`` returns the exit code; ``exits(main)`` is the command Typer runs (click ignores return
values, so the code is raised as ``typer.Exit``). Heavy imports stay inside ``main``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer


def exits(main: Callable[..., int]) -> Callable[..., None]:
    """``main`` as a Typer command: same signature and help, its result the exit code."""

    @functools.wraps(main)
    def command(*args: Any, **kwargs: Any) -> None:
        # looked up when run, by name, as calling ``module.main()`` would: what the module
        # holds then (a test may replace it) is what runs
        current = getattr(sys.modules[main.__module__], main.__name__)
        raise typer.Exit(current(*args, **kwargs))

    return command
