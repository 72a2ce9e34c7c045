"""Analysis: the statistics of a run's raw records (percentiles, intervals, A/B deltas,
agreement of eBPF and load-generator views), pure functions over the run bundle's records.
Everything that writes a result (SMP documents, metrics, reports) reads its numbers here."""
