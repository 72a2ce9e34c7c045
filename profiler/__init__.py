"""smp-profiler: what a service-mesh sidecar really costs, measured with eBPF."""

__version__ = "0.1.0"
