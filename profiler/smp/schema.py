"""The SMP v0.6.1 messages as data: every field name and its proto type.

Field names and types are those of ``/work/shared/SMP.md`` (SMP protos at v0.6.1). A type is
one of ``string bool int32 int64 double timestamp map`` (map<string, string>),
``enum:<Name>``, ``msg:<Name>``, with a ``repeated:`` prefix for lists.
"""

from __future__ import annotations

SMP_VERSION = "v0.6.1"

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

ENUMS: dict[str, dict[str, int]] = {
    "Protocol": {"INVALID": 0, "HTTP": 1, "TCP": 2, "UDP": 3, "GRPC": 4},
    "ServiceMeshType": {
        "INVALID_MESH": 0,
        "APP_MESH": 1,
        "CONSUL": 2,
        "ISTIO": 3,
        "KUMA": 4,
        "LINKERD": 5,
        "TRAEFIK_MESH": 6,
        "OCTARINE": 7,
        "NETWORK_SERVICE_MESH": 8,
        "TANZU": 9,
        "OPEN_SERVICE_MESH": 10,
        "NGINX_SERVICE_MESH": 11,
        "CILIUM_SERVICE_MESH": 12,
    },
    "ApplicationProtocol": {"HTTP": 0, "HTTPS": 1},
}

_GATEWAY = {
    "count": "int32",
    "cpu_mcores": "int32",
    "mem_mb": "int32",
    "rps": "int32",
    "bps": "int32",
}

MESSAGES: dict[str, dict[str, str]] = {
    "PerformanceTestConfig": {
        "smp_version": "string",
        "id": "string",
        "name": "string",
        "labels": "map",
        "clients": "repeated:msg:Client",
        "duration": "string",
    },
    "Client": {
        "internal": "bool",
        "load_generator": "string",
        "protocol": "enum:Protocol",
        "connections": "int32",
        "rps": "int64",
        "headers": "map",
        "cookies": "map",
        "body": "string",
        "content_type": "string",
        "endpoint_urls": "repeated:string",
        "ssl_certificate": "string",
        "additional_options": "string",
    },
    "PerformanceTestResult": {
        "smp_version": "string",
        "id": "string",
        "labels": "map",
        "start_time": "timestamp",
        "end_time": "timestamp",
        "latencies_ms": "msg:Latency",
        "actual_qps": "double",
        "details_uri": "string",
        "test_id": "string",
        "mesh_config_id": "string",
        "env_id": "string",
    },
    "Latency": {
        "min": "double",
        "average": "double",
        "p50": "double",
        "p90": "double",
        "p99": "double",
        "max": "double",
    },
    "ServiceMeshConfig": {
        "smp_version": "string",
        "id": "string",
        "labels": "map",
        "ingress_gateway": "msg:IngressGateway",
        "sidecar": "msg:Sidecar",
        "mesh_telemetry": "msg:MeshTelemetry",
        "mesh_policy": "msg:MeshPolicy",
        "mesh_control_plane": "msg:MeshControlPlane",
        "mesh_policy_enabled": "bool",
        "mesh_telemetry_enabled": "bool",
        "mtls_enabled": "bool",
        "proxy_concurrency": "int32",
        "mesh_build": "string",
        "proxy_build": "string",
        "exp_group_uuid": "string",
        "exp_uuid": "string",
        "profile": "string",
        "mesh_type": "msg:ServiceMesh",
        "application_metadata": "msg:ApplicationMetadata",
    },
    "IngressGateway": dict(_GATEWAY),
    "Sidecar": dict(_GATEWAY),
    "MeshTelemetry": {"count": "int32", "cpu_mcores": "int32", "mem_mb": "int32", "rps": "int32"},
    "MeshPolicy": {
        "count": "int32",
        "cpu_mcores": "int32",
        "mem_mb": "int32",
        "rps": "int32",
        "cache_hit_rate": "int32",
    },
    "MeshControlPlane": {
        "count": "int32",
        "cpu_mcores": "int32",
        "mem_mb": "int32",
        "endpoints": "int32",
        "services": "int32",
        "sidecars": "int32",
        "virtual_services": "int32",
        "destination_rules": "int32",
        "lds_latency_ms": "int32",
        "cds_latency_ms": "int32",
    },
    "ServiceMesh": {
        "type": "enum:ServiceMeshType",
        "version": "string",
        "labels": "map",
        "annotations": "map",
    },
    "ApplicationMetadata": {
        "application_name": "string",
        "application_version": "string",
        "helmchart_name": "string",
        "helmchart_version": "string",
        "cnabspec_version": "string",
        "compose_version": "string",
        "cluster_name": "string",
        "k8s_version_supported": "string",
        "application_protocol": "enum:ApplicationProtocol",
    },
    "EnvironmentConfig": {
        "smp_version": "string",
        "id": "string",
        "labels": "map",
        "kubernetes_version": "string",
        "nodes": "repeated:msg:Node",
        "individual_workloads": "repeated:msg:IndividualWorkload",
        "traffic_metadata": "msg:TrafficMetadata",
    },
    "Node": {"type": "string", "cores": "int32", "mem_mb": "int64"},
    "IndividualWorkload": {
        "name": "string",
        "count": "int32",
        "cpu_mcores": "int32",
        "mem_mb": "int32",
    },
    "TrafficMetadata": {
        "load_balance_name": "string",
        "load_balance_ip": "string",
        "host_endpoint": "string",
        "prometheus_url": "string",
        "http_headers": "string",
        "user_agent": "string",
        "ping_health_endpoint": "string",
    },
}

# The four documents of a bundle and the message of each (results are a list).
DOCUMENTS: dict[str, tuple[str, bool]] = {
    "performance_test_config": ("PerformanceTestConfig", False),
    "performance_test_results": ("PerformanceTestResult", True),
    "service_mesh_config": ("ServiceMeshConfig", False),
    "environment_config": ("EnvironmentConfig", False),
}


def camel(name: str) -> str:
    """snake_case -> lowerCamelCase, the canonical protobuf JSON spelling."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)
