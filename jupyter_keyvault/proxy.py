"""The streaming proxy: kernels call /keyvault/proxy/{provider}/… with a kernel credential,
the server injects the real key and relays the upstream response chunk by chunk.

Only the provider's configured base URL is ever contacted; paths that could step
outside it are refused, and only an allowlist of request headers is forwarded.
"""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from tornado import web
from tornado.iostream import StreamClosedError

from . import providers
from .kernel_handlers import KernelAuthenticatedMixin
from .store import InvalidInput, NoCredential, NotFound, VaultError

FORWARD_HEADERS = {"content-type", "accept", "user-agent", "idempotency-key"}
FORWARD_PREFIXES = ("openai-", "anthropic-", "x-stainless-")
DROP_RESPONSE_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "content-length", "content-encoding", "set-cookie", "server", "date",
}
DROP_QUERY = {"token", "_xsrf"}  # the Jupyter server's own credentials never go upstream
_UNSAFE_PATH = re.compile(r"(^|/)\.{1,2}(/|$)|^/|//|\\|%2e|%2f|%5c|%00|[\x00-\x20]|@", re.IGNORECASE)
MAX_ERROR_BODY = 256 * 1024


class ProxyHandler(KernelAuthenticatedMixin, JupyterHandler):
    auth_resource = "keyvault"

    def compute_etag(self):
        return None

    def set_default_headers(self):
        self.clear_header("Content-Type")

    async def prepare(self):
        await super().prepare()
        self._relay: asyncio.Task | None = None
        self._client_gone = False

    def on_connection_close(self):
        self._client_gone = True
        if self._relay is not None:
            self._relay.cancel()  # the client left: stop reading from upstream

    def write_error(self, status_code: int, **kwargs):
        self.set_header("Content-Type", "application/json")
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        # Provider-shaped error, so SDKs show the message as they would the provider's own.
        self.finish(json.dumps({"error": {"message": message, "type": "keyvault_error", "code": status_code}}))

    def upstream_url(self, provider: providers.Provider, base_url: str) -> str:
        prefix = f"{self.base_url.rstrip('/')}/keyvault/proxy/{provider.id}/"
        return proxied_url(self.request.path, self.request.query, prefix, provider, base_url)

    def upstream_headers(self, provider: providers.Provider, key: str | None) -> dict[str, str]:
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() in FORWARD_HEADERS or k.lower().startswith(FORWARD_PREFIXES)}
        headers["Accept-Encoding"] = "identity"  # relay bytes as they come; errors must be readable to redact
        headers.update(provider.auth_headers(key))
        return headers

    async def _handle(self, provider_id: str):
        self.authenticate_kernel()
        try:
            provider = providers.get_provider(provider_id)
        except InvalidInput as exc:
            raise web.HTTPError(404, str(exc)) from None
        try:
            base_url = self.kv.base_url_for(provider)
        except InvalidInput as exc:
            raise web.HTTPError(502, str(exc)) from None
        url = self.upstream_url(provider, base_url)  # refuse a bad path before any key is decrypted
        name = (self.request.headers.get("X-KeyVault-Credential") or provider.env_var or "").strip()
        key = None
        if self.kv.backend == "hub":
            return await self._forward_to_hub_service(provider, name)
        if provider.needs_key:
            # Authorise on metadata first: a denied notebook never causes a decryption or a "use".
            await self.check_notebook_access(name, await self.kv.credential_metadata(name))
            try:
                resolved = await self.kv.resolve_for_proxy(name, actor=f"kernel:{self.kernel_id}")
            except (NoCredential, NotFound) as exc:
                raise web.HTTPError(401, str(exc)) from None
            except InvalidInput as exc:
                raise web.HTTPError(422, str(exc)) from None
            except VaultError as exc:
                raise web.HTTPError(503, str(exc)) from None
            key = resolved.value
        self._relay = asyncio.ensure_future(self._relay_upstream(url, self.upstream_headers(provider, key), key))
        try:
            await self._relay
        except asyncio.CancelledError:
            if not self._client_gone:
                raise

    async def _forward_to_hub_service(self, provider: providers.Provider, name: str):
        """backend = 'hub': the service's proxy injects the key (personal or shared); nothing is decrypted here."""
        if provider.needs_key:
            await self.check_notebook_access(name, await self.kv.credential_metadata(name))
        service_base = self.kv.vault.proxy_base() + provider.id + ("/" + provider.proxy_prefix
                                                                      if provider.proxy_prefix else "")
        url = self.upstream_url(provider, service_base)
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() in FORWARD_HEADERS or k.lower().startswith(FORWARD_PREFIXES)}
        headers["Accept-Encoding"] = "identity"
        headers["X-KeyVault-Credential"] = name
        headers.update(self.kv.vault.auth_header())
        self._relay = asyncio.ensure_future(self._relay_upstream(url, headers, None))
        try:
            await self._relay
        except asyncio.CancelledError:
            if not self._client_gone:
                raise

    async def _relay_upstream(self, url: str, headers: dict[str, str], key: str | None):
        session = await self.kv.http_session()
        body = self.request.body if self.request.method not in ("GET", "HEAD") else None
        try:
            async with session.request(self.request.method, url, data=body, headers=headers,
                                       allow_redirects=False) as upstream:
                self.set_status(upstream.status, upstream.reason or None)
                for name, value in upstream.headers.items():
                    if name.lower() not in DROP_RESPONSE_HEADERS:
                        self.add_header(name, value)
                if upstream.status >= 400:
                    # Error bodies are small: read, redact anything key-like (some providers echo it), send.
                    data = await upstream.content.read(MAX_ERROR_BODY)
                    text = data.decode("utf-8", "replace")
                    scrubbed = self.kv.scrubber.scrub(text.replace(key, "[REDACTED]") if key else text)
                    self.finish(scrubbed.encode("utf-8"))
                    return
                # Small SSE writes must leave at once, not wait for Nagle's algorithm.
                self.request.connection.stream.set_nodelay(True)
                async for chunk in upstream.content.iter_any():
                    self.write(chunk)
                    await self.flush()
                self.finish()
        except StreamClosedError:
            return
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            if self._headers_written:
                return
            raise web.HTTPError(502, f"upstream unreachable: {exc.__class__.__name__}") from None

    @allow_unauthenticated
    async def get(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)

    @allow_unauthenticated
    async def post(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)

    @allow_unauthenticated
    async def put(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)

    @allow_unauthenticated
    async def delete(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)

    @allow_unauthenticated
    async def patch(self, provider_id: str, path: str = ""):
        await self._handle(provider_id)


