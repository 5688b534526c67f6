"""`{prefix}proxy/{provider}/…`: a user's server forwards its kernels' requests here; the key
(personal or shared) is injected here, usage counted and limits enforced."""

from __future__ import annotations

import asyncio
import json

from tornado import web

from ... import providers
from ...store import InvalidInput
from ...store.model import validate_name
from ...web.errors import error_message, http_errors, provider_error_body, set_retry_after
from ...web.headers import forwarded_headers
from ...web.paths import proxied_url
from ...web.relay import RelayMixin
from ..usage import UsageMeter
from .base import ServiceBase


class ProxyHandler(RelayMixin, ServiceBase):
    def write_error(self, status_code: int, **kwargs):
        set_retry_after(self, kwargs)
        self.set_header("Content-Type", "application/json")
        self.finish(provider_error_body(status_code, error_message(self, kwargs)))

    async def get(self, provider_id: str, path: str = ""):
        provider = providers.PROVIDERS.get(provider_id)
        if provider is None:
            raise web.HTTPError(404, f"unknown provider {provider_id!r}; known: {', '.join(providers.PROVIDERS)}")
        try:
            base_url = self.kv.base_url_for(provider)
        except InvalidInput as exc:
            raise web.HTTPError(502, str(exc)) from None
        prefix = f"{self.kv.service_prefix.rstrip('/')}/proxy/{provider.id}/"
        url = proxied_url(self.request.path, self.request.query, prefix, provider, base_url)
        name = (self.request.headers.get("X-KeyVault-Credential") or provider.env_var or "").strip()
        key, source, credential = None, "none", provider.id
        if provider.needs_key:
            try:
                name = validate_name(name)
            except InvalidInput as exc:
                raise web.HTTPError(422, str(exc)) from None
            ident = await self.identity()
            with http_errors(missing=401):
                choice, resolved = await asyncio.to_thread(self.kv.admit, self.username, ident["groups"], provider,
                                                           name)
            if choice is None:
                raise web.HTTPError(401, f"No API key configured for {name}: you have no personal key of that name and "
                                         f"no shared {provider.label} key is granted to you")
            source, _, credential = choice
            key = resolved.value
        headers = forwarded_headers(self.request.headers.get_all())
        headers.update(provider.auth_headers(key))
        tokens = await self.relay(await self.kv.http_session(), url, headers, injected=key,
                                  scrub=self.kv.scrubber.scrub, meter=UsageMeter,
                                  body=self._body_with_usage_requested(provider))
        if provider.needs_key and tokens:
            self.kv.ledger.add(self.username, source, credential, tokens=tokens)

    post = put = delete = patch = get

    def _body_with_usage_requested(self, provider: providers.Provider) -> bytes | None:
        """Ask OpenAI-compatible streams to report usage in their final chunk, so quotas count streamed tokens."""
        body = self.request.body
        if not body or provider.sdk != "openai" or b'"stream"' not in body:
            return body
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return body
        if isinstance(data, dict) and data.get("stream") is True and self.request.path.endswith("/chat/completions"):
            options = data.get("stream_options") if isinstance(data.get("stream_options"), dict) else {}
            data["stream_options"] = {**options, "include_usage": True}
            return json.dumps(data).encode()
        return body
