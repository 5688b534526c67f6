"""The redaction engine: exact known values and provider key patterns, streaming-safe.

One engine serves every use (kernel outputs, pre-save hook, log filters, the CLI).
Pure Python; imports nothing else of ours.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Iterable

GENERIC_MARKER = "[REDACTED]"
MIN_KNOWN_LENGTH = 8  # shorter values would redact ordinary words


@dataclass(frozen=True)
class SecretPattern:
    label: str
    regex: str


# Anchored on distinctive prefixes and long bodies to keep false positives near zero:
# `sklearn`, `sk-learn`, `task-12345`, UUIDs and git hashes never match.
DEFAULT_PATTERNS: tuple[SecretPattern, ...] = (
    SecretPattern("anthropic", r"sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_\-]{20,}"),
    SecretPattern("openrouter", r"sk-or-v1-[a-f0-9]{32,}"),
    SecretPattern("openai", r"sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{20,}"),
    SecretPattern("openai", r"sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"),
    # Legacy and future sk- keys: a long token with at least one digit.
    SecretPattern("openai", r"sk-(?!ant-|or-)(?=[A-Za-z0-9_\-]{0,200}?\d)[A-Za-z0-9_\-]{32,}"),
    SecretPattern("groq", r"gsk_[A-Za-z0-9]{40,}"),
    SecretPattern("huggingface", r"hf_[A-Za-z0-9]{30,}"),
    SecretPattern("github", r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}"),
    SecretPattern("github", r"github_pat_[A-Za-z0-9_]{40,}"),
    SecretPattern("aws", r"(?:AKIA|ASIA)[A-Z0-9]{16}"),
    SecretPattern("google", r"AIza[0-9A-Za-z_\-]{35}"),
    SecretPattern("slack", r"xox[abposr]-[A-Za-z0-9\-]{10,}"),
)

# Every pattern starts with one of these: a cheap substring test skips most text.
_PATTERN_PREFIXES = ("sk-", "gsk_", "hf_", "gh", "github_pat_", "AKIA", "ASIA", "AIza", "xox")
_TOKEN_CHARS = r"A-Za-z0-9_\-"


class Scrubber:
    """Redacts known secret values (by name) and anything matching a secret pattern."""

    def __init__(self, patterns: Iterable[SecretPattern] = DEFAULT_PATTERNS, *, extra_patterns: Iterable[str] = ()):
        self._patterns = list(patterns) + [SecretPattern("custom", p) for p in extra_patterns]
        for p in self._patterns:
            re.compile(p.regex)  # fail early on a bad configured pattern
        self._extra_prefixes = bool(list(extra_patterns))
        self._known: dict[str, str] = {}  # value -> name
        self._lock = threading.Lock()
        self._regex: re.Pattern[str] | None = None
        self._max_known = 0
        self._dirty = False
        self._rebuild()

    # -- known values
    def add_known(self, value: str, name: str | None = None) -> None:
        if not isinstance(value, str) or len(value.strip()) < MIN_KNOWN_LENGTH:
            return
        with self._lock:
            if self._known.get(value) == (name or ""):
                return
            self._known[value] = name or ""
            self._dirty = True  # compiled lazily: adding many values costs one compile

    def forget(self, value: str) -> None:
        with self._lock:
            if self._known.pop(value, None) is not None:
                self._dirty = True

    @property
    def known_count(self) -> int:
        return len(self._known)

    @property
    def window(self) -> int:
        """How many trailing characters a stream must hold back to never cut a secret."""
        self._current()
        return max(256, self._max_known)

    def _current(self) -> re.Pattern[str]:
        if self._dirty:
            with self._lock:
                if self._dirty:
                    self._rebuild()
                    self._dirty = False
        return self._regex

    def _rebuild(self) -> None:
        parts = []
        known = sorted(self._known, key=len, reverse=True)
        if known:
            parts.append("(?P<known>" + "|".join(re.escape(v) for v in known) + ")")
        for i, p in enumerate(self._patterns):
            # Token boundaries stop a pattern from matching inside a longer identifier.
            parts.append(f"(?P<p{i}>(?<![{_TOKEN_CHARS}])(?:{p.regex})(?![{_TOKEN_CHARS}]))")
        self._regex = re.compile("|".join(parts))
        self._max_known = max((len(v) for v in known), default=0)
        self._known_snapshot = dict(self._known)
        self.known_has_whitespace = any(any(c.isspace() for c in v) for v in known)

    # -- scrubbing
    def _could_match(self, text: str) -> bool:
        if self._known or self._extra_prefixes:
            return True
        return any(prefix in text for prefix in _PATTERN_PREFIXES)

    def _replacement(self, match: re.Match[str]) -> str:
        if match.lastgroup == "known":
            name = self._known_snapshot.get(match.group(0))
            return f"[REDACTED:{name}]" if name else GENERIC_MARKER
        return GENERIC_MARKER

    def scrub(self, text: str) -> str:
        if not text or not self._could_match(text):
            return text
        return self._current().sub(self._replacement, text)

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, label) of every secret in text; labels never include the value."""
        if not text or not self._could_match(text):
            return []
        found = []
        for m in self._current().finditer(text):
            if m.lastgroup == "known":
                label = self._known_snapshot.get(m.group(0)) or "known value"
            else:
                label = self._patterns[int(m.lastgroup[1:])].label
            found.append((m.start(), m.end(), label))
        return found

    def contains_secret(self, text: str) -> bool:
        return bool(self.find(text))

    def stream(self) -> "StreamScrubber":
        return StreamScrubber(self)


class StreamScrubber:
    """Scrubs text arriving in pieces: a secret split across writes is still redacted.

    Holds back only the trailing run that could still be the start of a secret.
    """

    def __init__(self, scrubber: Scrubber):
        self._scrubber = scrubber
        self._buffer = ""

    def feed(self, chunk: str) -> str:
        self._buffer += chunk
        buffer = self._buffer
        cut = self._safe_cut(buffer)
        if cut <= 0:
            return ""
        for start, end, _ in self._scrubber.find(buffer):
            if start < cut < end:
                cut = end  # a complete secret straddles the cut: emit it whole, redacted
        self._buffer = buffer[cut:]
        return self._scrubber.scrub(buffer[:cut])

    def _safe_cut(self, buffer: str) -> int:
        window = self._scrubber.window
        tail_start = len(buffer) - window
        # Secrets we match are whitespace-free tokens, unless a known value has spaces.
        if not self._scrubber.known_has_whitespace:
            last_ws = max(buffer.rfind("\n"), buffer.rfind(" "), buffer.rfind("\t"))
            return max(last_ws + 1, tail_start)
        return tail_start

    def flush(self) -> str:
        out, self._buffer = self._scrubber.scrub(self._buffer), ""
        return out

    @property
    def pending(self) -> int:
        return len(self._buffer)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message and any traceback text."""

    def __init__(self, scrubber: Scrubber):
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        scrubbed = self.scrubber.scrub(message)
        if scrubbed != message or record.args:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.scrubber.scrub(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.scrubber.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrubber.scrub(record.stack_info)
        return True


def install_log_filter(scrubber: Scrubber, loggers: Iterable[str | logging.Logger]) -> RedactingFilter:
    """Attach one redacting filter to the named loggers and to their handlers."""
    filt = RedactingFilter(scrubber)
    for item in loggers:
        logger = logging.getLogger(item) if isinstance(item, str) else item
        if filt not in logger.filters:
            logger.addFilter(filt)
        for handler in logger.handlers:
            if filt not in handler.filters:
                handler.addFilter(filt)
    return filt


default_scrubber = Scrubber()
