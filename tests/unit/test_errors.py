from __future__ import annotations

import inspect

from profiler import errors


def test_every_error_has_its_own_nonzero_exit_code_or_shares_on_purpose() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.SmpError)
    ]
    assert all(c.exit_code != 0 for c in classes)
    # 2 is the usage code (click's own too); the rest are distinct
    codes = [c.exit_code for c in classes if c.exit_code != 2]
    assert len(codes) == len(set(codes))
