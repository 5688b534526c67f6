"""The jupyter_server extension: the only process that ever holds decrypted values."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
from functools import partial
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Int, Unicode

import time

from . import __version__, envguard, providers
from .handlers import handlers as rest_handlers
from .iopub import scrubbing_connection_class
from .kernel_auth import KernelAuthenticator
from .nbscrub import scrub_notebook
from .kernel_handlers import handlers as kernel_handlers
from .oauth import OAuthManager, build_providers
from .oauth_handlers import handlers as oauth_handlers
from .proxy import handlers as proxy_handlers
from .ratelimit import RateLimiter
from .scrub import install_log_filter
from .settings import KERNEL_ENV_ALLOWLIST, KeyVault
from .store import InvalidInput, NotFound, Vault, VaultError
from .store.tokens import TokenStore


class KeyVaultApp(ExtensionApp, KeyVault):
    """Serves /keyvault/api/*; configured through `c.KeyVault.*`."""

    name = "jupyter_keyvault"
    extension_url = "/keyvault/api/status"
    load_other_extensions = True

    max_request_bytes = Int(
        64 * 1024, help="Largest request body accepted by the REST API, in bytes (413 above it)."
    ).tag(config=True)
    write_rate_per_minute = Float(
        60.0, help="Credential writes and deletes allowed per user per minute (429 with Retry-After above it)."
    ).tag(config=True)
    test_rate_per_minute = Float(
        20.0, help="Credential tests allowed per user per minute (429 with Retry-After above it)."
    ).tag(config=True)
    show_masked_hint = Bool(
        False, help="Show a masked hint (last 4 characters) of each stored value in listings. Off by default: "
        "the browser then learns nothing about a value but its presence."
    ).tag(config=True)
    scrub_server_environ = Bool(
        True, help="Remove the master key, passphrases and API keys from this server's own os.environ at start "
        "(after reading them), so nothing it spawns (kernels, terminals, subprocesses) can inherit them.",
    ).tag(config=True)
    allow_direct_access = Bool(
        True, help="Let kernels fetch stored values (keyvault.get, keyvault.env, mode='direct'). When False only "
        "proxy mode works, and the key never enters any kernel.",
    ).tag(config=True)
    proxy_read_timeout = Float(
        600.0, help="Seconds the proxy waits for the next bytes from an upstream (long generations stream slowly)."
    ).tag(config=True)
    proxy_max_connections = Int(
        0, help="Upper bound on concurrent upstream connections of the proxy (0 = no limit)."
    ).tag(config=True)
    resolve_cache_seconds = Float(
        5.0, help="How long the proxy may reuse a decrypted key before reading the vault again. Writes through "
        "this server invalidate it at once; writes by another process (the CLI) are seen after this delay.",
    ).tag(config=True)
    autoload = Bool(
        True, help="Load the kernel helper and its output scrubber in every IPython kernel this server starts "
        "(through PYTHONSTARTUP; a user's own PYTHONSTARTUP file still runs after it).",
    ).tag(config=True)
    scrub_iopub = Bool(
        True, help="Scrub every output message on its way from a kernel to the browser, with the server's "
        "knowledge of all stored values, so even a kernel without the helper cannot show one.",
    ).tag(config=True)
    scrub_sources = Enum(
        ["warn", "redact", "off"], default_value="warn",
        help="On notebook save, a secret found in a cell's source is reported ('warn', the default: server log, "
        "notebook metadata and /keyvault/api/status), replaced ('redact'), or ignored ('off'). Outputs are "
        "always scrubbed.",
    ).tag(config=True)
    token_failures_per_minute = Float(
        10.0, help="Failed vault-access-token attempts allowed per client address per minute (429 above it)."
    ).tag(config=True)
    server_url = Unicode(
        "", help="URL kernels use to reach this server's vault (default: the server's own connection URL)."
    ).tag(config=True)

    def initialize_settings(self):
        env_snapshot = dict(os.environ)
        self.scrubber = self.make_scrubber()
        self._install_log_filters()
        self.vault: Vault = self.open_vault(env=env_snapshot, scrubber=self.scrubber)
        if self.scrub_server_environ:
            removed = envguard.remove_secret_env(
                os.environ, self.secret_env_patterns, self.credential_env_names(), KERNEL_ENV_ALLOWLIST
            )
            if removed:
                self.log.info("jupyter-keyvault: removed %d secret variable(s) from the server environment: %s",
                              len(removed), ", ".join(removed))
        status = self.vault.status()
        for warning in status["warnings"]:
            self.log.warning("jupyter-keyvault: %s", warning)
        self.log.info("jupyter-keyvault %s: vault at %s, master key from %s", __version__, status["location"],
                      status["protection"]["source"])
        self.write_limiter = RateLimiter(self.write_rate_per_minute, burst=max(1, int(self.write_rate_per_minute)))
        self.test_limiter = RateLimiter(self.test_rate_per_minute, burst=max(1, int(self.test_rate_per_minute)))
        self.kernel_auth = KernelAuthenticator(self._session_key_for)
        self.tokens = TokenStore(self.vault)
        self.token_failure_limiter = RateLimiter(self.token_failures_per_minute,
                                                 burst=max(1, int(self.token_failures_per_minute)))
        self.token_blocked_until: dict[str, float] = {}
        self.oauth = OAuthManager(self.vault, self.owner, build_providers(self.oauth_providers),
                                  refresh_skew=self.oauth_refresh_skew, timeout=self.test_timeout)
        self._resolved: dict[str, tuple[float, object]] = {}
        self._http = None
        self.notebook_warnings: collections.deque = collections.deque(maxlen=50)
        self.settings.update({"keyvault": self})
        self._guard_kernel_env()
        self._install_output_filters()
        # Learn every stored value so the log filter can redact it even if never used here.
        self.serverapp.io_loop.call_later(0, partial(asyncio.ensure_future, self._learn_values()))

    def initialize_handlers(self):
        # oauth_handlers first: its token-aware proxy route shadows proxy.py's for the same paths.
        self.handlers.extend(rest_handlers + oauth_handlers + kernel_handlers + proxy_handlers)

    # -- shared by the REST, kernel and proxy handlers
    def _session_key_for(self, kernel_id: str) -> bytes | None:
        km = self.serverapp.kernel_manager
        if kernel_id not in km:
            return None
        return km.get_kernel(kernel_id).session.key or None

    async def resolve_for_proxy(self, name: str, *, actor: str):
        """A decrypted credential, cached briefly so a burst of requests reads the vault once."""
        hit = self._resolved.get(name)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        resolved = await asyncio.to_thread(self.vault.resolve, self.owner, name, actor=actor)
        self._resolved[name] = (now + self.resolve_cache_seconds, resolved)
        return resolved

    async def credential_metadata(self, name: str) -> dict:
        """A credential's metadata (e.g. its notebook globs) without decrypting it."""
        hit = self._resolved.get(name)
        if hit and hit[0] > time.monotonic():
            return dict(hit[1].metadata)
        try:
            return (await asyncio.to_thread(self.vault.info, self.owner, name)).metadata
        except (NotFound, InvalidInput):
            return {}  # env-sourced or missing: resolution reports it

    def invalidate(self, name: str) -> None:
        self._resolved.pop(name, None)

    async def test_credential(self, name: str, *, actor: str) -> dict:
        """Run the provider's test request; the result never carries the key."""
        if self.backend == "hub":  # the service tests it: this server never decrypts
            return json.loads(self.scrubber.scrub(json.dumps(await asyncio.to_thread(self.vault.test, name))))
        resolved = await asyncio.to_thread(self.vault.resolve, self.owner, name, actor=actor, purpose="test")
        pid = resolved.provider or getattr(providers.provider_for_env_var(name), "id", None)
        if pid is None:
            raise providers.InvalidInput(f"{name} has no provider; set it again with a provider to test it")
        provider = providers.get_provider(pid)
        base_url = self.base_url_for(provider)
        timeout = self.test_timeout
        if resolved.value and not (resolved.value.isascii() and resolved.value.isprintable()):
            # http.client raises (a 500) on a header it cannot encode, with the value in the message.
            result = providers.TestResult(False, error=f"{name} contains non-ASCII or control characters, which "
                                          f"cannot be sent in an HTTP header; it is not a valid {provider.label} key")
        else:
            try:
                result = await asyncio.wait_for(
                    asyncio.to_thread(providers.run_key_test, provider, resolved.value, base_url, timeout=timeout),
                    timeout + 1,
                )
            except asyncio.TimeoutError:
                result = providers.TestResult(False, error=f"no answer from {provider.label} within {timeout:g} s "
                                              "(timeout)")
        payload = json.loads(self.scrubber.scrub(json.dumps(result.to_json())))
        await asyncio.to_thread(self.vault.audit, self.owner, "test", name, "ok" if result.ok else "failed", actor=actor)
        return payload

    async def http_session(self):
        """One pooled keep-alive client for every upstream (created on the server's loop)."""
        if self._http is None or self._http.closed:
            import aiohttp

            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.proxy_max_connections, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=self.proxy_read_timeout),
                auto_decompress=False,
                trust_env=False,
            )
        return self._http

    def _install_log_filters(self):
        """Redact on every handler of every logger that exists now (the access log included)."""
        loggers: list[logging.Logger] = [logging.getLogger(), self.log, self.serverapp.log]
        loggers += [logging.getLogger(n) for n in ("tornado.access", "tornado.application", "tornado.general",
                                                   "jupyter_keyvault")]
        loggers += [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        install_log_filter(self.scrubber, loggers)

    async def _learn_values(self):
        if self.backend == "hub":
            return  # values stay in the hub service; patterns still scrub here

        def learn():
            for info in self.vault.list(self.owner, include_env=False):
                try:
                    self.vault.get_value(self.owner, info.name, purpose="scrub", touch=False)
                except VaultError:  # a damaged row is reported when used; keep learning the rest
                    continue

        await asyncio.to_thread(learn)

    # -- output scrubbing
    def _install_output_filters(self):
        if self.scrub_iopub:
            settings = self.settings  # merged into the web app's settings after initialize_settings
            base = settings.get("kernel_websocket_connection_class")
            if base is not None and hasattr(base, "handle_outgoing_message"):
                settings["kernel_websocket_connection_class"] = scrubbing_connection_class(base, lambda: self.scrubber)
            else:
                self.log.warning("jupyter-keyvault: this server's kernel connection cannot be filtered; "
                                 "outputs are scrubbed in kernels and on save only")
        self.serverapp.contents_manager.register_pre_save_hook(self._pre_save_hook)

    def _pre_save_hook(self, model, path, **kwargs):
        """Scrub every notebook on save, whichever kernel (or none) produced it."""
        if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return
        report = scrub_notebook(model["content"], self.scrubber, sources=self.scrub_sources)
        if report.outputs_redacted or report.metadata_redacted:
            self.log.info("jupyter-keyvault: redacted %d output(s) of %s before saving",
                          report.outputs_redacted + report.metadata_redacted, path)
        if report.sources_with_secrets:
            cells = [w["cell"] + 1 for w in report.sources_with_secrets]
            action = "redacted" if self.scrub_sources == "redact" else "left in place (scrub_sources = 'warn')"
            self.log.warning("jupyter-keyvault: %s: cell(s) %s contain a secret in their source; %s. "
                             "Store it with `jupyter keyvault set NAME` and use keyvault.get(NAME) instead.",
                             path, ", ".join(map(str, cells)), action)
            warning = {"path": path, "cells": cells, "action": self.scrub_sources, "at": time.time()}
            self.notebook_warnings.append(warning)
            meta = model["content"].setdefault("metadata", {})
            meta["keyvault"] = {"source_warnings": report.sources_with_secrets}
        elif isinstance(model["content"].get("metadata"), dict):
            model["content"]["metadata"].pop("keyvault", None)

    # -- kernels
    def kernel_env_additions(self, base: dict) -> dict[str, str]:
        extra = {"KEYVAULT_SERVER_URL": self.server_url or self.serverapp.connection_url}
        if self.autoload:
            autoload = str(Path(__file__).parent / "kernel" / "autoload.py")
            previous = base.get("PYTHONSTARTUP")
            if previous and previous != autoload:
                extra["KEYVAULT_PREVIOUS_PYTHONSTARTUP"] = previous
            extra["PYTHONSTARTUP"] = autoload
        return extra

    def filter_kernel_env(self, env: dict | None) -> dict[str, str]:
        base = dict(os.environ if env is None else env)
        clean = envguard.filtered_env(base, self.secret_env_patterns, self.credential_env_names(),
                                      KERNEL_ENV_ALLOWLIST)
        clean.update(self.kernel_env_additions(base))
        return clean

    def _guard_kernel_env(self):
        """Every kernel start (and env update) goes through filter_kernel_env."""
        km = self.serverapp.kernel_manager
        start, update = km.start_kernel, getattr(km, "update_env", None)

        async def start_kernel(*args, **kwargs):
            kwargs["env"] = self.filter_kernel_env(kwargs.get("env"))
            return await start(*args, **kwargs)

        km.start_kernel = start_kernel
        if update is not None:
            def update_env(*, kernel_id, env):
                return update(kernel_id=kernel_id, env=self.filter_kernel_env(env))

            km.update_env = update_env

    async def stop_extension(self):
        if self._http is not None:
            await self._http.close()
        self.vault.close()


main = launch_new_instance = KeyVaultApp.launch_instance
