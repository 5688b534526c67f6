"""/keyvault/kernel/*: endpoints for this server's kernels, each request signed by the kernel
(kvk1 HMAC, see `base.CallerMixin`)."""

from __future__ import annotations

import time

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .. import providers
from .._version import __version__
from ..store import NotFound
from ..web.bodies import json_object, parse_credential_write
from ..web.errors import http_errors
from .base import CallerMixin, JSONMixin

DIRECT_MODE_DISABLED = "direct access is disabled on this server (c.KeyVault.allow_direct_access = False); "


@web.stream_request_body
class KernelAPIHandler(CallerMixin, JSONMixin, APIHandler):
    auth_resource = "keyvault"

    async def prepare(self):
        self.refuse_declared_oversize()
        await self.checks_answered_after_body(self.prepare_then_authenticate())

    async def prepare_then_authenticate(self) -> None:
        await super().prepare()
        self.authenticate_kernel()

    def json_body(self) -> dict:
        return json_object(self.body_bytes, max_bytes=self.max_body_bytes, empty_ok=True,
                           content_type=self.request.headers.get("Content-Type"))

    async def require_direct_mode(self, name: str, alternative: str) -> None:
        """Direct mode for `name`: allowed globally (c.KeyVault.allow_direct_access), or for this one
        credential by its metadata `"allow_direct": true` (set through REST PATCH, which kernels cannot
        call: they do not hold the server's token)."""
        if self.kv.allow_direct_access:
            return
        if (await self.kv.credential_metadata(name)).get("allow_direct") is True:
            return
        raise web.HTTPError(403, DIRECT_MODE_DISABLED + alternative)


class KernelStatusHandler(KernelAPIHandler):
    @allow_unauthenticated
    async def get(self):
        status = await self.off_loop(self.kv.vault.status)
        self.write_json({
            "mode": "server",
            "version": __version__,
            "protection": status["protection"],
            "warnings": status["warnings"],
            "allow_direct_access": self.kv.allow_direct_access,
            "isolation": self.kv.isolation_status(),
            "notebook_path": await self.kv.notebook_path(self.kernel_id),
            "kernel_id": self.kernel_id,
            # For Connect links the browser opens on its own origin (the kernel's server URL may differ).
            "base_url": self.base_url,
            "oauth_providers": [p.to_json() for p in self.kv.oauth.providers.values()],
        })


class KernelCredentialsHandler(KernelAPIHandler):
    @allow_unauthenticated
    async def get(self):
        items = await self.off_loop(self.kv.vault.list, self.kv.owner)
        listed = [i.to_json() for i in items]
        self.write_json({"credentials": [{**i, "stale": self.kv.is_stale(i)} for i in listed]})


class KernelCredentialHandler(KernelAPIHandler):
    @allow_unauthenticated
    async def get(self, raw_name: str):
        """Direct mode: the value itself, only when the admin allows it and the notebook may."""
        name = self.name_from_path(raw_name)
        await self.require_direct_mode(name, "use proxy mode")
        await self.check_notebook_access(name)
        resolved = await self.off_loop(self.kv.vault.resolve, self.kv.owner, name, actor=self.caller,
                                       purpose="reveal")
        await self.off_loop(self.kv.vault.audit, self.kv.owner, "reveal", name, "ok", actor=self.caller,
                            detail=f"source={resolved.source}")
        pid = resolved.provider or getattr(providers.provider_for_env_var(name), "id", None)
        self.write_json({"name": name, "provider": pid, "type": resolved.type, "value": resolved.value,
                         "base_url": self.kv.base_url_of(pid, resolved.metadata)})

    @allow_unauthenticated
    async def put(self, raw_name: str):
        name = self.name_from_path(raw_name)
        write = parse_credential_write(name, self.json_body(), max_value_bytes=self.kv.max_value_bytes,
                                       allowed=("value", "provider", "session", "expires_at", "expires_in"))
        info, created = await self.off_loop(self.kv.vault.set, self.kv.owner, name, write.value,
                                            provider=write.provider, actor=self.caller, session=write.session,
                                            expires_at=write.expires_at)
        self.kv.invalidate(name)
        lifetime = info.lifetime_json(time.time())
        self.write_json({"name": name, "provider": write.provider, "created": created, "warnings": write.warnings,
                         "lifetime": lifetime["lifetime"], "expires_at": lifetime["expires_at"]},
                        status=201 if created else 200)

    @allow_unauthenticated
    async def delete(self, raw_name: str):
        name = self.name_from_path(raw_name)
        revocation = await self.off_loop_async(self.kv.delete_credential(name, actor=self.caller))
        if revocation is not None:  # an OAuth credential: what its provider said to the revocation
            return self.write_json({"deleted": True, "revocation": revocation})
        self.set_status(204)
        self.finish()


