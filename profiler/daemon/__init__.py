"""DaemonSet mode: the reconcile loop (agent), the exporter (metrics, server)."""

# The agent's longest wait for the probe's records between two looks at the node (the
# daemon's --poll-ms). A poll returns sooner when the ring is half full (SidecarProbe.poll);
# longer waits make bigger batches, less CPU per request (docs/overhead.md), and a later
# reaction to a stop or a pod event.
POLL_MS = 500
