"""The streaming proxies. A kernel (kvk1) or a vault access token holder (kvt1) calls
`/keyvault/proxy/{provider}/…`; the server injects the credential (or, in hub mode, forwards to
the hub service, which injects it) and relays the response chunk by chunk.
`/keyvault/proxy/oauth/{name}/…` does the same for OAuth2 APIs with a fresh access token.

Every check (caller, path, notebook access, the body's declared size) happens in `prepare()`,
before any key is decrypted or any upstream connection is made; the request body then streams
upstream as it arrives (never held whole), up to `c.KeyVault.proxy_max_body_size`. Only the
configured base URL is ever contacted, and only end-to-end headers that carry no credential of
this server go upstream (web/headers.py).

The HTTP proxies are plain tornado handlers, not JupyterHandlers: they accept no Jupyter login
(cookie or token) and authenticate every request themselves, so jupyter_server's per-request
identity lookup, host and CORS handling would only cost time on the hot path (and a proxy answer
carries no CORS header, so no web page can read one).
"""

from __future__ import annotations

import logging
from typing import Iterable
from urllib.parse import urlsplit

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.handlers import log as jupyter_log
from tornado import web
from tornado.websocket import WebSocketHandler

from .. import providers
from ..scrub import lowest_written_level
from ..web.bodies import close_if_body_unread
from ..web.errors import error_message, http_errors, provider_error_body, set_retry_after
from ..web.headers import upstream_request_headers
from ..web.paths import proxied_path, upstream_url
from ..web.relay import RelayMixin, WebSocketRelayMixin
from .base import CREDENTIAL_HEADER, CallerMixin


@web.stream_request_body
class ProxyHandler(CallerMixin, RelayMixin, web.RequestHandler):
    auth_resource = "keyvault"

    @property
    def base_url(self) -> str:
        return self.settings.get("base_url", "/")

    @property
    def log(self) -> logging.Logger:
        """jupyter_server's access log writes here (see `proxy_access_log`)."""
        return proxy_access_log()

    def compute_etag(self):
        return None

    def set_default_headers(self):
        self.clear_header("Content-Type")

    def write_error(self, status_code: int, **kwargs):
        set_retry_after(self, kwargs)
        close_if_body_unread(self)  # a refusal comes before the body is read
        self.set_header("Content-Type", "application/json")
        self.finish(provider_error_body(status_code, error_message(self, kwargs)))

    async def prepare(self):
        # jupyter_server's DNS-rebinding rule, which a JupyterHandler applies in its own prepare():
        # a page whose name was made to resolve here is refused (c.ServerApp.allow_remote_access).
        if not JupyterHandler.check_host(self):  # type: ignore[arg-type]
            raise web.HTTPError(403, f"requests with a non-local Host ({self.request.host}) are refused; "
                                     "see c.ServerApp.allow_remote_access")
        await self.check_and_start(**self.path_kwargs)

    async def check_and_start(self, **path_kwargs: str) -> None:
        raise NotImplementedError

    async def start_to(self, base_url: str, rest: str, headers: dict[str, str], injected: str | None) -> None:
        url = upstream_url(base_url, rest, self.request.query)
        self.accept_body(self.kv.proxy_max_body_size)
        self.start_relay(await self.kv.http_session(), url, headers, injected=injected, scrub=self.kv.scrubber.scrub)

    @allow_unauthenticated
    async def get(self, *_args: str, **_kwargs: str) -> None:
        await self.relayed()

    post = put = delete = patch = get


class ProviderProxyHandler(ProxyHandler):
    async def check_and_start(self, provider_id: str, path: str = "") -> None:  # type: ignore[override]
        plan = await plan_provider_call(self, provider_id, self.request.path, self.request.headers.get_all())
        await self.start_to(*plan)


async def plan_provider_call(call: CallerMixin, provider_id: str, raw_path: str,
                             incoming: Iterable[tuple[str, str]]) -> tuple[str, str, dict[str, str], str | None]:
    """Every check of a provider proxy request, in order; then where it goes: (base URL, path under it,
    headers, the injected value). Shared by the tornado handler and the loopback lane."""
    provider = providers.PROVIDERS.get(provider_id)
    if provider is None:
        raise web.HTTPError(404, f"unknown provider {provider_id!r}; known: {', '.join(providers.PROVIDERS)}")
    name = (call.request.headers.get(CREDENTIAL_HEADER) or provider.env_var or "").strip()  # type: ignore[attr-defined]
    name = await call.authenticate_caller(name)  # a keyvault.env token names its own credential
    rest = proxied_path(raw_path, f"{call.base_url.rstrip('/')}/keyvault/proxy/{provider.id}/", provider)  # type: ignore[attr-defined]
    if provider.needs_key:
        # Authorise on metadata first: a denied notebook never causes a decryption or a "use".
        await call.check_notebook_access(name)
    with http_errors(missing=401):
        upstream = await call.kv.upstream(provider, name, actor=call.caller)
    headers = upstream_request_headers(incoming, injected=upstream.headers, defaults=provider.default_headers)
    return upstream.base_url, rest, headers, upstream.injected


