"""One mapping from the store's (and OAuth's) deliberate errors to HTTP statuses. Their
messages never hold a value, so they are safe to send."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

from tornado import web

from ..oauth import NeedsReauth, OAuthError
from ..ratelimit import RateLimiter
from ..store import DecryptionError, InvalidInput, NoCredential, NotFound, VaultError
from ..store.errors import AccessDenied, BadUpstream, CredentialExpired, NotAvailable, RateLimited, VaultDiskFull


class TooManyRequests(web.HTTPError):
    """A 429 that carries its Retry-After (send_error clears headers set before the raise)."""

    def __init__(self, message: str, retry_after: float):
        self.retry_after = RateLimiter.retry_after_header(retry_after)
        super().__init__(429, f"{message}; retry in {self.retry_after} s")


@contextmanager
def http_errors(*, missing: int = 404) -> Iterator[None]:
    """Raise web.HTTPError for a store error. `missing` is the status for an absent credential:
    404 for REST resources, 401 on the proxy (SDKs show it as an authentication problem)."""
    try:
        yield
    except NeedsReauth as exc:
        raise web.HTTPError(401, str(exc)) from None
    except (OAuthError, BadUpstream) as exc:
        raise web.HTTPError(502, str(exc)) from None
    except (NotFound, NoCredential) as exc:
        raise web.HTTPError(missing, str(exc)) from None
    except InvalidInput as exc:
        raise web.HTTPError(422, str(exc)) from None
    except (NotAvailable, AccessDenied, CredentialExpired) as exc:
        raise web.HTTPError(403, str(exc)) from None
    except RateLimited as exc:
        raise TooManyRequests(str(exc), exc.retry_after) from None
    except DecryptionError as exc:
        raise web.HTTPError(409, str(exc)) from None
    except VaultDiskFull as exc:
        raise web.HTTPError(507, str(exc)) from None
    except VaultError as exc:  # locked, read-only, damaged, wrong master key, service unreachable
        raise web.HTTPError(503, str(exc)) from None


def error_message(handler: web.RequestHandler, kwargs: dict) -> str:
    """The message of the HTTPError being rendered, else the status's reason (never a traceback)."""
    exc = kwargs.get("exc_info", (None, None, None))[1]
    if isinstance(exc, web.HTTPError) and exc.log_message:
        return exc.log_message
    return handler._reason


def provider_error_body(status: int, message: str) -> str:
    """Provider-shaped error, so SDKs show our message as they would the provider's own."""
    return json.dumps({"error": {"message": message, "type": "keyvault_error", "code": status}})


def set_retry_after(handler: web.RequestHandler, kwargs: dict) -> None:
    """Call from write_error: a TooManyRequests being rendered gets its Retry-After header."""
    exc = kwargs.get("exc_info", (None, None, None))[1]
    if isinstance(exc, TooManyRequests):
        handler.set_header("Retry-After", exc.retry_after)


class RetryAfterMixin:
    """For handlers that render errors with their base class's write_error."""

    def write_error(self, status_code: int, **kwargs) -> None:
        set_retry_after(self, kwargs)  # type: ignore[arg-type]
        super().write_error(status_code, **kwargs)  # type: ignore[misc]
