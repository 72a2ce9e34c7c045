"""The query layer of ``report --prometheus`` on Prometheus' HTTP API JSON, as its
documentation (prometheus.io/docs/prometheus/latest/querying/api/) shows the answers."""

from __future__ import annotations

import math
from typing import Any

import pytest

from profiler.daemon.promql import (
    Prometheus,
    PrometheusQueryError,
    Sample,
    build_window,
    parse_response,
    quantile,
    selector,
    window_queries,
)
from profiler.errors import TargetUnreachable, UsageError

VECTOR: dict[str, Any] = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {
                "metric": {"__name__": "up", "job": "prometheus", "instance": "localhost:9090"},
                "value": [1435781451.781, "1"],
            },
            {
                "metric": {"__name__": "up", "job": "node", "instance": "localhost:9100"},
                "value": [1435781451.781, "0"],
            },
        ],
    },
}
MATRIX: dict[str, Any] = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "up", "job": "prometheus", "instance": "localhost:9090"},
                "values": [[1435781430.781, "1"], [1435781445.781, "1"], [1435781460.781, "1"]],
            },
            {
                "metric": {"__name__": "up", "job": "node", "instance": "localhost:9091"},
                "values": [[1435781430.781, "0"], [1435781445.781, "0"], [1435781460.781, "1"]],
            },
        ],
    },
}
SCALAR: dict[str, Any] = {
    "status": "success",
    "data": {"resultType": "scalar", "result": [1435781451.781, "NaN"]},
}
ERROR: dict[str, Any] = {
    "status": "error",
    "errorType": "bad_data",
    "error": 'invalid parameter "query": 1:6: parse error: unexpected end of input',
}


def test_parse_vector_matrix_scalar() -> None:
    v = parse_response(VECTOR)
    assert [(s.labels["job"], s.value, s.time) for s in v] == [
        ("prometheus", 1.0, 1435781451.781),
        ("node", 0.0, 1435781451.781),
    ]
    m = parse_response(MATRIX)
    assert [(s.labels["job"], s.value, s.time) for s in m] == [
        ("prometheus", 1.0, 1435781460.781),
        ("node", 1.0, 1435781460.781),
    ]
    (s,) = parse_response(SCALAR)
    assert math.isnan(s.value) and s.labels == {}


def test_parse_error_answers() -> None:
    with pytest.raises(PrometheusQueryError, match="bad_data: invalid parameter"):
        parse_response(ERROR)
    with pytest.raises(PrometheusQueryError, match="resultType"):
        parse_response({"status": "success", "data": {}})
    with pytest.raises(PrometheusQueryError, match="string"):
        parse_response({"status": "success", "data": {"resultType": "string", "result": []}})


def test_quantile_interpolates_like_histogram_quantile() -> None:
    b = [(0.1, 10.0), (0.2, 20.0), (math.inf, 20.0)]
    assert quantile(0.5, b) == pytest.approx(0.1)
    assert quantile(0.75, b) == pytest.approx(0.15)
    assert quantile(1.0, b) == pytest.approx(0.2)


def test_quantile_edge_cases() -> None:
    assert quantile(0.5, [(0.1, 0.0), (math.inf, 5.0)]) == 0.1  # all above the last bound
    assert math.isnan(quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))  # no observations
    with pytest.raises(ValueError, match="Inf"):
        quantile(0.5, [(0.1, 1.0)])
    with pytest.raises(ValueError, match="within"):
        quantile(1.5, [(math.inf, 1.0)])


def test_selector_quotes_values_and_rejects_bad_names() -> None:
    assert selector("shop", leg="upstream") == '{k8s_namespace_name="shop",leg="upstream"}'
    assert selector(None) == "{}"
    assert selector('a"b') == '{k8s_namespace_name="a\\"b"}'
    with pytest.raises(UsageError):
        selector(None, **{"bad-name": "x"})


def test_window_queries_merge_histograms_by_le() -> None:
    q = window_queries(300, "shop")
    assert q["leg_buckets"].startswith("sum by (le, leg) (max by (instance, ")
    assert '{k8s_namespace_name="shop"}[300s]' in q["leg_buckets"]
    # every per-series sum collapses duplicate scrapes of one agent first
    for name in ("leg_buckets", "leg_sum", "requests", "sidecar_cpu_seconds", "app_cpu_seconds",
                 "sidecar_memory_bytes", "dropped"):  # fmt: skip
        assert "max by (instance, " in q[name], name
    with pytest.raises(UsageError):
        window_queries(0)


def test_build_window_from_answers() -> None:
    def s(value: float, **labels: str) -> list[Sample]:
        return [Sample(labels, value, 0.0)]

    answers = {
        "leg_buckets": [
            Sample({"leg": "sidecar_total", "le": "0.0001"}, 30.0, 0.0),
            Sample({"leg": "sidecar_total", "le": "+Inf"}, 60.0, 0.0),
            Sample({"leg": "sidecar_total", "le": "0.0002"}, 60.0, 0.0),
        ],
        "requests": s(600.0),
        "sidecar_cpu_seconds": s(3.0),
        "sidecar_memory_bytes": s(2.0 * 2**20 * 50),
        "sidecars": s(2.0),
    }
    w = build_window(60, answers)
    assert w.rps == 10.0 and w.sidecar_cpu_mcores == 50.0 and w.sidecar_mem_mb == 100.0
    assert w.sidecars == 2 and w.app_cpu_seconds == 0.0
    assert [le for le, _ in w.legs["sidecar_total"]] == [0.0001, 0.0002, math.inf]
    assert w.percentile("sidecar_total", 50) == pytest.approx(0.0001)


def test_unreachable_prometheus_is_one_clear_error() -> None:
    with pytest.raises(TargetUnreachable, match="cannot reach Prometheus"):
        Prometheus("http://127.0.0.1:9", timeout=2).query("up")
