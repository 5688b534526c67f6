"""The one provider table, used by every layer: env-var names, key formats, base URLs,
the cheap test request and how auth is injected upstream."""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from .scrub import Scrubber
from .store.errors import InvalidInput


@dataclass(frozen=True)
class Provider:
    id: str
    label: str
    env_var: str | None  # conventional env-var name, and the default credential name
    base_url: str | None  # what the provider's SDK takes as base_url
    base_url_env: str | None  # the SDK's own env var for the base URL
    auth: str  # "bearer" | "x-api-key" | "api-key" (Azure) | "none"
    key_prefixes: tuple[str, ...] = ()
    key_hint: str = ""
    extra_headers: tuple[tuple[str, str], ...] = ()
    test_path: str = "models"  # GET base_url/test_path proves the key works
    proxy_prefix: str = "v1"  # the path the kernel's SDK puts after /keyvault/proxy/{id}/
    sdk: str = "openai"  # "openai" (OpenAI-compatible), "azure" (openai.AzureOpenAI) or "anthropic"
    needs_key: bool = True
    docs_url: str = ""
    aliases: tuple[str, ...] = field(default=())
    key_pattern: str = ""  # a full-match regex for keys without a prefix (a mismatch is only a warning)
    base_url_hint: str = ""  # for providers without a fixed base URL: what to configure, per credential

    @property
    def per_credential_base_url(self) -> bool:
        """No fixed base URL: each credential names its endpoint (metadata "base_url"), or the server's trait."""
        return self.base_url is None

    @property
    def default_headers(self) -> dict[str, str]:
        """Headers the provider's API needs, sent upstream only when the client sent none of that name."""
        return dict(self.extra_headers)

    def auth_headers(self, key: str | None) -> dict[str, str]:
        """The header(s) carrying `key` upstream (empty without a key)."""
        headers: dict[str, str] = {}
        if key and self.auth == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif key and self.auth == "x-api-key":
            headers["x-api-key"] = key
        elif key and self.auth == "api-key":
            headers["api-key"] = key
        return headers

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "label": self.label,
            "env_var": self.env_var,
            "key_hint": self.key_hint,
            "needs_key": self.needs_key,
            "sdk": self.sdk,
            "base_url_env": self.base_url_env,
            "base_url_hint": self.base_url_hint,
        }


