"""The SMP mapping pinned: a fixed bundle gives exactly these four documents.

Regenerate (after a deliberate mapping change, and review the diff) with
``SMP_UPDATE_GOLDEN=1 pytest tests/unit/test_smp_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from profiler.smp import validate
from profiler.smp.bundle import bundle_json
from profiler.smp.schema import DOCUMENTS
from tests.unit import smp_fixtures as fx

GOLDEN = Path(__file__).parent / "golden" / "smp_documents.json"


def test_smp_documents_match_the_golden_file() -> None:
    doc = bundle_json(fx.bundle(rates=(100.0, 200.0), repeat=2))
    smp = {k: doc[k] for k in DOCUMENTS}
    if os.environ.get("SMP_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(smp, indent=2, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert validate(golden) == []
    assert smp == golden
