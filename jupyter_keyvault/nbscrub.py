"""Scrub notebooks (as nbformat JSON dicts) and message contents with the one engine.

Used by the pre-save hook, the server's iopub filter and `jupyter keyvault scan`.
Pure Python: no tornado, no Jupyter imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .scrub import Scrubber

_BINARY_PREFIXES = ("image/", "audio/", "video/", "application/pdf", "application/octet-stream")


def is_text_mimetype(mimetype: str) -> bool:
    return not mimetype.startswith(_BINARY_PREFIXES)


def scrub_value(value: Any, scrubber: Scrubber) -> tuple[Any, int]:
    """Scrub every string inside a JSON-like value. Returns (new value, number of strings changed)."""
    if isinstance(value, str):
        new = scrubber.scrub(value)
        return new, int(new != value)
    if isinstance(value, list):
        changed = 0
        out = []
        for item in value:
            new, n = scrub_value(item, scrubber)
            out.append(new)
            changed += n
        return out, changed
    if isinstance(value, dict):
        changed = 0
        out = {}
        for key, item in value.items():
            new, n = scrub_value(item, scrubber)
            out[key] = new
            changed += n
        return out, changed
    return value, 0


def scrub_mime_bundle(data: dict, scrubber: Scrubber) -> int:
    """Scrub text-like entries of a display `data` bundle in place (never image/* etc.)."""
    changed = 0
    for mimetype, value in list(data.items()):
        if is_text_mimetype(mimetype):
            data[mimetype], n = scrub_value(value, scrubber)
            changed += n
    return changed


def scrub_output(output: dict, scrubber: Scrubber) -> int:
    """One nbformat output (or iopub content of the same shape), in place."""
    changed = 0
    if "text" in output:
        output["text"], n = scrub_value(output["text"], scrubber)
        changed += n
    if isinstance(output.get("data"), dict):
        changed += scrub_mime_bundle(output["data"], scrubber)
    for key in ("ename", "evalue", "traceback"):
        if key in output:
            output[key], n = scrub_value(output[key], scrubber)
            changed += n
    return changed


@dataclass
class NotebookReport:
    outputs_redacted: int = 0
    sources_with_secrets: list[dict] = field(default_factory=list)  # {"cell": i, "labels": [...]}, never values
    sources_redacted: int = 0
    metadata_redacted: int = 0

    @property
    def clean(self) -> bool:
        return not (self.outputs_redacted or self.sources_with_secrets or self.metadata_redacted)


def _source_text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else (source or "")


def scrub_notebook(nb: dict, scrubber: Scrubber, *, sources: str = "warn") -> NotebookReport:
    """Scrub a notebook dict in place: outputs and widget state always; sources per `sources`
    ("warn": report only, "redact": replace, "off": ignore)."""
    report = NotebookReport()
    for index, cell in enumerate(nb.get("cells") or []):
        for output in cell.get("outputs") or []:
            report.outputs_redacted += scrub_output(output, scrubber)
        if cell.get("attachments"):
            cell["attachments"], n = scrub_value(cell["attachments"], scrubber)
            report.outputs_redacted += n
        if sources == "off":
            continue
        text = _source_text(cell.get("source"))
        found = scrubber.find(text)
        if found:
            report.sources_with_secrets.append({"cell": index, "labels": sorted({label for *_, label in found})})
            if sources == "redact":
                cell["source"] = scrubber.scrub(text)
                report.sources_redacted += 1
    metadata = nb.get("metadata")
    if isinstance(metadata, dict) and metadata:
        nb["metadata"], report.metadata_redacted = scrub_value(metadata, scrubber)
    return report