class KernelCredentialTestHandler(KernelAPIHandler):
    @allow_unauthenticated
    async def post(self, raw_name: str):
        name = self.name_from_path(raw_name)
        self.write_json(await self.off_loop_async(self.kv.test_credential(name, actor=self.caller)))


class KernelHistoryFingerprintsHandler(KernelAPIHandler):
    """What the kernel's history hook needs to redact stored values it was never given: hashes only."""

    @allow_unauthenticated
    async def get(self):
        self.write_json(await self.off_loop(self.kv.history_fingerprints, self.kernel_id))


class KernelOAuthTokenHandler(KernelAPIHandler):
    """Direct mode: a fresh OAuth2 access token for the kernel (`keyvault.token(name)`)."""

    @allow_unauthenticated
    async def get(self, raw_name: str):
        name = self.name_from_path(raw_name)
        await self.require_direct_mode(name, "use keyvault.http(name)")
        await self.check_notebook_access(name)
        with http_errors():
            access, provider = await self.kv.oauth.access_token(name, actor=self.caller)
        await self.off_loop(self.kv.vault.audit, self.kv.owner, "reveal", name, "ok", actor=self.caller)
        self.write_json({"name": name, "provider": provider.id, "value": access,
                         "api_base_url": provider.api_base_url})


class KernelEnvTokensHandler(KernelAPIHandler):
    """`keyvault.env(NAME)` in proxy mode: a short-lived token bound to this kernel and this one
    credential, which the proxy accepts in place of the key (so the key never enters the kernel)."""

    @allow_unauthenticated
    async def post(self):
        body = self.json_body()
        name = self.name_from_path(body.get("name") if isinstance(body.get("name"), str) else "")
        info = await self.off_loop(self.credential_info, name)
        pid = info.provider or getattr(providers.provider_for_env_var(name), "id", None)
        provider = providers.PROVIDERS.get(pid or "")
        if provider is None or not provider.needs_key:
            raise web.HTTPError(422, f"{name} has no provider, so there is no proxy for it; "
                                     "keyvault.env exports such a credential's value (direct mode)")
        refusal = providers.injection_refusal(provider, name, info.provider, info.type)
        if refusal:
            raise web.HTTPError(403, refusal)
        await self.check_notebook_access(name)
        token, grant = self.kv.kernel_tokens.issue(self.kernel_id, name)
        await self.off_loop(self.kv.vault.audit, self.kv.owner, "token_create", name, "ok", actor=self.caller,
                            detail=f"kernel-bound, {self.kv.kernel_tokens.lifetime:g} s")
        self.write_json({"token": token, "id": grant.id, "credential": name, "provider": provider.id,
                         "expires_in": self.kv.kernel_tokens.lifetime}, status=201)


    def credential_info(self, name: str):
        """The stored record's info; else the listing's (a key from the server's environment, a shared one)."""
        try:
            return self.kv.vault.info(self.kv.owner, name)
        except NotFound:
            for item in self.kv.vault.list(self.kv.owner):
                if item.name == name:
                    return item
            raise NotFound(f"no credential named {name}: add it in the Key Vault panel or with "
                           f"`%keyvault set {name}`") from None


class KernelEnvTokenHandler(KernelAPIHandler):
    @allow_unauthenticated
    async def post(self, token_id: str):
        """Renew: the kernel calls this while the `with` block (or `%keyvault env`) is active."""
        with http_errors():
            self.kv.kernel_tokens.renew(self.kernel_id, token_id)
        self.write_json({"id": token_id, "expires_in": self.kv.kernel_tokens.lifetime})

    @allow_unauthenticated
    async def delete(self, token_id: str):
        with http_errors():
            self.kv.kernel_tokens.revoke(self.kernel_id, token_id)
        self.set_status(204)
        self.finish()


_NAME = r"(?P<raw_name>[^/]+)"
handlers = [
    (r"/keyvault/kernel/status/?", KernelStatusHandler),
    (r"/keyvault/kernel/history-fingerprints/?", KernelHistoryFingerprintsHandler),
    (r"/keyvault/kernel/credentials/?", KernelCredentialsHandler),
    (rf"/keyvault/kernel/credentials/{_NAME}/test/?", KernelCredentialTestHandler),
    (rf"/keyvault/kernel/credentials/{_NAME}/?", KernelCredentialHandler),
    (rf"/keyvault/kernel/oauth/{_NAME}/token", KernelOAuthTokenHandler),
    (r"/keyvault/kernel/env-tokens/?", KernelEnvTokensHandler),
    (r"/keyvault/kernel/env-tokens/(?P<token_id>[0-9a-f]{32})/?", KernelEnvTokenHandler),
]
