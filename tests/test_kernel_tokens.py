"""Kernel-bound tokens (what `keyvault.env` exports in proxy mode) and the new provider table rows,
as units: an injected clock for expiry, no server."""

from __future__ import annotations

import pytest

from jupyter_keyvault import providers
from jupyter_keyvault.store import InvalidInput, NotFound
from jupyter_keyvault.store.tokens import MAX_TOKENS_PER_KERNEL, KernelTokens, TokenRefused, TokenScopeError


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def tokens(clock):
    return KernelTokens(600, clock=clock)


ALIVE = {"k1", "k2"}.__contains__


def test_given_an_issued_token_when_verified_then_it_names_its_kernel_and_only_credential(tokens):
    token, info = tokens.issue("k1", "OPENAI_API_KEY")
    assert token.startswith("kvt1_") and tokens.holds(token)
    checked = tokens.verify(token, None, ALIVE)
    assert checked.kernel_id == "k1" and checked.credentials == ["OPENAI_API_KEY"] and checked.id == info.id
    assert tokens.verify(token, "OPENAI_API_KEY", ALIVE).id == info.id
    with pytest.raises(TokenScopeError):
        tokens.verify(token, "OTHER_KEY", ALIVE)


def test_given_a_token_when_its_lifetime_passes_without_renewal_then_it_is_refused(tokens, clock):
    token, info = tokens.issue("k1", "OPENAI_API_KEY")
    clock.now += 500
    tokens.renew("k1", info.id)  # renewed: 600 s from now
    clock.now += 500
    assert tokens.verify(token, None, ALIVE)
    clock.now += 101
    with pytest.raises(TokenRefused):
        tokens.verify(token, None, ALIVE)
    with pytest.raises(NotFound):
        tokens.renew("k1", info.id)  # too late to renew


def test_given_a_token_when_its_kernel_stops_or_it_is_revoked_then_it_is_refused(tokens):
    token, info = tokens.issue("k1", "OPENAI_API_KEY")
    with pytest.raises(TokenRefused):
        tokens.verify(token, None, {"k2"}.__contains__)  # k1 is gone
    token, info = tokens.issue("k1", "OPENAI_API_KEY")
    tokens.revoke("k1", info.id)
    with pytest.raises(TokenRefused):
        tokens.verify(token, None, ALIVE)


def test_given_another_kernels_token_when_renewing_or_revoking_then_not_found_and_nothing_changes(tokens):
    token, info = tokens.issue("k1", "OPENAI_API_KEY")
    for action in (tokens.renew, tokens.revoke):
        with pytest.raises(NotFound):
            action("k2", info.id)
    assert tokens.verify(token, None, ALIVE)


def test_given_forged_or_malformed_tokens_when_verified_then_one_refusal_for_all(tokens):
    token, _ = tokens.issue("k1", "OPENAI_API_KEY")
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    for bad in (forged, "kvt1_x", "", "kvt1_" + "0" * 32 + "_" + "0" * 64):
        with pytest.raises(TokenRefused) as exc:
            tokens.verify(bad, None, ALIVE)
        assert "refused" in str(exc.value)


def test_given_many_tokens_for_one_kernel_when_issuing_then_the_oldest_are_dropped(tokens, clock):
    issued = []
    for _ in range(MAX_TOKENS_PER_KERNEL + 5):
        clock.now += 1
        issued.append(tokens.issue("k1", "OPENAI_API_KEY")[0])
    assert not tokens.holds(issued[0]) and tokens.holds(issued[-1])
    assert sum(tokens.holds(t) for t in issued) == MAX_TOKENS_PER_KERNEL


def test_given_a_lifetime_outside_a_minute_to_an_hour_when_configured_then_refused():
    for lifetime in (10, 7200):
        with pytest.raises(ValueError):
            KernelTokens(lifetime)


# -- the provider table rows added for issue 15


@pytest.mark.parametrize("pid", ["azure_openai", "mistral", "deepseek", "xai", "together", "fireworks", "cohere"])
def test_given_each_new_provider_when_listed_then_it_has_a_name_an_env_var_a_test_request_and_an_auth_header(pid):
    provider = providers.get_provider(pid)
    assert provider.env_var and provider.test_path and provider.key_hint
    headers = provider.auth_headers("secret-value")
    assert "secret-value" in " ".join(headers.values())
    assert providers.provider_for_env_var(provider.env_var) is provider
    assert provider.to_json()["id"] == pid


def test_given_azure_when_injecting_then_the_key_goes_in_api_key_and_the_endpoint_is_per_credential():
    azure = providers.get_provider("azure_openai")
    assert azure.auth_headers("k") == {"api-key": "k"} and azure.per_credential_base_url
    with pytest.raises(InvalidInput):
        providers.effective_base_url(azure, {}, {})  # no endpoint configured: a clear error


@pytest.mark.parametrize(("pid", "good", "foreign"), [
    ("deepseek", "sk-" + "a" * 32, "sk-ant-api03-x"),
    ("xai", "xai-" + "a" * 40, "gsk_x"),
    ("fireworks", "fw_" + "a" * 24, "hf_x"),
    ("mistral", "A" * 32, "sk-proj-x"),
    ("azure_openai", "0123456789abcdef" * 2, "AIzaSyX"),
])
def test_given_key_formats_when_stored_then_own_keys_pass_and_other_providers_keys_are_refused(pid, good, foreign):
    assert providers.check_key_format(pid, good) == []
    with pytest.raises(InvalidInput):
        providers.check_key_format(pid, foreign)
    assert providers.check_key_format("openai", "sk-" + "b" * 40) == []  # sk- is still OpenAI's by default
