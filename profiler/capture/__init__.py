"""Captures: attach the probes to sidecars and apps over a window and write the document.

from profiler.capture import CaptureConfig, start_capture
session = start_capture(CaptureConfig(sidecar_pids=[envoy], app_pids=[app]))
session.run()                # or drive load, polling session.poll()
doc = session.stop()         # the capture document (docs/capture.md)
"""

from profiler.capture.session import CaptureConfig, CaptureSession, start_capture

__all__ = ["CaptureConfig", "CaptureSession", "start_capture"]
