"""``smp-profiler daemon`` refuses bad input with one line on stderr and an exit code."""

from __future__ import annotations

import pytest

from profiler.cli import main


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["--no-kubernetes", "--interval", "0"], 2, "--interval must be positive"),
        (["--no-kubernetes", "--metrics-port", "70000"], 2, "not a port number"),
        (["--no-kubernetes", "--cgroup-root", "/nonexistent"], 2, "not a directory"),
        (["--no-kubernetes", "--sidecar-names", " , "], 2, "at least one container name"),
        (["--no-kubernetes", "--nice", "20"], 2, "--nice must be between -20 and 19"),
        (["--no-kubernetes", "--poll-ms", "0"], 2, "--poll-ms must be between 10 and 5000"),
        ([], 2, "needs --node-name"),
        (["--node-name", "n1", "--kubeconfig", "/nonexistent"], 4, "no Kubernetes configuration"),
    ],
)
def test_daemon_bad_input(
    argv: list[str],
    code: int,
    text: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main(["daemon", *argv]) == code
    err = capsys.readouterr().err
    assert text in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_renice_without_the_right_says_so_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A niceness below the current one needs CAP_SYS_NICE: the kernel's EPERM is a warning
    with the niceness the agent keeps, never a crash (the real setting is checked on the
    running daemon in test_daemon_testbed)."""
    import errno
    import os

    from profiler.daemon import agent

    calls: list[int] = []

    def refuse(which: int, who: int, prio: int) -> None:
        calls.append(prio)
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    agent.renice(0)
    assert calls == []  # 0: left as it was
    with caplog.at_level("WARNING"):
        agent.renice(-5)
    assert calls == [-5]
    assert "cannot set niceness -5 (Operation not permitted): running at" in caplog.text