PROVIDERS: dict[str, Provider] = {
    p.id: p
    for p in (
        Provider("openai", "OpenAI", "OPENAI_API_KEY", "https://api.openai.com/v1", "OPENAI_BASE_URL", "bearer",
                 ("sk-",), "starts with sk- (sk-proj-… for project keys)",
                 docs_url="https://platform.openai.com/api-keys"),
        Provider("anthropic", "Anthropic", "ANTHROPIC_API_KEY", "https://api.anthropic.com", "ANTHROPIC_BASE_URL",
                 "x-api-key", ("sk-ant-",), "starts with sk-ant-",
                 extra_headers=(("anthropic-version", "2023-06-01"),), test_path="v1/models", proxy_prefix="",
                 sdk="anthropic", docs_url="https://console.anthropic.com/settings/keys"),
        Provider("groq", "Groq", "GROQ_API_KEY", "https://api.groq.com/openai/v1", "GROQ_BASE_URL", "bearer",
                 ("gsk_",), "starts with gsk_"),
        Provider("openrouter", "OpenRouter", "OPENROUTER_API_KEY", "https://openrouter.ai/api/v1", "OPENROUTER_BASE_URL",
                 "bearer", ("sk-or-",), "starts with sk-or-v1-", test_path="key"),
        Provider("huggingface", "Hugging Face", "HF_TOKEN", "https://router.huggingface.co/v1", "HF_BASE_URL", "bearer",
                 ("hf_",), "starts with hf_", aliases=("HUGGINGFACE_API_KEY", "HUGGING_FACE_HUB_TOKEN")),
        Provider("gemini", "Google Gemini", "GEMINI_API_KEY", "https://generativelanguage.googleapis.com/v1beta/openai",
                 "GEMINI_BASE_URL", "bearer", ("AIza",), "starts with AIza", aliases=("GOOGLE_API_KEY",)),
        Provider("ollama", "Ollama (local)", None, "http://127.0.0.1:11434/v1", "OLLAMA_BASE_URL", "none",
                 needs_key=False),
        Provider("openai_compatible", "OpenAI-compatible (custom base URL)", "OPENAI_COMPATIBLE_API_KEY", None,
                 "OPENAI_COMPATIBLE_BASE_URL", "bearer", key_hint="any key your endpoint accepts",
                 base_url_hint="your endpoint's OpenAI-compatible base URL, e.g. https://host/v1"),
        # Azure: the key goes in `api-key`; each resource has its own endpoint (the credential's metadata
        # "base_url", e.g. https://NAME.openai.azure.com); paths are /openai/deployments/{deployment}/...
        # with an `api-version` query, which the proxy passes through.
        Provider("azure_openai", "Azure OpenAI", "AZURE_OPENAI_API_KEY", None, "AZURE_OPENAI_ENDPOINT", "api-key",
                 key_hint="32 hex characters (or the newer 84-character keys) from the resource's Keys page",
                 key_pattern=r"[0-9a-f]{32}|[A-Za-z0-9]{84}", test_path="openai/models?api-version=2024-10-21",
                 proxy_prefix="", sdk="azure", base_url_hint="the resource endpoint, https://NAME.openai.azure.com",
                 docs_url="https://learn.microsoft.com/azure/ai-services/openai/reference"),
        Provider("mistral", "Mistral", "MISTRAL_API_KEY", "https://api.mistral.ai/v1", "MISTRAL_BASE_URL", "bearer",
                 key_hint="32 letters and digits", key_pattern=r"[A-Za-z0-9]{32}",
                 docs_url="https://console.mistral.ai/api-keys"),
        Provider("deepseek", "DeepSeek", "DEEPSEEK_API_KEY", "https://api.deepseek.com/v1", "DEEPSEEK_BASE_URL",
                 "bearer", ("sk-",), "starts with sk-", docs_url="https://platform.deepseek.com/api_keys"),
        Provider("xai", "xAI", "XAI_API_KEY", "https://api.x.ai/v1", "XAI_BASE_URL", "bearer", ("xai-",),
                 "starts with xai-", docs_url="https://console.x.ai"),
        Provider("together", "Together AI", "TOGETHER_API_KEY", "https://api.together.xyz/v1", "TOGETHER_BASE_URL",
                 "bearer", ("tgp_",), "starts with tgp_v1_ (older keys: 64 hex characters)",
                 key_pattern=r"[0-9a-f]{64}", docs_url="https://api.together.ai/settings/api-keys"),
        Provider("fireworks", "Fireworks AI", "FIREWORKS_API_KEY", "https://api.fireworks.ai/inference/v1",
                 "FIREWORKS_BASE_URL", "bearer", ("fw_",), "starts with fw_",
                 docs_url="https://fireworks.ai/account/api-keys"),
        # Cohere through its OpenAI-compatible API (chat, embeddings) with the openai SDK.
        Provider("cohere", "Cohere", "COHERE_API_KEY", "https://api.cohere.com/compatibility/v1", "COHERE_BASE_URL",
                 "bearer", key_hint="40 letters and digits", key_pattern=r"[A-Za-z0-9]{40}",
                 aliases=("CO_API_KEY",), docs_url="https://dashboard.cohere.com/api-keys"),
    )
}

# Prefix → provider, longest first, to tell which provider a pasted key belongs to. A prefix two
# providers share (sk-: OpenAI and DeepSeek) names the first in the table; the other still accepts it.
_KEY_OWNERS = sorted(((pre, p.id) for p in PROVIDERS.values() for pre in p.key_prefixes), key=lambda t: -len(t[0]))


def get_provider(provider_id: str) -> Provider:
    try:
        return PROVIDERS[provider_id]
    except KeyError:
        raise InvalidInput(f"unknown provider {provider_id!r}; known: {', '.join(PROVIDERS)}") from None


INJECTABLE_TYPES = ("api_key", "custom")


def injection_refusal(provider: Provider, name: str, credential_provider: str | None,
                      credential_type: str = "api_key") -> str | None:
    """Why credential `name` may not be sent to `provider`'s API, or None when it may.

    A credential goes only to its own provider (an HF token never to the OpenAI base URL); one
    without a provider only under that provider's own variable name (OPENAI_API_KEY to openai);
    OAuth tokens, client secrets and access tokens never to a provider route."""
    if credential_type not in INJECTABLE_TYPES:
        return f"{name} is a {credential_type} credential, which is never sent to a provider's API"
    if credential_provider == provider.id:
        return None
    if credential_provider is None and (name == provider.env_var or name in provider.aliases):
        return None
    owner = PROVIDERS[credential_provider].label if credential_provider in PROVIDERS else "no provider"
    return (f"{name} is a credential for {owner}; it is sent only to its own provider's API, "
            f"not to {provider.label}")


def provider_for_env_var(name: str) -> Provider | None:
    for p in PROVIDERS.values():
        if name == p.env_var or name in p.aliases:
            return p
    return None


def credential_env_names() -> set[str]:
    """Env-var names that hold provider credentials (they win over stored values)."""
    names = set()
    for p in PROVIDERS.values():
        if p.env_var:
            names.add(p.env_var)
        names.update(p.aliases)
    return names


def detect_provider(value: str) -> str | None:
    for prefix, pid in _KEY_OWNERS:
        if value.startswith(prefix):
            return pid
    return None


