"""What crosses the proxy in each direction, decided here and nowhere else.

Requests: every end-to-end header the client sent goes upstream (an SDK's own headers, OpenRouter's
`HTTP-Referer`/`X-Title`, `traceparent`, observability headers), except
- hop-by-hop headers (RFC 9110 7.6.1): Connection and every header it names, Keep-Alive, TE,
  Trailer, Transfer-Encoding, Upgrade, Proxy-*;
- credentials: Authorization, every header a provider takes its key in, cookies;
- the Jupyter server's own: its XSRF header, X-KeyVault-*, Host, Origin, Referer (a Jupyter URL,
  possibly with its token), Forwarded / X-Forwarded-* / Via / X-Real-IP;
- framing the relay redoes (Content-Length, Expect) and Accept-Encoding (always identity upstream).
Provider defaults (`anthropic-version`) are added only when the client sent none; the injected
credential replaces whatever the client sent under its name.

Responses: hop-by-hop, cookies and framing the relay redoes are dropped.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from .. import providers

HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
                        "proxy-connection"})
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "cookie2", "x-api-key", "api-key", "x-goog-api-key"})
JUPYTER_HEADERS = frozenset({"x-xsrftoken", "x-csrftoken", "host", "origin", "referer", "forwarded", "via",
                             "x-real-ip", "x-scheme"})
RELAY_FRAMING = frozenset({"content-length", "expect", "accept-encoding"})
# Browser and websocket handshake metadata: meaningless upstream, and a websocket key must not be replayed.
DENYLIST = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                      "sec-websocket-accept", "sec-websocket-protocol"})
DROPPED_PREFIXES = ("proxy-", "x-forwarded-", "x-keyvault-", "x-jupyter", "sec-fetch-")
DROP_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "content-length", "content-encoding", "set-cookie", "set-cookie2",
    "server", "date",
})


def _key_headers() -> frozenset[str]:
    """Every header name any provider in the table takes its key in (besides the usual ones)."""
    return frozenset(name.lower() for p in providers.PROVIDERS.values() for name in p.auth_headers("x"))


DROPPED = HOP_BY_HOP | CREDENTIAL_HEADERS | JUPYTER_HEADERS | RELAY_FRAMING | DENYLIST | _key_headers()


def forwarded_headers(incoming: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The caller's end-to-end headers that may go upstream (repeated ones joined with ", ").
    Never its credentials, cookies, the Jupyter token or anything hop-by-hop."""
    pairs = list(incoming)
    named_by_connection = {token.strip().lower() for name, value in pairs if name.lower() == "connection"
                           for token in value.split(",")}
    out: dict[str, str] = {}
    seen: dict[str, str] = {}  # lower-case name -> the spelling kept
    for name, value in pairs:
        lower = name.lower()
        if lower in DROPPED or lower in named_by_connection or lower.startswith(DROPPED_PREFIXES):
            continue
        if lower in seen:
            out[seen[lower]] += ", " + value
        else:
            seen[lower] = name
            out[name] = value
    out["Accept-Encoding"] = "identity"  # relay bytes as they come; error bodies must be readable to redact
    return out


def upstream_request_headers(incoming: Iterable[tuple[str, str]], *, injected: Mapping[str, str],
                             defaults: Mapping[str, str] = {}) -> dict[str, str]:
    """What goes upstream: the forwarded headers, each provider default the client did not send,
    then the injected credential headers (replacing any client header of the same name)."""
    out = forwarded_headers(incoming)
    present = {name.lower() for name in out}
    for name, value in defaults.items():
        if name.lower() not in present:
            out[name] = value
    for name, value in injected.items():
        for existing in [k for k in out if k.lower() == name.lower()]:
            del out[existing]
        out[name] = value
    return out


# An upstream's CORS grants are for its own browser SDKs: relayed, they would let any web page read
# answers the proxy gives (kernels and token holders are its callers, never pages).
DROPPED_RESPONSE_PREFIXES = ("access-control-",)


def relayed_response_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in upstream
            if k.lower() not in DROP_RESPONSE_HEADERS and not k.lower().startswith(DROPPED_RESPONSE_PREFIXES)]


def ascii_header_value(text: str) -> str:
    """A latin-1-safe single-line header value (tornado raises on anything else)."""
    text = text.replace("…", "...")
    return "".join(c if " " <= c <= "~" else "?" for c in text)
