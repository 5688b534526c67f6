"""Liveness and readiness for orchestrators (Kubernetes probes, load balancers), and the count
of requests in flight that graceful shutdown waits for.

`{prefix}health/live`  200 while the event loop answers.
`{prefix}health/ready` 200 when the database answered the change watcher recently and the
                       replica is not shutting down; else 503 (take it out of the Service).
Both are public on purpose: they say nothing but "ok" or which of the two conditions failed,
and take no input.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tornado import web

if TYPE_CHECKING:
    from .service import KeyVaultHubService


class InFlight:
    """Requests being served (a stream counts until it ends or its client leaves)."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False

    def enter(self, handler: web.RequestHandler) -> None:
        if self.draining:
            handler.set_header("Connection", "close")
            raise web.HTTPError(503, "this keyvault replica is shutting down; retry (another replica answers)")
        self.count += 1
        handler._keyvault_in_flight = True  # type: ignore[attr-defined]

    def leave(self, handler: web.RequestHandler) -> None:
        if getattr(handler, "_keyvault_in_flight", False):
            handler._keyvault_in_flight = False  # type: ignore[attr-defined]
            self.count -= 1


class _Probe(web.RequestHandler):
    @property
    def kv(self) -> KeyVaultHubService:
        return self.settings["keyvault"]

    def check_xsrf_cookie(self):
        """GET only, no state: nothing to forge."""

    def compute_etag(self):
        return None

    def answer(self, status: int, state: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": state}))


class LiveHandler(_Probe):
    def get(self):
        self.answer(200, "ok")

    head = get


class ReadyHandler(_Probe):
    def get(self):
        if self.kv.in_flight.draining:
            return self.answer(503, "shutting down")
        watcher = self.kv.watcher
        if watcher is None or not watcher.healthy(max_age=max(3.0, 4 * watcher.interval)):
            return self.answer(503, "database unavailable")
        self.answer(200, "ok")

    head = get
