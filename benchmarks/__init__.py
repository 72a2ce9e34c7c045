"""smp-profiler's benchmarks: ``python -m benchmarks`` (``make bench``); see docs/overhead.md."""
