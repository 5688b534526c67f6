"""A real OAuth2 authorization server on 127.0.0.1, for tests, built on authlib's server side.

authlib does the grant logic (authorization code with PKCE S256 required, refresh tokens
rotated on every use, RFC 7009 revocation, client authentication); this module is only the
tornado glue, an in-memory store, an auto-approving consent page, and a small protected
API under /api/ that checks the bearer access token. It runs on its own loop in a daemon
thread, like FakeUpstream, and counts what tests need to see (refresh calls, API calls).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import AuthorizationCodeGrant, ClientMixin, RefreshTokenGrant, TokenMixin
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge

HOST = "127.0.0.1"
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scopes: tuple[str, ...] = ("read", "write")

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        return " ".join(s for s in (scope or "").split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return hmac.compare_digest(self.client_secret.encode(), (client_secret or "").encode())

    def check_endpoint_auth_method(self, method, endpoint):
        return method in AUTH_METHODS

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


@dataclass
class Token(TokenMixin):
    client_id: str
    user: str
    scope: str
    access_token: str
    refresh_token: str | None
    expires_in: int
    issued_at: float = field(default_factory=time.time)
    revoked: bool = False

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self):
        return self.revoked

    def get_user(self):
        return self.user

    def get_client(self):
        return None


class _Request(OAuth2Request):
    """A tornado request as authlib sees it: query + form arguments as the payload."""

    def __init__(self, handler: tornado.web.RequestHandler):
        req = handler.request
        super().__init__(req.method, req.full_url(), headers=req.headers)
        self._args = {k: v[-1].decode() for k, v in req.query_arguments.items()}
        self._form = {k: v[-1].decode() for k, v in req.body_arguments.items()}
        self.payload = BasicOAuth2Payload({**self._args, **self._form})
        # Repeated parameters must stay visible so authlib can refuse them.
        for k, v in {**req.query_arguments, **req.body_arguments}.items():
            self.payload._datalist[k] = [x.decode() for x in v]

    @property
    def args(self):
        return self._args

    @property
    def form(self):
        return self._form


class _Server(AuthorizationServer):
    def __init__(self, owner: OAuthTestServer):
        super().__init__()
        self.owner = owner
        self.register_token_generator("default", BearerTokenGenerator(
            lambda **kw: "at-" + secrets.token_urlsafe(24),
            lambda **kw: "rt-" + secrets.token_urlsafe(24),
            lambda client, grant_type: owner.access_token_ttl,
        ))

    def query_client(self, client_id):
        return self.owner.clients.get(client_id)

    def save_token(self, token, request):
        item = Token(request.client.get_client_id(), request.user, token.get("scope", ""), token["access_token"],
                     token.get("refresh_token"), int(token["expires_in"]))
        with self.owner.lock:
            self.owner.tokens.append(item)

    def create_oauth2_request(self, request):
        return request

    def create_json_request(self, request):
        raise NotImplementedError

    def handle_response(self, status, body, headers):
        return status, body, headers

    def send_signal(self, name, *args, **kwargs):
        pass


def _grants(owner: OAuthTestServer):
    class CodeGrant(AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

        def save_authorization_code(self, code, request):
            data = request.payload.data
            owner.codes[code] = Code(code, request.client.get_client_id(), data.get("redirect_uri"), request.scope,
                                     request.user, data.get("code_challenge"), data.get("code_challenge_method"))

        def query_authorization_code(self, code, client):
            item = owner.codes.get(code)
            return item if item and item.client_id == client.get_client_id() else None

        def delete_authorization_code(self, authorization_code):
            owner.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code):
            return authorization_code.user

    class RefreshGrant(RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
        INCLUDE_NEW_REFRESH_TOKEN = True  # rotate: every refresh token works once

        def authenticate_refresh_token(self, refresh_token):
            item = owner.find(refresh_token=refresh_token)
            return item if item is not None and not item.revoked else None

        def authenticate_user(self, credential):
            return credential.user

        def revoke_old_credential(self, credential):
            credential.revoked = True

    class Revocation(RevocationEndpoint):
        CLIENT_AUTH_METHODS = AUTH_METHODS

        def query_token(self, token_string, token_type_hint):
            return owner.find(access_token=token_string) or owner.find(refresh_token=token_string)

        def revoke_token(self, token, request):
            token.revoked = True

    return CodeGrant, RefreshGrant, Revocation


class _Handler(tornado.web.RequestHandler):
    def initialize(self, owner: OAuthTestServer) -> None:
        self.owner = owner

    def check_xsrf_cookie(self) -> None:
        pass

    def reply(self, result) -> None:
        status, body, headers = result
        self.set_status(status)
        for name, value in headers:
            self.set_header(name, value)
        if body:
            self.write(json.dumps(body) if isinstance(body, dict) else body)


class _AuthorizeHandler(_Handler):
    """The consent page: approves at once as `owner.user` (or denies when told to)."""

    def get(self) -> None:
        server, req = self.owner.server, _Request(self)
        self.owner.authorize_requests.append(dict(req.args))
        try:
            grant = server.get_consent_grant(req, end_user=self.owner.user)
        except OAuth2Error as exc:
            self.set_status(400)
            self.write({"error": exc.error, "error_description": exc.description})
            return
        if self.owner.deny_consent:
            self.reply(server.create_authorization_response(req, grant_user=None, grant=grant))
            return
        self.reply(server.create_authorization_response(req, grant_user=self.owner.user, grant=grant))


class _TokenHandler(_Handler):
    async def post(self) -> None:
        req = _Request(self)
        grant_type = req.payload.grant_type
        with self.owner.lock:
            self.owner.token_requests.append(grant_type)
            if grant_type == "refresh_token":
                self.owner.refresh_calls += 1
        if grant_type == "refresh_token" and self.owner.refresh_delay:
            await asyncio.sleep(self.owner.refresh_delay)  # widen the window concurrent callers could race in
        self.reply(self.owner.server.create_token_response(req))


class _RevokeHandler(_Handler):
    def post(self) -> None:
        with self.owner.lock:
            self.owner.revoke_requests.append(dict(_Request(self).form))
        self.reply(self.owner.server.create_endpoint_response("revocation", _Request(self)))


class _ApiHandler(_Handler):
    """The protected resource: echoes who called, if the bearer token is valid."""

    def _serve(self, path: str) -> None:
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        item = self.owner.find(access_token=value) if scheme.lower() == "bearer" else None
        with self.owner.lock:
            self.owner.api_requests.append({"path": path, "method": self.request.method,
                                            "headers": dict(self.request.headers.get_all()),
                                            "query": self.request.query, "body": self.request.body})
        if item is None or item.revoked or item.is_expired():
            self.set_status(401)
            self.write({"error": "invalid_token"})
            return
        self.write({"ok": True, "user": item.user, "path": path, "scope": item.scope, "method": self.request.method})

    def get(self, path: str) -> None:
        self._serve(path)

    def post(self, path: str) -> None:
        self._serve(path)


class OAuthTestServer:
    """Start with `.start()`; register the client with `.add_client(...)`; stop with `.stop()`."""

    def __init__(self, *, access_token_ttl: int = 3600, user: str = "alice"):
        self.access_token_ttl = access_token_ttl
        self.user = user
        self.deny_consent = False
        self.refresh_delay = 0.0
        self.refresh_calls = 0
        self.lock = threading.Lock()
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, Code] = {}
        self.tokens: list[Token] = []
        self.token_requests: list[str] = []
        self.revoke_requests: list[dict] = []  # the form of each RFC 7009 revocation request
        self.authorize_requests: list[dict] = []
        self.api_requests: list[dict[str, Any]] = []
        self.server = _Server(self)
        code_grant, refresh_grant, revocation = _grants(self)
        self.server.register_grant(code_grant, [CodeChallenge(required=True)])
        self.server.register_grant(refresh_grant)
        self.server.register_endpoint(revocation)
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # -- data
    def add_client(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> Client:
        client = Client(client_id, client_secret, list(redirect_uris))
        self.clients[client_id] = client
        return client

    def find(self, *, access_token: str | None = None, refresh_token: str | None = None) -> Token | None:
        with self.lock:
            for item in self.tokens:
                if access_token and hmac.compare_digest(item.access_token, access_token):
                    return item
                if refresh_token and item.refresh_token and hmac.compare_digest(item.refresh_token, refresh_token):
                    return item
        return None

    def revoke_all(self) -> None:
        with self.lock:
            for item in self.tokens:
                item.revoked = True

    def expire_access_tokens(self) -> None:
        with self.lock:
            for item in self.tokens:
                item.issued_at -= item.expires_in + 1

    # -- addresses
    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._port}"

    def provider_config(self, client_id: str, **extra: Any) -> dict[str, Any]:
        return {"display_name": "Test AS", "authorize_url": self.url + "/authorize", "token_url": self.url + "/token",
                "revoke_url": self.url + "/revoke", "api_base_url": self.url + "/api", "client_id": client_id,
                "scopes": ["read", "write"], **extra}

    # -- lifecycle
    def start(self) -> OAuthTestServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve(ready)), name="OAuthTestServer",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("OAuthTestServer failed to start")
        return self

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        kwargs = {"owner": self}
        app = tornado.web.Application([
            (r"/authorize", _AuthorizeHandler, kwargs),
            (r"/token", _TokenHandler, kwargs),
            (r"/revoke", _RevokeHandler, kwargs),
            (r"/api/(.*)", _ApiHandler, kwargs),
        ], log_function=lambda handler: None)
        sockets = tornado.netutil.bind_sockets(0, address=HOST)
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        self._port = sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)
        self._thread = self._loop = None  # a second stop (a test's, then the fixture's) does nothing