handlers = [(r"/keyvault/proxy/(?P<provider_id>[a-z_]+)(?P<path>/.*)?", ProxyHandler)]


def proxied_url(raw_path: str, raw_query: str, prefix: str, provider: providers.Provider | None,
                base_url: str) -> str:
    """The upstream URL for a proxy request under `prefix`, refusing any path that could leave
    the base URL (shared by this server's proxies and the hub service's); `provider` None for
    OAuth APIs, which have no path prefix of their own."""
    if not raw_path.startswith(prefix):
        raise web.HTTPError(404, "not a proxy path")
    rest = raw_path[len(prefix):]
    # Checked before the provider prefix is cut off: stripping it must not hide a `//`.
    if _UNSAFE_PATH.search(rest):
        raise web.HTTPError(400, "refused: the path must stay under the provider's base URL")
    if provider is not None and provider.proxy_prefix:
        if not (rest == provider.proxy_prefix or rest.startswith(provider.proxy_prefix + "/")):
            raise web.HTTPError(404, f"proxy paths for {provider.id} start with /{provider.proxy_prefix}/")
        rest = rest[len(provider.proxy_prefix):].lstrip("/")
    if _UNSAFE_PATH.search(rest):
        raise web.HTTPError(400, "refused: the path must stay under the provider's base URL")
    query = [(k, v) for k, v in parse_qsl(raw_query, keep_blank_values=True) if k not in DROP_QUERY]
    url = base_url.rstrip("/") + ("/" + rest if rest else "") + (("?" + urlencode(query)) if query else "")
    base, target = urlsplit(base_url), urlsplit(url)
    if (target.scheme, target.netloc) != (base.scheme, base.netloc) or not target.path.startswith(base.path):
        raise web.HTTPError(400, "refused: the path must stay under the provider's base URL")
    return url
