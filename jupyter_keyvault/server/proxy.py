"""The streaming proxies. A kernel (kvk1) or a vault access token holder (kvt1) calls
`/keyvault/proxy/{provider}/…`; the server injects the credential (or, in hub mode, forwards to
the hub service, which injects it) and relays the response chunk by chunk.
`/keyvault/proxy/oauth/{name}/…` does the same for OAuth2 APIs with a fresh access token.

Only the configured base URL is ever contacted; paths that could step outside it are refused
before any key is decrypted, and only an allowlist of request headers goes upstream.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from .. import providers
from ..web.errors import error_message, http_errors, provider_error_body, set_retry_after
from ..web.headers import forwarded_headers
from ..web.paths import proxied_path, upstream_url
from ..web.relay import RelayMixin
from .base import CallerMixin


class ProxyHandler(CallerMixin, RelayMixin, JupyterHandler):
    auth_resource = "keyvault"

    def compute_etag(self):
        return None

    def set_default_headers(self):
        self.clear_header("Content-Type")

    def write_error(self, status_code: int, **kwargs):
        set_retry_after(self, kwargs)
        self.set_header("Content-Type", "application/json")
        self.finish(provider_error_body(status_code, error_message(self, kwargs)))

    async def relay_to(self, base_url: str, rest: str, headers: dict[str, str], injected: str | None) -> None:
        url = upstream_url(base_url, rest, self.request.query)
        await self.relay(await self.kv.http_session(), url, headers, injected=injected, scrub=self.kv.scrubber.scrub)


class ProviderProxyHandler(ProxyHandler):
    @allow_unauthenticated
    async def get(self, provider_id: str, path: str = ""):
        provider = providers.PROVIDERS.get(provider_id)
        if provider is None:
            raise web.HTTPError(404, f"unknown provider {provider_id!r}; known: {', '.join(providers.PROVIDERS)}")
        name = (self.request.headers.get("X-KeyVault-Credential") or provider.env_var or "").strip()
        name = await self.authenticate_caller(name)  # a keyvault.env token names its own credential
        rest = proxied_path(self.request.path, f"{self.base_url.rstrip('/')}/keyvault/proxy/{provider.id}/", provider)
        if provider.needs_key:
            # Authorise on metadata first: a denied notebook never causes a decryption or a "use".
            await self.check_notebook_access(name)
        with http_errors(missing=401):
            upstream = await self.kv.upstream(provider, name, actor=self.caller)
        headers = forwarded_headers(self.request.headers.get_all())
        headers.update(upstream.headers)
        await self.relay_to(upstream.base_url, rest, headers, upstream.injected)

    post = put = delete = patch = get


class OAuthProxyHandler(ProxyHandler):
    """`/keyvault/proxy/oauth/{name}/…` → the provider's api_base_url, a fresh access token injected."""

    @allow_unauthenticated
    async def get(self, name: str, path: str = ""):
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
        headers = forwarded_headers(self.request.headers.get_all(), provider_prefixes=False)
        headers["Authorization"] = f"Bearer {access}"
        await self.relay_to(configured.api_base_url, rest, headers, access)

    post = put = delete = patch = get


_OAUTH_NAME = r"(?P<name>[A-Za-z_][A-Za-z0-9_]{0,63})"
handlers = [
    (rf"/keyvault/proxy/oauth/{_OAUTH_NAME}(?P<path>/.*)?", OAuthProxyHandler),
    (r"/keyvault/proxy/(?P<provider_id>[a-z_]+)(?P<path>/.*)?", ProviderProxyHandler),
]
