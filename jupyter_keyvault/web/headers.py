"""What crosses the proxy in each direction: an allowlist of request headers, a denylist of
response headers (hop-by-hop, cookies, framing that the relay redoes)."""

from __future__ import annotations

from typing import Iterable

FORWARD_HEADERS = frozenset({"content-type", "accept", "user-agent", "idempotency-key"})
FORWARD_PREFIXES = ("openai-", "anthropic-", "x-stainless-")
DROP_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "content-length", "content-encoding", "set-cookie", "server", "date",
})


def forwarded_headers(incoming: Iterable[tuple[str, str]], *, provider_prefixes: bool = True) -> dict[str, str]:
    """The caller's headers that may go upstream. Never its Authorization, cookies or Jupyter token."""
    prefixes = FORWARD_PREFIXES if provider_prefixes else ()
    out = {k: v for k, v in incoming if k.lower() in FORWARD_HEADERS or k.lower().startswith(prefixes)}
    out["Accept-Encoding"] = "identity"  # relay bytes as they come; error bodies must be readable to redact
    return out


def relayed_response_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in upstream if k.lower() not in DROP_RESPONSE_HEADERS]


def ascii_header_value(text: str) -> str:
    """A latin-1-safe single-line header value (tornado raises on anything else)."""
    text = text.replace("…", "...")
    return "".join(c if " " <= c <= "~" else "?" for c in text)
