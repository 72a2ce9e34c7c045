from __future__ import annotations

import inspect

import pytest

from profiler import errors


def test_every_error_has_its_own_nonzero_exit_code_or_shares_on_purpose() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.SmpError)
    ]
    assert all(c.exit_code != 0 for c in classes)
    # 2 is the usage code (click's own too); the rest are distinct
    codes = [c.exit_code for c in classes if c.exit_code != 2]
    assert len(codes) == len(set(codes))


def _smp_errors() -> list[type[errors.SmpError]]:
    return [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.SmpError)
    ]


@pytest.mark.parametrize("cls", _smp_errors(), ids=lambda c: c.__name__)
def test_cli_turns_each_error_into_one_line_and_its_code(
    cls: type[errors.SmpError], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from profiler import cli
    from profiler.commands import doctor

    def fail(json_out: bool = False) -> int:
        raise cls("what went wrong")

    monkeypatch.setattr(doctor, "main", fail)
    assert cli.main(["doctor"]) == cls.exit_code
    assert capsys.readouterr().err == "smp-profiler: error: what went wrong\n"


def test_documented_codes() -> None:
    """The codes the docs and the README promise (sysexits where one fits)."""
    assert errors.PermissionDenied.exit_code == 77  # EX_NOPERM
    assert errors.OutputNotWritable.exit_code == 73  # EX_CANTCREAT
    assert errors.Interrupted.exit_code == 130  # 128 + SIGINT


def test_a_permission_error_anywhere_is_77_and_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from profiler import cli
    from profiler.commands import doctor

    def fail(json_out: bool = False) -> int:
        raise PermissionError(13, "Permission denied", "/run/smp-profiler/x/testbed.json")

    monkeypatch.setattr(doctor, "main", fail)
    assert cli.main(["doctor"]) == 77
    assert capsys.readouterr().err == (
        "smp-profiler: error: Permission denied: /run/smp-profiler/x/testbed.json (run with sudo)\n"
    )