class OAuthProxyHandler(ProxyHandler):
    """`/keyvault/proxy/oauth/{name}/…` → the provider's api_base_url, a fresh access token injected."""

    async def check_and_start(self, name: str, path: str = "") -> None:  # type: ignore[override]
        await self.authenticate_caller(name)
        await self.check_notebook_access(name)
        prefix = f"{self.base_url.rstrip('/')}/keyvault/proxy/oauth/{name}/"
        oauth_meta = (await self.kv.credential_metadata(name)).get("oauth")
        if not isinstance(oauth_meta, dict):
            raise web.HTTPError(404, f"no OAuth credential named {name}")
        with http_errors():
            configured = self.kv.oauth.provider(str(oauth_meta.get("provider", "")))
        # The path is checked before any token is read (or refreshed).
        rest = proxied_path(self.request.path if self.request.path != prefix.rstrip("/") else prefix, prefix, None)
        with http_errors():
            access, _ = await self.kv.oauth.access_token(name, actor=self.caller)
        headers = upstream_request_headers(self.request.headers.get_all(),
                                           injected={"Authorization": f"Bearer {access}"})
        await self.start_to(configured.api_base_url, rest, headers, access)


class RealtimeProxyHandler(CallerMixin, WebSocketRelayMixin, WebSocketHandler, JupyterHandler):
    """`/keyvault/proxy/openai/v1/realtime`: the OpenAI Realtime API's websocket. The handshake is
    authenticated exactly as an HTTP proxy request (a kernel's kvk1 credential or a kvt1 token in
    `Authorization: Bearer`, which is where the openai SDK puts its api key on the websocket too;
    notebook access checks), and refused from another site's page (cross-site websocket hijacking)."""

    auth_resource = "keyvault"

    def write_error(self, status_code: int, **kwargs):
        self.set_header("Content-Type", "application/json")
        self.finish(provider_error_body(status_code, error_message(self, kwargs)))

    def check_origin(self, origin: str) -> bool:
        """Only pages of this server (same host), or exactly the configured allow_origin; never '*'."""
        if urlsplit(origin).netloc.lower() == self.request.host.lower():
            return True
        return bool(self.allow_origin) and self.allow_origin != "*" and origin == self.allow_origin

    @allow_unauthenticated
    async def get(self, *args, **kwargs):
        # Every check before the upgrade, and before any key is decrypted or the upstream contacted.
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPError(400, "the Realtime API is a websocket: connect with Upgrade: websocket")
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            raise web.HTTPError(403, "cross-origin websocket refused")
        provider = providers.PROVIDERS["openai"]
        name = (self.request.headers.get("X-KeyVault-Credential") or provider.env_var or "").strip()
        await self.authenticate_caller(name)
        await self.check_notebook_access(name)
        with http_errors(missing=401):
            upstream = await self.kv.upstream(provider, name, actor=self.caller)
        headers = upstream_request_headers(self.request.headers.get_all(), injected=upstream.headers,
                                           defaults=provider.default_headers)
        url = upstream_url(upstream.base_url, "realtime", self.request.query)
        await self.connect_upstream(await self.kv.http_session(), url, headers, injected=upstream.injected,
                                    scrub=self.kv.scrubber.scrub)
        await self.upgrade(*args, **kwargs)


def proxy_access_log() -> logging.Logger:
    """The server's log, as a child that makes a record only at a level some handler writes.
    jupyter_server keeps its loggers at DEBUG and filters in the handlers, so its access log built a
    debug record for every proxied request that nobody wrote (a tenth of the proxy's own time)."""
    parent = jupyter_log()
    child = parent.getChild("keyvault_proxy")
    if child.level == logging.NOTSET:  # decided once, when the server's handlers are in place
        child.setLevel(lowest_written_level(parent))
    return child


_OAUTH_NAME = r"(?P<name>[A-Za-z_][A-Za-z0-9_]{0,63})"
handlers = [
    (r"/keyvault/proxy/openai/v1/realtime/?", RealtimeProxyHandler),
    (rf"/keyvault/proxy/oauth/{_OAUTH_NAME}(?P<path>/.*)?", OAuthProxyHandler),
    (r"/keyvault/proxy/(?P<provider_id>[a-z_]+)(?P<path>/.*)?", ProviderProxyHandler),
]
