"""Endpoints for kernels of this server, authenticated by a per-request HMAC (kernel_auth).

These routes are deliberately public to jupyter_server's own auth (@allow_unauthenticated):
they authenticate every request themselves, accept no cookies as credentials, and so
need no XSRF token (a browser cannot compute the kernel's HMAC).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import APIHandler
from tornado import web

from . import __version__, providers
from .handlers import VaultCallsMixin
from .kernel_auth import KernelAuthError
from .store import InvalidInput

if TYPE_CHECKING:
    from .app import KeyVaultApp


class KernelAuthenticatedMixin:
    """Identify the calling kernel and check per-notebook access."""

    kernel_id: str | None = None

    @property
    def kv(self) -> "KeyVaultApp":
        return self.settings["keyvault"]

    def check_xsrf_cookie(self) -> None:
        """Header-authenticated per request (see module docstring); cookies grant nothing here."""

    def authenticate_kernel(self) -> str:
        try:
            credential = self.kv.kernel_auth.credential_from_headers(self.request.headers)
            self.kernel_id = self.kv.kernel_auth.verify(credential)
        except KernelAuthError as exc:
            raise web.HTTPError(401, str(exc)) from None
        return self.kernel_id

    async def notebook_path(self) -> str | None:
        sessions = await self.kv.serverapp.session_manager.list_sessions()
        for session in sessions:
            if session.get("kernel", {}).get("id") == self.kernel_id:
                return session.get("path")
        return None

    async def check_notebook_access(self, name: str, metadata: dict[str, Any]) -> None:
        globs = metadata.get("notebooks")
        if not globs:
            return
        path = await self.notebook_path()
        if path is None or not any(fnmatch.fnmatchcase(path, g) for g in globs):
            await asyncio.to_thread(self.kv.vault.audit, self.kv.owner, "use", name, "denied",
                                    actor=f"kernel:{self.kernel_id}", detail=f"notebook={path}")
            raise web.HTTPError(403, f"access to {name} is not allowed from this notebook "
                                     f"({path or 'no notebook'}); allowed: {', '.join(globs)}")


class KernelAPIHandler(KernelAuthenticatedMixin, VaultCallsMixin, APIHandler):
    auth_resource = "keyvault"

    async def prepare(self):
        await super().prepare()
        self.authenticate_kernel()

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "request body must be a JSON object")
        return body


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
            "notebook_path": await self.notebook_path(),
            "kernel_id": self.kernel_id,
            # For Connect links the browser opens on its own origin (the kernel's server URL may differ).
            "base_url": self.base_url,
            "oauth_providers": [p.to_json() for p in self.kv.oauth.providers.values()],
        })


class KernelCredentialsHandler(KernelAPIHandler):
    @allow_unauthenticated
    async def get(self):
        items = await self.off_loop(self.kv.vault.list, self.kv.owner)
        self.write_json({"credentials": [i.to_json() for i in items]})


class KernelCredentialHandler(KernelAPIHandler):
    @allow_unauthenticated
    async def get(self, raw_name: str):
        """Direct mode: the value itself, only when the admin allows it and the notebook may."""
        name = self.name_from_path(raw_name)
        if not self.kv.allow_direct_access:
            raise web.HTTPError(403, "direct access is disabled on this server "
                                     "(c.KeyVault.allow_direct_access = False); use proxy mode")
        await self.check_notebook_access(name, await self.kv.credential_metadata(name))
        resolved = await self.off_loop(self.kv.vault.resolve, self.kv.owner, name, actor=f"kernel:{self.kernel_id}",
                                       purpose="reveal")
        await self.off_loop(self.kv.vault.audit, self.kv.owner, "reveal", name, "ok",
                            actor=f"kernel:{self.kernel_id}", detail=f"source={resolved.source}")
        pid = resolved.provider or getattr(providers.provider_for_env_var(name), "id", None)
        base_url = None
        if pid in providers.PROVIDERS:
            try:
                base_url = self.kv.base_url_for(providers.PROVIDERS[pid])
            except InvalidInput:
                base_url = None  # no usable base URL configured: the client falls back to the SDK default
        self.write_json({"name": name, "provider": pid, "type": resolved.type, "value": resolved.value,
                         "base_url": base_url})

    @allow_unauthenticated
    async def put(self, raw_name: str):
        name = self.name_from_path(raw_name)
        body = self.json_body()
        value, provider = body.get("value"), body.get("provider")
        if not isinstance(value, str):
            raise web.HTTPError(422, "field 'value' is required and must be a string")
        if provider is None:
            guess = providers.provider_for_env_var(name)
            provider = guess.id if guess else providers.detect_provider(value.strip())
        elif provider not in providers.PROVIDERS:
            raise web.HTTPError(422, f"unknown provider; known: {', '.join(providers.PROVIDERS)}")
        try:
            warnings = providers.check_key_format(provider, value)
        except InvalidInput as exc:
            raise web.HTTPError(422, str(exc)) from None
        _, created = await self.off_loop(self.kv.vault.set, self.kv.owner, name, value, provider=provider,
                                         actor=f"kernel:{self.kernel_id}")
        self.kv.invalidate(name)
        self.write_json({"name": name, "provider": provider, "created": created, "warnings": warnings},
                        status=201 if created else 200)

    @allow_unauthenticated
    async def delete(self, raw_name: str):
        name = self.name_from_path(raw_name)
        await self.off_loop(self.kv.vault.delete, self.kv.owner, name, actor=f"kernel:{self.kernel_id}")
        self.kv.invalidate(name)
        self.set_status(204)
        self.finish()


class KernelCredentialTestHandler(KernelAPIHandler):
    @allow_unauthenticated
    async def post(self, raw_name: str):
        name = self.name_from_path(raw_name)
        result = await self.kv.test_credential(name, actor=f"kernel:{self.kernel_id}")
        self.write_json(result)


_NAME = r"(?P<raw_name>[^/]+)"
handlers = [
    (r"/keyvault/kernel/status/?", KernelStatusHandler),
    (r"/keyvault/kernel/credentials/?", KernelCredentialsHandler),
    (rf"/keyvault/kernel/credentials/{_NAME}/test/?", KernelCredentialTestHandler),
    (rf"/keyvault/kernel/credentials/{_NAME}/?", KernelCredentialHandler),
]