def check_key_format(provider_id: str | None, value: str) -> list[str]:
    """Reject keys that clearly belong elsewhere; return warnings for odd shapes."""
    if provider_id is None:
        return []
    provider = get_provider(provider_id)
    stripped = value.strip()
    if provider.needs_key and re.search(r"\s", stripped):
        raise InvalidInput("value contains whitespace or a line break; API keys never do (pasted twice?)")
    if not provider.key_prefixes and not provider.key_pattern:
        return []
    own = max((len(pre) for pre in provider.key_prefixes if stripped.startswith(pre)), default=0)
    longest = next(((pre, pid) for pre, pid in _KEY_OWNERS if stripped.startswith(pre)), None)
    if longest is not None and longest[1] != provider.id and len(longest[0]) > own:
        other = PROVIDERS[longest[1]]
        raise InvalidInput(
            f"this key looks like it is for {other.label} ({other.key_hint}), not {provider.label}; "
            f"use provider {other.id!r}"
        )
    owner = longest[1] if longest else None
    if own or (provider.key_pattern and re.fullmatch(provider.key_pattern, stripped)):
        return []
    if owner is None:
        return [f"this does not look like an {provider.label} key ({provider.key_hint})"
                if provider.label[0] in "AEIOU" else f"this does not look like a {provider.label} key ({provider.key_hint})"]
    return []


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_base_url(url: str) -> str:
    """https anywhere; plain http only to a loopback host. No credentials or query in it."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("base URL is empty")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"base URL must be an http(s) URL: {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InvalidInput(f"plain http:// is refused except for loopback hosts: {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidInput("base URL must not contain credentials, a query or a fragment")
    return url


def effective_base_url(provider: Provider, overrides: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None) -> str:
    """Configured trait first, then the SDK's own env var, then the table's default."""
    url = (overrides or {}).get(provider.id)
    if not url and provider.base_url_env:
        url = (env or {}).get(provider.base_url_env)
    url = url or provider.base_url
    if not url:
        raise InvalidInput(
            f"provider {provider.id!r} has no base URL: set c.KeyVault.provider_base_urls[{provider.id!r}]"
            + (f" or {provider.base_url_env}" if provider.base_url_env else "")
        )
    return validate_base_url(url)


@dataclass(frozen=True)
class TestResult:
    ok: bool
    detail: str | None = None
    error: str | None = None
    status: int | None = None

    def to_json(self) -> dict:
        return {"ok": True, "detail": self.detail} if self.ok else {"ok": False, "error": self.error}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The key goes only to the configured base URL: never follow a redirect with it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"refused to follow a redirect ({code})", headers, fp)


def secret_safe_opener() -> urllib.request.OpenerDirector:
    """An opener for requests that carry a secret: no env proxies (they could see it), no redirects."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect(),
                                       urllib.request.HTTPSHandler(context=ssl.create_default_context()))


def run_key_test(provider: Provider, key: str | None, base_url: str, *, timeout: float = 10.0) -> TestResult:
    """Run the provider's cheap test request. Blocking: call it off the event loop."""
    redact = Scrubber()
    if key:
        redact.add_known(key, provider.env_var or "API_KEY")
    url = validate_base_url(base_url) + "/" + provider.test_path
    headers = {**provider.default_headers, **provider.auth_headers(key), "Accept": "application/json",
               "User-Agent": "jupyter-keyvault"}
    request = urllib.request.Request(url, method="GET", headers=headers)  # noqa: S310 - http(s) URLs only, checked by validate_base_url / the service URL
    try:
        with secret_safe_opener().open(request, timeout=timeout) as response:
            body = response.read(1_000_000)
            return TestResult(True, detail=redact.scrub(_describe_success(provider, body)), status=response.status)
    except urllib.error.HTTPError as exc:
        message = _error_message(exc.read(64_000) if exc.fp else b"") or exc.reason
        reason = "the provider rejected the key" if exc.code in (401, 403) else "the provider returned an error"
        return TestResult(False, error=redact.scrub(f"{reason} (HTTP {exc.code}: {message})"[:500]), status=exc.code)
    except TimeoutError:
        return TestResult(False, error=f"no answer from {provider.label} within {timeout:g} s (timeout)")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return TestResult(False, error=f"no answer from {provider.label} within {timeout:g} s (timeout)")
        return TestResult(False, error=redact.scrub(f"cannot reach {provider.label} at {base_url}: {reason}"))
    except OSError as exc:
        return TestResult(False, error=redact.scrub(f"cannot reach {provider.label} at {base_url}: {exc}"))


def _describe_success(provider: Provider, body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return f"{provider.label} accepted the key"
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return f"{provider.label} accepted the key ({len(data['data'])} models available)"
    return f"{provider.label} accepted the key"


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:300]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
    return json.dumps(data)[:300]
