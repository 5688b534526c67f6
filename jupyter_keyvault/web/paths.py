"""Which upstream URL a proxy request may reach: only paths under the configured base URL."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

from tornado import web

from ..providers import Provider

DROP_QUERY = {"token", "_xsrf"}  # the Jupyter server's own credentials never go upstream
# Dot segments, absolute or doubled slashes, backslashes, `@`, whitespace and control characters, and
# their encoded forms: `%2e` `%2f` `%5c`, any encoded control character, `%25` (a second round of
# decoding upstream, e.g. `%252e%252e%252f`) and `;` (path parameters: `..;/` is `../` to some servers).
_UNSAFE_PATH = re.compile(r"(^|/)\.{1,2}(/|$)|^/|//|\\|;|%2e|%2f|%5c|%25|%[01][0-9a-f]|%7f|[\x00-\x20\x7f]|@",
                          re.IGNORECASE)
_REFUSED = "refused: the path must stay under the provider's base URL"


def proxied_url(raw_path: str, raw_query: str, prefix: str, provider: Provider | None, base_url: str) -> str:
    """The upstream URL for a proxy request under `prefix`, refusing any path that could leave
    the base URL. `provider` is None for OAuth APIs, which have no path prefix of their own."""
    return upstream_url(base_url, proxied_path(raw_path, prefix, provider), raw_query)


def proxied_path(raw_path: str, prefix: str, provider: Provider | None) -> str:
    """The part of a proxy path that goes after the upstream base URL; 400/404 for any path
    that could step outside it. Checked before any key is decrypted."""
    if not raw_path.startswith(prefix):
        raise web.HTTPError(404, "not a proxy path")
    rest = raw_path[len(prefix):]
    # Checked before the provider prefix is cut off: stripping it must not hide a `//`.
    if _UNSAFE_PATH.search(rest):
        raise web.HTTPError(400, _REFUSED)
    if provider is not None and provider.proxy_prefix:
        if not (rest == provider.proxy_prefix or rest.startswith(provider.proxy_prefix + "/")):
            raise web.HTTPError(404, f"proxy paths for {provider.id} start with /{provider.proxy_prefix}/")
        rest = rest[len(provider.proxy_prefix):].lstrip("/")
    if _UNSAFE_PATH.search(rest):
        raise web.HTTPError(400, _REFUSED)
    return rest


def upstream_url(base_url: str, rest: str, raw_query: str) -> str:
    """`rest` (from proxied_path) under `base_url`, without the Jupyter server's own query credentials."""
    query = [(k, v) for k, v in parse_qsl(raw_query, keep_blank_values=True) if k not in DROP_QUERY]
    url = base_url.rstrip("/") + ("/" + rest if rest else "") + (("?" + urlencode(query)) if query else "")
    base, target = urlsplit(base_url), urlsplit(url)
    if (target.scheme, target.netloc) != (base.scheme, base.netloc) or not target.path.startswith(base.path):
        raise web.HTTPError(400, _REFUSED)
    return url
