"""A container's memory and CPU from its cgroup files (v2 and v1 layouts as the kernel
writes them), and the exporter's use of them: per container, never summed per process."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from profiler.capture.memory import cgroup_usage
from profiler.capture.snapshot import Snapshot, TargetSnapshot
from profiler.daemon.metrics import ContainerUsage, SnapshotCollector

MiB = 2**20
REL = Path("kubepods/burstable/pod8a6a1b3e-4a43-4b3c-9a0e-5f2f43f6c7d1") / ("ab" * 32)


def test_v2_working_set_is_current_minus_inactive_file(tmp_path: Path) -> None:
    d = tmp_path / REL
    d.mkdir(parents=True)
    (d / "memory.current").write_text(f"{100 * MiB}\n")
    (d / "memory.stat").write_text(
        f"anon {60 * MiB}\nfile {40 * MiB}\nactive_file {10 * MiB}\ninactive_file {30 * MiB}\n"
    )
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    u = cgroup_usage(d)
    assert u is not None
    assert (u.working_set, u.usage, u.inactive_file) == (70 * MiB, 100 * MiB, 30 * MiB)
    assert u.cpu_seconds == 2.5  # usec, not ms or ns


def test_v1_reads_the_memory_and_cpuacct_twins_of_any_hierarchy(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu,cpuacct" / REL
    mem = tmp_path / "memory" / REL
    pids = tmp_path / "pids" / REL
    for d in (cpu, mem, pids):
        d.mkdir(parents=True)
    (cpu / "cpuacct.usage").write_text("1500000000\n")  # ns
    (mem / "memory.usage_in_bytes").write_text(f"{80 * MiB}\n")
    # the container's own inactive_file and the hierarchical total_: v1's is total_
    (mem / "memory.stat").write_text(
        f"inactive_file {1 * MiB}\ntotal_inactive_file {16 * MiB}\ntotal_rss {60 * MiB}\n"
    )
    for found_in in (pids, cpu, mem):  # whichever hierarchy the discovery walked first
        u = cgroup_usage(found_in)
        assert u is not None
        assert u.working_set == 64 * MiB and u.cpu_seconds == 1.5


def test_nothing_accounted_is_none(tmp_path: Path) -> None:
    assert cgroup_usage(tmp_path) is None
    (tmp_path / "cpu.stat").write_text("usage_usec 10\n")  # v2 without the memory controller
    u = cgroup_usage(tmp_path)
    assert u is not None and u.working_set is None and u.cpu_seconds == 1e-5


def _scrape(c: SnapshotCollector) -> dict[tuple[str, str], float]:
    reg = CollectorRegistry()
    reg.register(c)
    return {
        (s.name, s.labels.get("k8s_container_name", "")): s.value
        for f in text_string_to_metric_families(generate_latest(reg).decode())
        for s in f.samples
    }


def test_sidecar_memory_is_the_containers_not_a_sum_of_processes() -> None:
    labels = {"namespace": "shop", "pod": "p", "container": "istio-proxy", "mesh": "ISTIO"}
    app = dict(labels, container="app")
    # an Envoy hot restart: two proxy processes of one container, each with its own RSS
    snap = Snapshot(
        {
            10: TargetSnapshot(labels, "sidecar", 5, {}, 1.0, 50 * MiB),
            11: TargetSnapshot(labels, "sidecar", 2, {}, 0.5, 50 * MiB),
            12: TargetSnapshot(app, "app", 0, {}, 3.0, 20 * MiB),
        },
        attached=3,
    )
    c = SnapshotCollector()
    c.update(snap)
    assert _scrape(c)["smp_sidecar_memory_working_set_bytes", "istio-proxy"] == 100 * MiB
    c.update(
        snap,
        [
            ContainerUsage(labels, "sidecar", 70 * MiB, 2.25),
            ContainerUsage(app, "app", 33 * MiB, 3.5),
        ],
    )
    m = _scrape(c)
    assert m["smp_sidecar_memory_working_set_bytes", "istio-proxy"] == 70 * MiB
    assert m["smp_container_memory_working_set_bytes", "istio-proxy"] == 70 * MiB
    assert m["smp_container_memory_working_set_bytes", "app"] == 33 * MiB
    # the container's CPU (pilot-agent included) beside Envoy's own
    assert m["smp_container_cpu_seconds_total", "istio-proxy"] == 2.25
    assert m["smp_sidecar_cpu_seconds_total", "istio-proxy"] == 1.5
    assert m["smp_container_cpu_seconds_total", "app"] == 3.5


def test_capture_memory_finds_the_container_from_another_cgroup_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a private cgroup namespace /proc/<pid>/cgroup shows only the tail of the path,
    which does not exist under the reader's own mount: the container's cgroup is found by
    its id instead, and its working set used, not the process's RSS."""
    import os

    from profiler.capture import memory

    cid = "cd" * 32
    uid_ = "8a6a1b3e_4a43_4b3c_9a0e_5f2f43f6c7d1"
    tail = f"/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{cid}.scope"
    host = tmp_path / "host" / "kubepods.slice" / "kubepods-besteffort.slice" / tail.lstrip("/")
    host.mkdir(parents=True)
    (host / "memory.current").write_text(f"{90 * MiB}\n")
    (host / "memory.stat").write_text(f"inactive_file {26 * MiB}\n")
    (tmp_path / "ns-root").mkdir()
    walked: list[str] = []

    def by_id(container_id: str) -> list[str]:
        walked.append(container_id)
        return [str(host)]

    monkeypatch.setattr(memory, "cgroup_of", lambda pid, h=None: tail if h is None else "/")
    monkeypatch.setattr(memory, "cgroup2_mount", lambda: str(tmp_path / "ns-root"))
    monkeypatch.setattr(memory, "find_cgroups_by_container_id", by_id)
    monkeypatch.setattr(memory, "_DIRS", {})
    m = memory.memory_of(os.getpid())
    assert m is not None
    assert (m.cgroup_current, m.working_set) == (90 * MiB, 64 * MiB)
    memory.memory_of(os.getpid())
    assert walked == [cid]  # found once, remembered
