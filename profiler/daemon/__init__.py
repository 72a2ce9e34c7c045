"""DaemonSet mode: the reconcile loop (agent), the exporter (metrics, server)."""
