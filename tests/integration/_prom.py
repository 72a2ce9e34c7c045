"""Helpers for tests with a real Prometheus and a real ``smp-profiler daemon`` (import as
``from _prom import ...``): both are started on loopback and always stopped."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from profiler.daemon.promql import Prometheus

CLI = [sys.executable, "-m", "profiler.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Prometheus exposition text -> {(name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def scrape(url: str) -> Samples:
    """The samples of ``url``/metrics (a daemon's metrics URL); fails unless it answers 200."""
    code, text = http_get(url + "/metrics")
    assert code == 200, (code, text)
    return samples(text)


def metrics_url(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> str:
    """The metrics URL a daemon started with ``--metrics-port 0 --metrics-address 127.0.0.1``
    logs (``metrics on 127.0.0.1:PORT``); fails when it exits first or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(r"metrics on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if m:
            return f"http://127.0.0.1:{m.group(1)}"
        assert proc.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal ``proc`` (SIGTERM) and its exit code; killed after 20 s (code -9)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextlib.contextmanager
def prometheus_server(
    tmp: Path, targets: list[str], scrape_interval: str = "1s"
) -> Iterator[Prometheus]:
    """Debian's Prometheus on a free loopback port scraping ``targets`` (host:port), with
    its storage under ``tmp``; ready when yielded, stopped on exit."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is not installed (make setup)"
    cfg = tmp / "prometheus.yml"
    job = {"job_name": "smp-profiler", "static_configs": [{"targets": targets}]}
    glob = {"scrape_interval": scrape_interval, "evaluation_interval": "1s"}
    cfg.write_text(json.dumps({"global": glob, "scrape_configs": [job]}))
    port, log = free_port(), tmp / "prometheus.log"
    argv = [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while http_get(url + "/-/ready")[0] != 200:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.1)
        yield Prometheus(url)
    finally:
        stop(proc)


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text())
            if m:
                return m
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {pattern!r} in: {self.text()[-2000:]}"
            time.sleep(0.05)


@contextlib.contextmanager
def daemon_process(log: Path, *args: str, timeout: float = 90.0) -> Iterator[Daemon]:
    """``smp-profiler daemon --metrics-port 0 ...args`` on loopback, once /readyz is 200;
    SIGTERM on exit (its exit code is asserted 0)."""
    argv = [*CLI, "daemon", "--metrics-port", "0", "--metrics-address", "127.0.0.1", *args]
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    code = None
    try:
        d = Daemon(proc, log, metrics_url(proc, log, timeout))
        deadline = time.monotonic() + timeout
        while http_get(d.url + "/readyz")[0] != 200:
            assert proc.poll() is None, d.text()
            assert time.monotonic() < deadline, http_get(d.url + "/readyz")
            time.sleep(0.1)
        yield d
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()
