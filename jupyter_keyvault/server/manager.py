"""`KeyVaultManager`: everything the server extension's handlers use, in one object.

It owns the vault, the scrubber, the rate limiters, kernel authentication, access tokens, OAuth
and the upstream HTTP session. The app puts it in `settings["keyvault_manager"]`; handlers read
it from there (as jupyter_server's handlers read `kernel_manager`) and never see the app.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import fnmatch
import gc
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traitlets.config import LoggingConfigurable

from .. import envguard, providers
from ..cache import LoadingCache
from ..isolation import IsolationPolicy, default_policy, isolation_status
from ..kernel_auth import KernelAuthenticator
from ..nbscrub import scrub_notebook
from ..oauth import OAuthManager, build_providers
from ..ratelimit import RateLimiter
from ..scrub import history_fingerprints, new_fingerprint_salt
from ..settings import KERNEL_ENV_ALLOWLIST, KeyVault
from ..store import InvalidInput, NotFound, VaultError
from ..store.errors import AccessDenied, RateLimited
from ..store.tokens import KernelTokens
from ..vaults import AccessTokens, ServerVault, Upstream
from ..vaults.unavailable import UnavailableVault
from ..web.relay import upstream_session
from .uses import CredentialUses, Refusals, UseLog

if TYPE_CHECKING:
    import aiohttp  # imported by web.relay when the first request goes upstream

SCRUBBER_REBUILD_QUIET = 0.25  # seconds without a write before the scrubber builds what changed
SCRUBBER_REBUILD_MAX_WAIT = 2.0  # ... or this long after the first write of a burst
SCRUBBER_MAX_PENDING = 64  # ... or this many values added since the last build (each scan searches them one by one)


class KeyVaultManager(KeyVault, LoggingConfigurable):
    """The server extension's state and rules (configured as `c.KeyVault.*`)."""

    def __init__(self, *, kernel_manager, session_manager, connection_url: str, root_dir: str = "",
                 env: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.kernel_manager = kernel_manager
        self.session_manager = session_manager
        self.connection_url = connection_url
        self.loopback_url = ""  # the loopback lane's, once bound (server/lane.py)
        self.root_dir = root_dir or os.getcwd()
        env = dict(os.environ) if env is None else env
        self.scrubber = self.make_scrubber(build_on_scrub=False)
        try:
            self.vault: ServerVault = self.open_vault(env=env, scrubber=self.scrubber)
        except VaultError as exc:
            # Serve "not available" (503 with the reason) rather than fail to load: a server without this
            # extension would hand kernels the master key in their environment and leave them unconfined.
            self.log.error("jupyter-keyvault: the vault is not available: %s", exc)
            self.vault = UnavailableVault(str(exc))
        self.tokens: AccessTokens = self.vault.access_tokens()
        self.kernel_tokens = KernelTokens(self.kernel_token_lifetime)
        self.isolation_policy = self._isolation_policy()
        # Landlock does not come or go while the server runs: decided once, before secrets leave os.environ.
        self._isolation = isolation_status(self.isolate_kernels, self.isolation_policy, with_paths=False)
        self.kernel_auth = KernelAuthenticator(self._session_key_for)
        self.oauth = OAuthManager(self.vault, self.owner, build_providers(self.oauth_providers),
                                  refresh_skew=self.oauth_refresh_skew, timeout=self.test_timeout)
        self.write_limiter = RateLimiter(self.write_rate_per_minute, burst=max(1, int(self.write_rate_per_minute)))
        self.test_limiter = RateLimiter(self.test_rate_per_minute, burst=max(1, int(self.test_rate_per_minute)))
        self.token_failure_limiter = RateLimiter(self.token_failures_per_minute,
                                                 burst=max(1, int(self.token_failures_per_minute)))
        self._token_blocked_until: dict[str, float] = {}
        # What every proxied request looks up, read once per burst (writes through this server empty
        # them at once; a read begun before a write is not kept).
        ttl = lambda: self.resolve_cache_seconds  # noqa: E731
        self._upstreams: LoadingCache[tuple[str, str], Upstream] = LoadingCache(ttl)
        self._metadata: LoadingCache[str, dict] = LoadingCache(ttl)
        self._verified_tokens: LoadingCache[tuple[bytes, str], Any] = LoadingCache(ttl)  # (sha256(token), name)
        self.uses = UseLog(self._write_uses)
        self._http: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Future] = set()
        self.server_env_names: set[str] = set()  # put in this process's env for jupyter-ai's models; never kernels'
        self._rebuild_scheduled = False
        self._fingerprint_salts: dict[str, bytes] = {}
        self._exit_lock: int | None = None  # fd holding delete-on-exit.lock while this server runs
        self._lifetimes_stopped = False
        self.notebook_warnings: collections.deque = collections.deque(maxlen=50)

    # -- kernels
    def _isolation_policy(self) -> IsolationPolicy | None:
        """What isolated kernels may touch; built once, so a bad setting fails at start."""
        if not self.kernels_isolated():
            return None
        key_file = getattr(self.vault, "key_file", None)
        vault_dir = Path(self.vault_path).parent
        key_files = [str(key_file)] if key_file and Path(key_file).parent != vault_dir else []
        return default_policy(mode=self.isolate_kernels, vault_dir=str(vault_dir), key_files=key_files,
                              notebook_root=self.root_dir, extra_writable=list(self.isolation_writable_paths))

    def isolation_status(self) -> dict[str, Any]:
        """As the browser may see it: limitations without server paths."""
        return dict(self._isolation)

    def _session_key_for(self, kernel_id: str) -> bytes | None:
        if kernel_id not in self.kernel_manager:
            return None
        return self.kernel_manager.get_kernel(kernel_id).session.key or None

    async def notebook_path(self, kernel_id: str | None) -> str | None:
        for session in await self.session_manager.list_sessions():
            if session.get("kernel", {}).get("id") == kernel_id:
                return session.get("path")
        return None

    async def check_notebook_access(self, kernel_id: str | None, name: str, *, actor: str) -> None:
        """Per-notebook access globs of a credential; a kernel outside them gets AccessDenied (audited)."""
        globs = (await self.credential_metadata(name)).get("notebooks")
        if not globs:
            return
        path = await self.notebook_path(kernel_id)
        if path is None or not any(fnmatch.fnmatchcase(path, g) for g in globs):
            await asyncio.to_thread(self.vault.audit, self.owner, "use", name, "denied", actor=actor,
                                    detail=f"notebook={path}")
            raise AccessDenied(f"access to {name} is not allowed from this notebook "
                               f"({path or 'no notebook'}); allowed: {', '.join(globs)}")

    def credential_env_names(self) -> set[str]:
        return super().credential_env_names() | getattr(self, "server_env_names", set())

    def keep_task(self, task: asyncio.Future) -> None:
        """Hold a background task until it ends (cancelled at close)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def kernel_env(self, env: dict[str, str] | None) -> dict[str, str]:
        """The environment a kernel (or terminal) starts with: no secrets, plus how to reach the vault."""
        base = dict(os.environ if env is None else env)
        clean = envguard.filtered_env(base, self.secret_env_patterns, self.credential_env_names(),
                                      KERNEL_ENV_ALLOWLIST)
        clean["KEYVAULT_SERVER_URL"] = self.server_url or self.connection_url
        clean.pop("KEYVAULT_PROXY_URL", None)
        if self.loopback_url:
            clean["KEYVAULT_PROXY_URL"] = self.loopback_url
        if self.autoload:
            autoload = str(Path(__file__).parent.parent / "kernel" / "autoload.py")
            previous = base.get("PYTHONSTARTUP")
            if previous and previous != autoload:
                clean["KEYVAULT_PREVIOUS_PYTHONSTARTUP"] = previous
            clean["PYTHONSTARTUP"] = autoload
        return clean

    # -- credentials
    async def credential_metadata(self, name: str) -> dict:
        """A credential's metadata (e.g. its notebook globs) without decrypting it, cached briefly."""
        async def load() -> dict:
            try:
                return dict((await asyncio.to_thread(self.vault.info, self.owner, name)).metadata)
            except (NotFound, InvalidInput):
                return {}  # env-sourced or missing: resolution reports it

        metadata, _ = await self._metadata.get(name, load)
        return metadata

    async def upstream(self, provider: providers.Provider, name: str, *, actor: str) -> Upstream:
        """Where the proxy sends a request for `name`, cached briefly so a burst decrypts once. A use
        served from the cache is counted in memory and written by `self.uses` off the request path
        (the vault audits a use that decrypts, and the service audits uses it injects)."""
        upstream, loaded = await self._upstreams.get(
            (provider.id, name),
            lambda: asyncio.to_thread(self.vault.upstream, self.owner, provider, name, actor=actor),
            lifetime=_time_left)
        if not loaded and upstream.injected is not None:
            self.uses.credential(name, actor)
        return upstream

    def invalidate(self, name: str, *, deleted: bool = False) -> None:
        """A write through this server: forget what was cached about `name` at once, and bring the
        scrubber up to date off the event loop (a deleted value is no longer redacted)."""
        self._forget_credential(name)
        if deleted:
            self.scrubber.forget_name(name)
        self.refresh_scrubber()

    def _forget_credential(self, name: str) -> None:
        self._metadata.discard(lambda key: key == name)
        self._upstreams.discard(lambda key: key[1] == name)

    def refresh_scrubber(self) -> None:
        """Build what changed in the scrubber in a worker thread once writes pause (one build for a
        burst of writes; usually only the values changed since its last full build, see Scrubber);
        scrubbing meanwhile still finds values added since the last build (Scrubber's pending list)
        and no longer redacts forgotten ones."""
        if self._rebuild_scheduled or not self.scrubber.dirty:
            return
        self._rebuild_scheduled = True

        async def rebuild_when_quiet() -> None:
            try:
                generation, waited = None, 0.0
                # Wait for a pause in the writes, but not forever: the pending list is searched value by value.
                while (generation != self.scrubber.generation and waited < SCRUBBER_REBUILD_MAX_WAIT
                       and self.scrubber.pending_count < SCRUBBER_MAX_PENDING):
                    generation = self.scrubber.generation
                    await asyncio.sleep(SCRUBBER_REBUILD_QUIET)
                    waited += SCRUBBER_REBUILD_QUIET
                await self.scrubber.rebuild_async()
            finally:
                self._rebuild_scheduled = False
            if self.scrubber.dirty:
                self.refresh_scrubber()

        task = asyncio.ensure_future(rebuild_when_quiet())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def test_credential(self, name: str, *, actor: str) -> dict:
        """Run the provider's test request; the result never carries the key."""
        try:
            result = await asyncio.wait_for(asyncio.to_thread(self.vault.test, self.owner, name, actor=actor),
                                            self.test_timeout + 1)
        except asyncio.TimeoutError:
            result = {"ok": False, "error": f"no answer within {self.test_timeout:g} s (timeout)"}
        return json.loads(self.scrubber.scrub(json.dumps(result)))

    def base_url_of(self, provider_id: str | None, metadata: Any = None) -> str | None:
        """The configured base URL of a provider (a credential's own endpoint for providers without a
        fixed one, such as Azure), or None (the SDK's default then applies)."""
        if provider_id not in providers.PROVIDERS:
            return None
        provider = providers.PROVIDERS[provider_id]
        try:
            if provider.per_credential_base_url and metadata and metadata.get("base_url"):
                return providers.validate_base_url(metadata["base_url"])
            return self.base_url_for(provider)
        except InvalidInput:
            return None

    def history_fingerprints(self, kernel_id: str) -> dict:
        """Salted hashes of chunks of every stored value, so the kernel's history hook can redact a
        value it was never given (pasted into a cell). A salt per kernel: documents of two kernels
        cannot be compared, and a kernel learns nothing it could not brute-force per 64-bit chunk."""
        salt = self._fingerprint_salts.get(kernel_id)
        if salt is None or kernel_id not in self.kernel_manager:
            for gone in [k for k in self._fingerprint_salts if k not in self.kernel_manager]:
                del self._fingerprint_salts[gone]
            salt = self._fingerprint_salts[kernel_id] = new_fingerprint_salt()
        return history_fingerprints(self.scrubber.known_items(), salt)

    # -- vault access tokens
    def kernel_alive(self, kernel_id: str) -> bool:
        return kernel_id in self.kernel_manager

    async def verify_token(self, token: str, credential: str, client: str, *, default_scope: bool = False):
        """The token's info, or TokenRefused/TokenScopeError; repeated failures from one client
        raise RateLimited for a while (audited either way). A kernel-bound token (`keyvault.env`) is
        checked in memory; with `default_scope` (the caller named no credential) it serves the one it
        was issued for."""
        from ..store import VaultError
        from ..store.tokens import TOKEN_RE, TokenRefused, TokenScopeError

        # Per token id: a proxy in front of the server would otherwise put every user behind one address.
        parsed = TOKEN_RE.fullmatch(token or "")
        client = f"token:{parsed.group(1)}" if parsed else f"address:{client}"
        blocked = self._token_blocked_until.get(client, 0.0)
        if blocked > time.monotonic():
            raise RateLimited("too many failed token attempts", blocked - time.monotonic())
        # A token verified moments ago is not read and decrypted again (revocation here empties the cache).
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        try:
            if self.kernel_tokens.holds(token):  # checked in memory, and dead with its kernel: never cached
                return self.kernel_tokens.verify(token, None if default_scope else credential, self.kernel_alive)
            info, loaded = await self._verified_tokens.get(
                (digest, credential), lambda: asyncio.to_thread(self.tokens.verify, self.owner, token, credential),
                lifetime=_time_left)
        except TokenScopeError:
            await asyncio.to_thread(self.vault.audit, self.owner, "token_auth", credential, "denied",
                                    actor="token", detail="out of scope")
            raise
        except VaultError as exc:
            self.uses.refusal(credential, client)  # audited in one row per second, not one each
            wait = self.token_failure_limiter.take(client)
            if wait:
                if len(self._token_blocked_until) >= self.token_failure_limiter.max_keys:  # keys come from callers
                    now = time.monotonic()
                    self._token_blocked_until = {k: t for k, t in self._token_blocked_until.items() if t > now}
                    if len(self._token_blocked_until) >= self.token_failure_limiter.max_keys:
                        self._token_blocked_until.clear()  # a flood of forged ids: each would be new anyway
                self._token_blocked_until[client] = time.monotonic() + wait
                raise RateLimited("too many failed token attempts", wait) from None
            if isinstance(exc, TokenRefused):
                raise
            raise TokenRefused("vault access token refused") from None
        if not loaded:
            self.uses.token(info.id)  # a verification that read the vault recorded its own use
        return info

    def forget_tokens(self) -> None:
        """A token was created or revoked through this server: verify every token afresh."""
        self._verified_tokens.clear()

    def _write_uses(self, credentials: CredentialUses, token_ids: set[str], refusals: Refusals) -> None:
        """Blocking: the batch `self.uses` hands over once a second and at shutdown."""
        if credentials:
            self.vault.record_uses(self.owner, credentials)
        if token_ids:
            self.tokens.touch(self.owner, token_ids)
        if refusals.count:
            self.vault.audit(self.owner, "token_auth", refusals.credential, "refused", actor="token",
                             detail=refusals.detail)

    # -- upstream HTTP
    async def http_session(self) -> aiohttp.ClientSession:
        """One pooled keep-alive client for every upstream (created on the server's loop)."""
        if self._http is None or self._http.closed:
            first = self._http is None
            self._http = upstream_session(self.proxy_read_timeout, self.proxy_max_connections)
            if first and self.freeze_startup_heap:
                # aiohttp was imported just now (lazily, see web/relay.py): its modules join the frozen
                # startup heap, or full collections would walk them again.
                gc.freeze()
        return self._http

    # -- notebooks
    def pre_save_hook(self, model: dict, path: str, **kwargs: Any) -> None:
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
            self.notebook_warnings.append({"path": path, "cells": cells, "action": self.scrub_sources,
                                           "at": time.time()})
            meta = model["content"].setdefault("metadata", {})
            meta["keyvault"] = {"source_warnings": report.sources_with_secrets}
        elif isinstance(model["content"].get("metadata"), dict):
            model["content"]["metadata"].pop("keyvault", None)

    # -- credential lifetimes: expiry, key age, session heartbeat, delete on exit, OAuth revocation
    def is_stale(self, item: dict[str, Any]) -> bool:
        """A listed credential (to_json) older than key_age_warning_days; env values have no age here."""
        days = self.key_age_warning_days
        return bool(days) and item.get("source") != "env" and int(item.get("age_days") or 0) >= days

    def lifetime_report(self) -> dict[str, Any]:
        """For status: which credentials are session-only, expired or stale, and a warning for each
        expired or stale one. Lists the vault: call it off the event loop."""
        now = time.time()
        try:
            items = [i for i in self.vault.list(self.owner) if i.source != "env"]
        except VaultError:  # status explains an unusable vault elsewhere
            items = []
        expired = [i.name for i in items if i.expired(now)]
        stale = [i.name for i in items if i.stale(now, self.key_age_warning_days * 86400)]
        warnings = [f"{n} has expired: it is refused until it gets a new value (or is purged)" for n in expired]
        warnings += [f"{n} is older than {self.key_age_warning_days} days: rotate it" for n in stale]
        return {"session": [i.name for i in items if i.session], "expired": expired, "stale": stale,
                "key_age_warning_days": self.key_age_warning_days, "delete_on_exit": self.delete_on_exit,
                "warnings": warnings}

    async def delete_credential(self, name: str, *, actor: str) -> dict[str, Any] | None:
        """Delete a credential; an OAuth one is first revoked at its provider (RFC 7009) where a
        revocation endpoint is configured. Returns that outcome (None for other types). The local
        delete happens whatever the provider answers."""
        from ..oauth import OAUTH_TYPE

        try:
            info = await asyncio.to_thread(self.vault.info, self.owner, name)
        except NotFound:
            info = None  # the delete below reports (and audits) the missing name
        revocation = None
        if info is not None and info.type == OAUTH_TYPE:
            revocation = await self.oauth.revoke(name, info.metadata, actor=actor)
        await asyncio.to_thread(self.vault.delete, self.owner, name, actor=actor)
        self.invalidate(name, deleted=True)
        return revocation

    async def purge_expired(self) -> list[str]:
        """Destroy expired values now (the loop does it every expiry_check_seconds)."""
        purged = [name for _, name in await asyncio.to_thread(self.vault.purge_expired, self.owner)]
        for name in purged:
            # The destroyed value stays known to the scrubber: it is still a secret if seen again.
            self._forget_credential(name)
            self.log.info("jupyter-keyvault: %s expired; its value was destroyed", name)
        return purged

    async def _lifetime_loop(self) -> None:
        while True:
            try:
                await self.purge_expired()
                await asyncio.to_thread(self.vault.session_heartbeat, self.owner)
            except VaultError as exc:  # reported, retried next round: the server keeps serving
                self.log.warning("jupyter-keyvault: lifetime check failed: %s", exc)
            await asyncio.sleep(self.expiry_check_seconds)

    def _exit_marker(self) -> Path:
        """Present (and locked) while a server with delete_on_exit runs; removed at a clean stop. Found
        unlocked at start, it means the last one crashed (the kernel drops a dead process's lock, so a
        reused pid cannot fool it)."""
        return Path(self.vault_path).with_name("delete-on-exit.lock")

    def _delete_on_exit(self, why: str) -> list[str]:
        """Delete the delete_on_exit credentials (blocking); returns the names deleted."""
        if self.delete_on_exit == "all":
            names = [i.name for i in self.vault.list(self.owner, include_env=False) if i.source == "vault"]
        else:
            names = list(self.delete_on_exit)
        deleted = []
        for name in names:
            try:
                self.vault.delete(self.owner, name, actor=f"delete_on_exit ({why})")
            except NotFound:
                continue
            deleted.append(name)
        if deleted:
            self.log.info("jupyter-keyvault: deleted %s (delete_on_exit, %s)", ", ".join(deleted), why)
        return deleted

    def _start_delete_on_exit(self) -> None:
        import fcntl

        marker = self._exit_marker()
        crashed = marker.exists()
        if not self.delete_on_exit and not crashed:
            return
        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(marker, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: another server runs on this vault now, and deletes on its own exit
            os.close(fd)
            return
        if crashed:
            self._delete_on_exit("after an unclean stop")
        if self.delete_on_exit:
            self._exit_lock = fd
        else:
            marker.unlink(missing_ok=True)
            os.close(fd)

    async def start_lifetimes(self) -> None:
        """At start: finish a crashed run's delete_on_exit, then purge and heartbeat periodically."""
        try:
            await asyncio.to_thread(self._start_delete_on_exit)
        except (VaultError, OSError) as exc:
            self.log.error("jupyter-keyvault: delete_on_exit at start failed: %s", exc)
        task = asyncio.ensure_future(self._lifetime_loop())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        # A SIGINT that ends jupyter_server's loop with KeyboardInterrupt (JupyterHub stops servers so) skips
        # the extensions' stop hooks; the interpreter's exit still runs this.
        atexit.register(self._stop_lifetimes)

    def _stop_lifetimes(self) -> None:
        """At a clean stop (blocking; once): delete_on_exit, and session-only credentials end."""
        if self._lifetimes_stopped:
            return
        self._lifetimes_stopped = True
        atexit.unregister(self._stop_lifetimes)
        try:
            if self._exit_lock is not None:
                self._delete_on_exit("server stopped")
                self._exit_marker().unlink(missing_ok=True)
                os.close(self._exit_lock)
                self._exit_lock = None
            self.vault.end_session(self.owner, reason="server stopped")
        except (VaultError, OSError) as exc:
            self.log.error("jupyter-keyvault: clean-up at stop failed: %s", exc)

    # -- life cycle
    async def learn_values(self) -> None:
        """Feed the scrubber every stored value, so logs redact even values never used here."""
        await asyncio.to_thread(self.vault.learn_values, self.owner)
        await self.scrubber.rebuild_async()

    async def close(self) -> None:
        for task in list(self._background):  # a pending scrubber rebuild: nothing to scrub after shutdown
            task.cancel()
        await self.uses.close()
        if self._http is not None:
            await self._http.close()
        await asyncio.to_thread(self._stop_lifetimes)
        self.vault.close()


def _time_left(item: Any) -> float:
    """Seconds until a cached key or token expires (infinite when it does not)."""
    expires_at = getattr(item, "expires_at", None)
    return float("inf") if expires_at is None else expires_at - time.time()
