"""`python -m jupyter_keyvault.hub`: the keyvault service JupyterHub runs (c.JupyterHub.services).

It is the only process that holds the master key and decrypts. Single-user servers (with
`c.KeyVault.backend = "hub"`) call its API with their own JupyterHub token; its proxy injects
personal or shared keys upstream, counts usage and enforces limits. Shared key values never
leave this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

from tornado import ioloop, web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Bool, Float, Int, List, Unicode, default
from traitlets.config import Application

from .. import envguard, providers
from .._version import __version__
from ..scrub import Scrubber, install_log_filter
from ..settings import DEFAULT_SECRET_ENV_PATTERNS
from ..store.errors import AccessDenied, MasterKeyError, VaultError
from ..store.masterkey import ENV_MASTER_KEY, env_secret
from ..vaults.local import LocalVault
from ..web.errors import http_errors
from ..web.lifecycle import freeze_startup_heap
from ..web.relay import upstream_session
from .common import SERVICE_NAME_DEFAULT, SHARED_OWNER, QuotaExceeded, personal_owner
from .counters import Counters, Subject
from .db import HubStore, Limits
from .health import InFlight
from .invalidation import ChangeWatcher
from .ledger import UsageLedger


class KeyVaultHubService(Application):
    """The keyvault JupyterHub service (configure with `c.KeyVaultHubService.*` or command-line flags)."""

    name = "jupyter-keyvault-hub"
    description = "The jupyter-keyvault JupyterHub service: personal and shared credentials, quotas, audit."
    version = __version__

    service_name = Unicode(help="The service's name in c.JupyterHub.services (default: $JUPYTERHUB_SERVICE_NAME, "
                                "else 'keyvault').").tag(config=True)

    @default("service_name")
    def _default_service_name(self):
        return os.environ.get("JUPYTERHUB_SERVICE_NAME", SERVICE_NAME_DEFAULT)

    service_url = Unicode(help="Where to listen (default: $JUPYTERHUB_SERVICE_URL, set by JupyterHub).").tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    ip = Unicode("", help="Address to listen on (default: the host of service_url). On Kubernetes, '0.0.0.0' while "
                          "service_url names the hub's Service.").tag(config=True)

    service_prefix = Unicode(help="URL prefix (default: $JUPYTERHUB_SERVICE_PREFIX).").tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{self.service_name}/")

    data_dir = Unicode(help="Directory of the default SQLite database (default: the current directory).").tag(config=True)

    @default("data_dir")
    def _default_data_dir(self):
        return os.getcwd()

    db_url = Unicode(help="SQLAlchemy URL of the service's database: a SQLite file in data_dir by default; "
                          "postgresql+psycopg://user:password@host/db for production. Credentials (encrypted), "
                          "grants, limits, usage and audit all live there.").tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        # From the environment, so a database password is never on a command line (or in the hub's log).
        return env_secret(os.environ, "KEYVAULT_HUB_DB_URL") or "sqlite:///" + str(Path(self.data_dir) / "keyvault-hub.sqlite")

    admin_users = List(Unicode(), help="Hub users who administer shared keys, besides JupyterHub admins.").tag(config=True)
    admin_groups = List(Unicode(), help="Hub groups whose members administer shared keys.").tag(config=True)
    hub_admins_are_admins = Bool(True, help="JupyterHub admins administer shared keys.").tag(config=True)

    user_rate_per_minute = Float(60.0, help="Default proxied requests per user per minute (0 = unlimited).").tag(config=True)
    user_requests_per_day = Int(0, help="Default proxied requests per user per UTC day (0 = unlimited).").tag(config=True)
    user_tokens_per_day = Int(0, help="Default provider tokens per user per UTC day (0 = unlimited).").tag(config=True)

    allow_direct_access = Bool(True, help="Let a user's own server fetch that user's PERSONAL values (direct mode, "
                                          "keyvault.get). Shared keys are never returned, whatever this says.").tag(config=True)
    require_env_master_key = Bool(True, help="Refuse to start unless KEYVAULT_MASTER_KEY is in the environment "
                                             "(the service must not fall back to a key file next to its DB).").tag(config=True)
    token_cache_seconds = Float(20.0, help="How long a JupyterHub token's owner is cached by each replica (JupyterHub's "
                                "own default is 5 minutes): a revoked token or deleted user keeps access at most this "
                                "long.").tag(config=True)
    invalidation_interval = Float(0.25, help="Seconds between reads of the change generation: an admin change made "
                                  "on one replica reaches the caches of the others within this (plus one "
                                  "query).").tag(config=True)
    shutdown_timeout = Float(30.0, help="On SIGTERM, seconds to let requests in flight (streams) finish before "
                             "exiting; new requests get 503 meanwhile.").tag(config=True)
    groups_cache_seconds = Float(60.0, help="How long a user's groups and admin flag are cached (one hub API call per "
                                 "user per period).").tag(config=True)
    freeze_startup_heap = Bool(True, help="Once started, move every object the service holds to the garbage "
                               "collector's permanent generation (gc.freeze), so full collections of the startup "
                               "heap do not stall requests and streams (see c.KeyVault.freeze_startup_heap)."
                               ).tag(config=True)
    resolve_cache_seconds = Float(5.0, help="How long a decrypted key is reused by the proxy.").tag(config=True)
    policy_cache_seconds = Float(5.0, help="How long shared keys, grants and limits are cached (admin changes made "
                                           "through this service apply at once).").tag(config=True)
    flush_interval = Float(1.0, help="Seconds between writes of token counts and use-audit events (a crash loses at "
                           "most this much of them; request counts are written before each request).").tag(config=True)
    proxy_read_timeout = Float(600.0, help="Seconds the proxy waits for the next upstream bytes.").tag(config=True)
    proxy_max_body_size = Int(512 * 1024 * 1024, help="Largest request body the proxy relays, in bytes (413 with a "
                              "JSON error above it, before any body is read when Content-Length says so). Bodies "
                              "stream upstream as they arrive; this bounds traffic, not memory.").tag(config=True)
    test_timeout = Float(10.0, help="Seconds to wait for a provider's test request.").tag(config=True)
    max_value_bytes = Int(16 * 1024, help="Largest credential value accepted, in bytes.").tag(config=True)
    provider_base_urls = List(Unicode(), help="Per-provider base URLs as 'provider=url' (e.g. openai=https://gw/v1).").tag(config=True)
    # -- credential lifetimes (docs/lifetimes.md)
    session_timeout = Float(180.0, help="Seconds without a heartbeat from a user's server after which that user's "
                            "session-only credentials end (their server stopped or crashed). Servers beat every "
                            "c.KeyVault.expiry_check_seconds (60 s by default) and end them at once on a clean stop."
                            ).tag(config=True)
    expiry_check_seconds = Float(60.0, help="How often expired credentials are destroyed and silent sessions "
                                 "ended.").tag(config=True)
    shared_key_max_lifetime_days = Float(0.0, help="Longest lifetime of a shared key, in days (0 = no limit): a "
                                         "shared key stored without an expiry gets one this far ahead, and a later "
                                         "expiry is refused.").tag(config=True)

    aliases = {"db-url": "KeyVaultHubService.db_url", "data-dir": "KeyVaultHubService.data_dir",
               "ip": "KeyVaultHubService.ip",
               "log-level": "Application.log_level"}

    def initialize(self, argv=None):
        super().initialize(argv)
        env = dict(os.environ)
        try:
            has_key = bool(env_secret(env, ENV_MASTER_KEY))
        except MasterKeyError as exc:
            self.exit(str(exc))
        if self.require_env_master_key and not has_key:
            self.exit("KEYVAULT_MASTER_KEY_FILE (a 0600 file) or KEYVAULT_MASTER_KEY is not set: give the service "
                      "its master key (keyvault_service_config(master_key_file=...)); see docs/jupyterhub.md")
        self.scrubber = Scrubber()
        install_log_filter(self.scrubber, [self.log, "tornado.access", "tornado.application", "jupyter_keyvault"])
        self._base_urls: dict[str, str] = {}
        for entry in self.provider_base_urls:
            pid, _, url = entry.partition("=")
            self._base_urls[pid.strip()] = providers.validate_base_url(url.strip())
        try:
            # The service's own tables first: a newer schema is refused before the vault touches anything.
            self.store = HubStore(self.db_url)
            self.vault = self._open_vault(env)
        except VaultError as exc:
            self.exit(f"jupyter-keyvault hub service: {exc}")
        # Nothing this process starts may inherit the master key.
        envguard.remove_secret_env(os.environ, DEFAULT_SECRET_ENV_PATTERNS, set(), ["JUPYTERHUB_API_TOKEN"])
        self.counters = Counters(self.store)
        self.ledger = UsageLedger(self.store, self.counters, self._append_audit_batch)
        self.in_flight = InFlight()
        self.watcher: ChangeWatcher | None = None
        # Caches below are valid only in the epoch they were loaded in; any change (here, or seen
        # in the database's change generation) starts a new epoch.
        self._epoch = 0
        self._policy: dict = {}
        self._identity_cache: dict[str, tuple[float, dict]] = {}
        self._identity_lookups: dict[str, asyncio.Future] = {}
        self._resolved: dict[tuple[str, str], tuple[float, object, int]] = {}
        self._http = None
        self._flushing = False
        self._heartbeats: dict[str, float] = {}  # user -> time.monotonic() of their server's last heartbeat

    def _open_vault(self, env) -> LocalVault:
        from ..store.sql import SQLBackend

        return LocalVault(SQLBackend(self.db_url), base_url_for=self.base_url_for, test_timeout=self.test_timeout,
                          env=env, preferred_source="env", use_keyring=False, max_value_bytes=self.max_value_bytes,
                          on_value=lambda name, value: self.scrubber.add_known(value, name))

    # -- identity
    async def identity(self, hub_auth, username: str) -> dict:
        """{'name', 'groups', 'admin'} of a hub user, asked of the hub with the service's own token.
        Requests of one user arriving during a lookup share it (one hub call, not one per request)."""
        hit = self._identity_cache.get(username)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        pending = self._identity_lookups.get(username)
        if pending is None:
            pending = self._identity_lookups[username] = asyncio.ensure_future(self._lookup_identity(hub_auth, username))
            pending.add_done_callback(lambda _: self._identity_lookups.pop(username, None))
        try:
            return await asyncio.shield(pending)
        except (HTTPClientError, OSError, asyncio.TimeoutError):
            raise web.HTTPError(503, "JupyterHub's API did not answer the group lookup; retry shortly") from None

    async def _lookup_identity(self, hub_auth, username: str) -> dict:
        now = time.monotonic()
        req = HTTPRequest(f"{hub_auth.api_url.rstrip('/')}/users/{quote(username, safe='')}", headers={
            "Authorization": f"token {hub_auth.api_token}"}, request_timeout=15)
        resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        if resp.code == 599:  # no answer (timeout, refused): not "this user has no groups"
            raise resp.error or HTTPClientError(599)
        if resp.code == 200:
            model = json.loads(resp.body)
            ident = {"name": username, "groups": sorted(model.get("groups") or []), "admin": bool(model.get("admin"))}
        else:
            self.log.warning("keyvault: could not read %s's groups from the hub (%s); the service needs the "
                             "read:users:groups and read:users:name scopes", username, resp.code)
            ident = {"name": username, "groups": [], "admin": False}
        ident["is_keyvault_admin"] = (
            (self.hub_admins_are_admins and ident["admin"]) or username in self.admin_users
            or bool(set(ident["groups"]) & set(self.admin_groups)))
        self._identity_cache[username] = (now + self.groups_cache_seconds, ident)
        return ident

    # -- policy (shared keys, grants, limits): cached briefly, dropped at once by any admin change here
    def policy_changed(self) -> None:
        """Drop every cached policy and decrypted key (a change here, or one another replica made)."""
        self._epoch += 1
        self._policy.clear()
        self._resolved.clear()

    async def changed(self, owner: str, name: str) -> None:
        """After a credential write: drop it here, and tell the other replicas (before answering)."""
        self.invalidate(owner, name)
        with http_errors():
            await asyncio.to_thread(self.store.bump)

    def _cached(self, key, load):
        now = time.monotonic()
        hit = self._policy.get(key)
        if hit and hit[0] > now and hit[2] == self._epoch:
            return hit[1]
        epoch = self._epoch  # read before loading: a change during the load makes the entry stale at once
        value = load()
        self._policy[key] = (now + self.policy_cache_seconds, value, epoch)
        return value

    def shared_keys(self) -> dict:
        return self._cached(("shared",), lambda: {i.name: i for i in self.vault.list(SHARED_OWNER, include_env=False)})

    def granted(self, username: str, groups: list[str]) -> list[str]:
        return self._cached(("granted", username, tuple(groups)), lambda: self.store.granted_to(username, groups))

    def limits_of(self, kind: str, subject: str):
        return self._cached(("limits", kind, subject), lambda: self.store.get_limits(kind, subject))

    # -- credentials chosen for a proxied request
    def personal_kind(self, username: str, name: str) -> tuple[str | None, str] | None:
        """(provider, type) of the user's own credential `name`, or None when they have none."""
        owner = personal_owner(username)
        hit = self._resolved.get((owner, name))
        if hit and hit[0] > time.monotonic() and hit[2] == self._epoch:
            return hit[1].provider, hit[1].type
        rec = self.vault.lookup_record(owner, name)  # session-only values too
        return (rec.provider, rec.type) if rec is not None else None

    def choose_credential(self, username: str, groups: list[str], provider: providers.Provider, name: str):
        """(source, owner, name) of the key to use. Precedence: the user's own key of that name; a shared key of
        that name granted to them; when the name is the provider's default, any granted shared key of that
        provider (first by name)."""
        personal = self.personal_kind(username, name)
        if personal is not None:
            refusal = providers.injection_refusal(provider, name, *personal)
            if refusal:
                raise AccessDenied(refusal)
            return "personal", personal_owner(username), name
        granted = set(self.granted(username, groups))
        shared = {n: i for n, i in self.shared_keys().items() if n in granted}
        if name in shared and providers.injection_refusal(provider, name, shared[name].provider,
                                                          shared[name].type) is None:
            return "shared", SHARED_OWNER, name
        if name == provider.env_var:
            for sname in sorted(shared):
                if shared[sname].provider == provider.id:
                    return "shared", SHARED_OWNER, sname
        return None

    def resolve(self, owner: str, name: str, actor: str):
        key = (owner, name)
        hit = self._resolved.get(key)
        now = time.monotonic()
        if hit and hit[0] > now and hit[2] == self._epoch and not (
                hit[1].expires_at is not None and hit[1].expires_at <= time.time()):
            return hit[1]
        epoch = self._epoch
        resolved = self.vault.resolve(owner, name, actor=actor, purpose="proxy")  # each use is audited by the proxy
        self._resolved[key] = (now + self.resolve_cache_seconds, resolved, epoch)
        return resolved

    def invalidate(self, owner: str, name: str) -> None:
        self._resolved.pop((owner, name), None)
        if owner == SHARED_OWNER:
            self.policy_changed()

    def admit(self, username: str, groups: list[str], provider: providers.Provider, name: str):
        """Everything a proxied request needs before going upstream, in one call off the event loop:
        choose the key, enforce limits, count the request, audit the use, decrypt (cached)."""
        try:
            choice = self.choose_credential(username, groups, provider, name)
        except AccessDenied as exc:
            self.ledger.audit(personal_owner(username), "use", name, "denied", actor=username,
                              detail=f"route={provider.id}: {exc}")
            raise
        if choice is None:
            self.ledger.audit(personal_owner(username), "use", name, "denied", actor=username,
                              detail=f"provider={provider.id}: no personal key and no shared key granted")
            return None, None
        source, owner, credential = choice
        audit_owner = SHARED_OWNER if source == "shared" else personal_owner(username)
        try:
            self.check_limits(username, source, credential)
        except QuotaExceeded as exc:
            self.ledger.audit(audit_owner, "use", credential, "refused", actor=username, detail=str(exc))
            raise
        resolved = self.resolve(owner, credential, username)
        self.ledger.audit(audit_owner, "use", credential, "ok", actor=username, detail=f"source={source}")
        return choice, resolved

    # -- limits
    def user_limits(self, username: str) -> Limits:
        return (self.limits_of("user", username) or self.limits_of("user", "*")
                or Limits(self.user_rate_per_minute or None, self.user_requests_per_day or None,
                          self.user_tokens_per_day or None))

    def limit_subjects(self, username: str, source: str, credential: str) -> list[Subject]:
        """Whose limits a use counts against: the user's, and the shared key's when one is used."""
        user_limits = self.user_limits(username)
        subjects = [Subject("user", "user", username, user_limits,
                            self.ledger.unflushed_tokens("user", username) if user_limits.tokens_per_day else 0)]
        if source == "shared":
            shared_limits = self.limits_of("shared", credential) or Limits()
            subjects.append(Subject("shared key", "shared", credential, shared_limits,
                                    self.ledger.unflushed_tokens("shared", credential)
                                    if shared_limits.tokens_per_day else 0))
        return subjects

    def check_limits(self, username: str, source: str, credential: str) -> None:
        """Raise QuotaExceeded (429) if this user, or the shared key, is over a limit; else count the
        request in the database (committed before the request goes upstream)."""
        self.counters.admit(self.limit_subjects(username, source, credential), (username, source, credential))

    def spend_session_tokens(self, username: str, source: str, credential: str, tokens: int) -> QuotaExceeded | None:
        """Tokens an admitted session (Realtime) reported: counted, then the reason it may not go on
        (the daily token quota used up, audited as a refused use), or None."""
        self.ledger.add(username, source, credential, tokens=tokens)
        refusal = self.counters.token_refusal(self.limit_subjects(username, source, credential))
        if refusal is not None:
            owner = SHARED_OWNER if source == "shared" else personal_owner(username)
            self.ledger.audit(owner, "use", credential, "refused", actor=username, detail=f"realtime session closed: {refusal}")
        return refusal

    def base_url_for(self, provider: providers.Provider) -> str:
        # Only configuration decides where keys are sent (not the service's environment).
        return providers.effective_base_url(provider, self._base_urls, {})

    async def http_session(self):
        if self._http is None or self._http.closed:
            self._http = upstream_session(self.proxy_read_timeout)
        return self._http

    def _append_audit_batch(self, events) -> None:
        backend = self.vault.backend
        if hasattr(backend, "_tx") and hasattr(backend, "_insert_audit"):  # SQLBackend: one executemany
            from ..store.sql import _INSERT_AUDIT

            with backend._tx() as conn:
                conn.execute(_INSERT_AUDIT, [
                    {"at": e.at, "owner": e.owner, "actor": e.actor, "action": e.action, "target": e.target,
                     "outcome": e.outcome, "detail": e.detail} for e in events])
        else:
            for event in events:
                backend.append_audit(event)

    def flush_soon(self):
        if not self._flushing:
            self._flushing = True
            fut = asyncio.ensure_future(asyncio.to_thread(self._flush_logged))
            fut.add_done_callback(lambda _: setattr(self, "_flushing", False))

    def _flush_logged(self):
        try:
            self.ledger.flush()
        except Exception:  # a database outage must not stop the flusher; the next tick retries
            self.log.exception("keyvault: writing usage counters and audit events failed")

    async def flush(self):
        await asyncio.to_thread(self.ledger.flush)

    # -- credential lifetimes
    def heartbeat(self, username: str) -> None:
        """The user's server runs: their session-only credentials live on."""
        self._heartbeats[username] = time.monotonic()

    def end_session(self, username: str, reason: str) -> list[str]:
        self._heartbeats.pop(username, None)
        ended = self.vault.end_session(personal_owner(username), actor=username, reason=reason)
        for name in ended:
            self.invalidate(personal_owner(username), name)
        return ended

    def lifetime_tick(self) -> None:
        """Blocking (run in a thread): destroy expired values, end the sessions of silent servers."""
        for owner, name in self.vault.purge_expired():
            self.invalidate(owner, name)
        cutoff = time.monotonic() - self.session_timeout
        for username in [u for u, at in list(self._heartbeats.items()) if at < cutoff]:
            ended = self.end_session(username, reason=f"no heartbeat from the server for {self.session_timeout:g} s")
            if ended:
                self.log.info("keyvault: ended %d session-only credential(s) of %s (server silent)", len(ended),
                              username)

    def lifetime_soon(self) -> None:
        fut = asyncio.ensure_future(asyncio.to_thread(self._lifetime_logged))
        fut.add_done_callback(lambda _: None)

    def _lifetime_logged(self) -> None:
        try:
            self.lifetime_tick()
        except Exception:  # a database outage must not stop the task; the next tick retries
            self.log.exception("keyvault: the lifetime check failed")

    def shared_expiry(self, requested: float | None) -> float | None:
        """The expiry a shared key gets under shared_key_max_lifetime_days (InvalidInput beyond it)."""
        from ..store import InvalidInput

        if not self.shared_key_max_lifetime_days:
            return requested
        latest = time.time() + self.shared_key_max_lifetime_days * 86400
        if requested is None:
            return latest
        if requested > latest + 60:
            raise InvalidInput(f"shared keys may live at most {self.shared_key_max_lifetime_days:g} days "
                               "(shared_key_max_lifetime_days); give an earlier expiry")
        return requested

    def audit(self, owner: str, action: str, target: str | None, outcome: str = "ok", *, actor: str,
              detail: str | None = None) -> None:
        self.vault.audit(owner, action, target, outcome, actor=actor, detail=detail)

    # -- web app
    def make_app(self) -> web.Application:
        from jupyterhub.services.auth import HubAuth, HubOAuth

        from .apihandlers import make_handlers

        # API: JupyterHub tokens only (no cookies, so no CSRF); a token's owner is cached token_cache_seconds.
        hub_auth = HubAuth(parent=self, cache_max_age=int(max(0, self.token_cache_seconds)))
        hub_oauth = HubOAuth(parent=self, cache_max_age=60)  # the admin page in a browser
        return web.Application(
            make_handlers(self.service_prefix),
            keyvault=self, hub_auth=hub_auth, hub_oauth=hub_oauth, cookie_secret=os.urandom(32),
            login_url=hub_oauth.login_url, log_function=self._log_request,
        )

    def _log_request(self, handler):
        # Paths only: query strings could carry anything a client put there.
        status = handler.get_status()
        log = self.log.info if status < 400 else self.log.warning
        log("%s %s %s %.1fms", status, handler.request.method, handler.request.path,
            1000 * handler.request.request_time())

    def start(self):
        url = urlsplit(self.service_url)
        app = self.make_app()
        server = app.listen(url.port or 80, address=self.ip or url.hostname or "127.0.0.1", xheaders=True)
        status = self.vault.status()
        self.log.info("jupyter-keyvault hub service %s on %s%s (db %s, master key from %s)", __version__,
                      self.service_url, self.service_prefix, urlsplit(self.db_url).scheme,
                      status["protection"]["source"])
        self.watcher = ChangeWatcher(self.store, self.policy_changed, self.invalidation_interval)
        self.watcher.start()
        loop = ioloop.IOLoop.current()
        flusher = ioloop.PeriodicCallback(self.flush_soon, self.flush_interval * 1000)
        flusher.start()
        lifetimes = ioloop.PeriodicCallback(self.lifetime_soon, self.expiry_check_seconds * 1000)
        lifetimes.start()

        async def shutdown():
            # Graceful: not ready, no new connections, new requests on open ones get 503, streams finish.
            if self.in_flight.draining:
                return
            self.in_flight.draining = True
            server.stop()
            deadline = time.monotonic() + self.shutdown_timeout
            while self.in_flight.count > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.in_flight.count:
                self.log.warning("keyvault: %d request(s) still in flight after %g s; exiting", self.in_flight.count,
                                 self.shutdown_timeout)
            loop.stop()

        def stop(*_):
            loop.add_callback_from_signal(lambda: asyncio.ensure_future(shutdown()))

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.freeze_startup_heap:
            loop.add_callback(freeze_startup_heap, self.log, "c.KeyVaultHubService.freeze_startup_heap")
        loop.start()
        flusher.stop()
        lifetimes.stop()
        self.watcher.stop()
        self._flush_logged()
        self.store.close()
        self.vault.close()


def main(argv=None):
    app = KeyVaultHubService.instance()
    app.initialize(argv)
    app.start()
