"""SMP v0.6.1 documents: build them from a run bundle, read them back, validate them."""

from __future__ import annotations

from profiler.smp.read import read_documents, validate
from profiler.smp.schema import SMP_VERSION

__all__ = ["SMP_VERSION", "read_documents", "validate"]
