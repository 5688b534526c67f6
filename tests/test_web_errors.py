"""The one error-to-HTTP mapping (web/errors.py): every deliberate store, OAuth and storage error
becomes a 4xx or a specific 5xx with its safe message, never a 500."""

from __future__ import annotations

import pytest
from tornado import web

from jupyter_keyvault.oauth import NeedsReauth, OAuthError
from jupyter_keyvault.store import DecryptionError, InvalidInput, NoCredential, NotFound, VaultError, WrongMasterKey
from jupyter_keyvault.store.errors import (
    AccessDenied,
    BadUpstream,
    NotAvailable,
    RateLimited,
    VaultDamaged,
    VaultDiskFull,
    VaultLocked,
    VaultPermissionDenied,
    VaultReadOnly,
)
from jupyter_keyvault.web.errors import TooManyRequests, http_errors


@pytest.mark.parametrize(("error", "status"), [
    (NotFound("no credential named X"), 404),
    (NoCredential("No API key configured for X"), 404),
    (InvalidInput("bad name"), 422),
    (AccessDenied("not from this notebook"), 403),
    (NotAvailable("not in hub mode"), 403),
    (DecryptionError("cannot decrypt X"), 409),
    (NeedsReauth("connect X again"), 401),
    (OAuthError("token endpoint failed"), 502),
    (BadUpstream("plain http refused"), 502),
    (VaultDiskFull("disk full writing /v/vault.db"), 507),
    (VaultReadOnly("read-only: /v/vault.db"), 503),
    (VaultPermissionDenied("permission denied: /v/vault.db"), 503),
    (VaultDamaged("/v/vault.db is not a vault"), 503),
    (VaultLocked("cannot open"), 503),
    (WrongMasterKey("wrong master key for /v/vault.db"), 503),
    (VaultError("anything else"), 503),
])
def test_given_a_deliberate_error_when_mapped_then_its_status_and_message_are_kept(error, status):
    with pytest.raises(web.HTTPError) as raised, http_errors():
        raise error
    assert raised.value.status_code == status
    assert raised.value.log_message == str(error)


def test_given_the_proxy_when_a_credential_is_missing_then_it_is_401_for_the_sdk():
    with pytest.raises(web.HTTPError) as raised, http_errors(missing=401):
        raise NoCredential("No API key configured for OPENAI_API_KEY")
    assert raised.value.status_code == 401


def test_given_a_rate_limit_when_mapped_then_429_carries_whole_seconds_to_wait():
    with pytest.raises(TooManyRequests) as raised, http_errors():
        raise RateLimited("too many failed token attempts", 2.2)
    assert raised.value.status_code == 429 and raised.value.retry_after == "3"
    assert raised.value.log_message == "too many failed token attempts; retry in 3 s"


def test_given_an_unexpected_error_when_mapped_then_it_is_not_swallowed():
    with pytest.raises(KeyError), http_errors():
        raise KeyError("a bug must surface as a bug, not as a made-up status")
