"""Scrub notebooks (as nbformat JSON dicts) and kernel messages with the one engine.

One walk, `scrub_json`, visits every string of a JSON-like value — dict keys included —
and is used by the pre-save hook, `jupyter keyvault scan` (both through `scrub_notebook`)
and the server's kernel-message filter, so they can never disagree about a field. Each
string is scrubbed for secrets in clear and in encoded form (`Scrubber.scrub_deep`: base64,
HTML character references, percent-encoding, escapes); strings under a base64 mimetype
(`image/png`, …) are also decoded and the decoded bytes scanned.
Pure Python: no tornado, no Jupyter imports.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from .scrub import Scrubber

_BINARY_PREFIXES = ("image/", "audio/", "video/", "application/pdf", "application/octet-stream")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s_-]+")


def is_text_mimetype(mimetype: str) -> bool:
    return not mimetype.startswith(_BINARY_PREFIXES) or mimetype.startswith("image/svg")


def scrub_base64(text: str, scrubber: Scrubber) -> tuple[str, int]:
    """A base64 payload: decoded, scanned, redacted in place (same length) and re-encoded.
    Text that is not base64 is returned unchanged (it was scrubbed as text already)."""
    if len(text) < 12 or not _BASE64_TEXT.fullmatch(text):
        return text, 0
    compact = "".join(text.split())
    urlsafe = "-" in compact or "_" in compact
    try:
        data = (base64.urlsafe_b64decode if urlsafe else base64.b64decode)(compact + "=" * (-len(compact) % 4))
    except (binascii.Error, ValueError):
        return text, 0
    redacted, n = scrubber.scrub_bytes(data)
    if not n:
        return text, 0
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(redacted).decode("ascii"), n


def scrub_json(value: Any, scrubber: Scrubber, path: str = "", found: list[str] | None = None,
               *, base64_payload: bool = False) -> tuple[Any, int]:
    """Scrub every string inside a JSON-like value (keys too). Returns (new value, number of
    strings changed); the JSON path of each changed string is appended to `found`."""
    if isinstance(value, str):
        new = value
        if base64_payload:  # decoded first, so a redacted payload stays valid base64 (a picture)
            new, _ = scrub_base64(value, scrubber)
        new = scrubber.scrub_deep(new)
        n = int(new != value)
        if n and found is not None:
            found.append(path or "/")
        return new, n
    if isinstance(value, list):
        changed = 0
        out = []
        for i, item in enumerate(value):
            new, n = scrub_json(item, scrubber, f"{path}/{i}", found, base64_payload=base64_payload)
            out.append(new)
            changed += n
        return (out if changed else value), changed
    if isinstance(value, dict):
        changed = 0
        items = []
        for key, item in value.items():
            new_key = key
            if isinstance(key, str):
                new_key = scrubber.scrub_deep(key)
                if new_key != key:
                    changed += 1
                    if found is not None:
                        found.append(f"{path}/<key>")
            binary = base64_payload or (isinstance(key, str) and not is_text_mimetype(key))
            new, n = scrub_json(item, scrubber, f"{path}/{new_key}", found, base64_payload=binary)
            items.append((new_key, new))
            changed += n
        return (dict(items) if changed else value), changed
    return value, 0


def scrub_value(value: Any, scrubber: Scrubber) -> tuple[Any, int]:
    """Scrub every string inside a JSON-like value. Returns (new value, number of strings changed)."""
    return scrub_json(value, scrubber)


@dataclass
class NotebookReport:
    outputs_redacted: int = 0  # strings changed in outputs and attachments
    sources_with_secrets: list[dict] = field(default_factory=list)  # {"cell": i, "labels": [...]}, never values
    sources_redacted: int = 0
    metadata_redacted: int = 0  # strings changed in notebook and cell metadata (widget state included), other fields
    locations: list[str] = field(default_factory=list)  # JSON paths of every string changed, never values

    @property
    def clean(self) -> bool:
        return not (self.outputs_redacted or self.sources_with_secrets or self.metadata_redacted)

    @property
    def hits(self) -> int:
        return self.outputs_redacted + self.metadata_redacted + len(self.sources_with_secrets)

    def describe(self) -> list[str]:
        """One line per finding, for people (paths and labels, never values)."""
        lines = [f"cell {w['cell'] + 1} source: {', '.join(w['labels'])}" for w in self.sources_with_secrets]
        if self.outputs_redacted:
            lines.append(f"{self.outputs_redacted} output(s) contain a secret")
        if self.metadata_redacted:
            lines.append("notebook metadata (e.g. widget state) contains a secret")
        lines += [f"secret at {location}" for location in self.locations]
        return lines


def _source_text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else (source or "")


def scrub_notebook(nb: dict, scrubber: Scrubber, *, sources: str = "warn") -> NotebookReport:
    """Scrub a notebook dict in place: every field of every cell and of the notebook (outputs,
    every mimetype, attachments, cell and output metadata, notebook metadata with widget
    state); cell sources per `sources` ("warn": report only, "redact": replace, "off": ignore)."""
    if sources not in ("warn", "redact", "off"):
        raise ValueError(f"sources must be 'warn', 'redact' or 'off', not {sources!r}")
    report = NotebookReport()
    cells = nb.get("cells")
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, dict):
            continue
        for key in list(cell):
            if key == "source":
                continue
            found: list[str] = []
            cell[key], n = scrub_json(cell[key], scrubber, f"cells/{index}/{key}", found)
            report.locations += found
            if key in ("outputs", "attachments"):
                report.outputs_redacted += n
            else:
                report.metadata_redacted += n
        if sources == "off" or "source" not in cell:
            continue
        text = _source_text(cell.get("source"))
        hits = scrubber.find_deep(text)
        if hits:
            report.sources_with_secrets.append({"cell": index, "labels": sorted({label for *_, label in hits})})
            if sources == "redact":
                cell["source"] = scrubber.scrub_deep(text)
                report.sources_redacted += 1
    for key in list(nb):
        if key == "cells":
            continue
        found = []
        nb[key], n = scrub_json(nb[key], scrubber, key, found)
        report.locations += found
        report.metadata_redacted += n
    return report
