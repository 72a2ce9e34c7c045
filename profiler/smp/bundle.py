"""Writing a run bundle: the SMP documents and details derived from its raw records, then the
records themselves (``RunBundle.run_json``). The model only holds and reads the records; the
derivation lives here, on the SMP floor, so the model never imports what is built from it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from profiler.model import FORMAT_VERSION, KIND, RunBundle, dumps
from profiler.smp.build import build_documents


def bundle_json(b: RunBundle) -> dict[str, Any]:
    """The whole bundle: SMP documents, details and the raw run."""
    doc: dict[str, Any] = {"format_version": FORMAT_VERSION, "kind": KIND}
    doc.update(build_documents(b))
    doc["run"] = b.run_json()
    return doc


def write_document(doc: Mapping[str, Any], path: Path, fmt: str | None = None) -> str:
    """Write as JSON or YAML (by ``fmt``, else by the suffix); returns the format used."""
    fmt = fmt or ("yaml" if path.suffix in (".yaml", ".yml") else "json")
    path.write_text(dumps(dict(doc), fmt))
    return fmt


def write_bundle(b: RunBundle, path: Path, fmt: str | None = None) -> str:
    """Write the whole bundle as JSON or YAML; returns the format used."""
    return write_document(bundle_json(b), path, fmt)
