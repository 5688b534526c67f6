"""The embedded vault as the server uses it: values are decrypted here, keys injected here."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .. import providers
from ..providers import injection_refusal
from ..store import Vault
from ..store.errors import AccessDenied, BadUpstream
from ..store.model import validate_name
from ..store.tokens import TokenStore
from . import Upstream


class LocalVault(Vault):
    """A `Vault` that also tests credentials and resolves proxy upstreams (`ServerVault`)."""

    kind = "sqlite"

    def __init__(self, *args: Any, base_url_for: Callable[[providers.Provider], str], test_timeout: float = 10.0,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._base_url_for = base_url_for
        self._test_timeout = test_timeout
        self._tokens = TokenStore(self)

    def learn_values(self, owner: str) -> None:
        from ..store import VaultError

        for info in self.list(owner, include_env=False):
            try:
                self.get_value(owner, info.name, purpose="scrub", touch=False)  # on_value feeds the scrubber
            except VaultError:  # a damaged row is reported when used; keep learning the rest
                continue

    def test(self, owner: str, name: str, *, actor: str) -> dict[str, Any]:
        resolved = self.resolve(owner, name, actor=actor, purpose="test")
        pid = resolved.provider or getattr(providers.provider_for_env_var(name), "id", None)
        if pid is None:
            raise providers.InvalidInput(f"{name} has no provider; set it again with a provider to test it")
        provider = providers.get_provider(pid)
        value = resolved.value
        if value and not (value.isascii() and value.isprintable()):
            # http.client raises on a header it cannot encode, with the value in the message.
            result = providers.TestResult(False, error=f"{name} contains non-ASCII or control characters, which "
                                          f"cannot be sent in an HTTP header; it is not a valid {provider.label} key")
        else:
            result = providers.run_key_test(provider, value, self._endpoint(provider, resolved.metadata),
                                            timeout=self._test_timeout)
        self.audit(owner, "test", name, "ok" if result.ok else "failed", actor=actor)
        payload = result.to_json()
        if value:
            for key in ("detail", "error"):
                if isinstance(payload.get(key), str):
                    payload[key] = payload[key].replace(value, "[REDACTED]")
        return payload

    def _endpoint(self, provider: providers.Provider, metadata: Any) -> str:
        """The credential's own endpoint (metadata "base_url") for providers without a fixed one (Azure,
        OpenAI-compatible), else the configured base URL."""
        url = metadata.get("base_url") if provider.per_credential_base_url and metadata else None
        try:
            return providers.validate_base_url(url) if url else self._base_url_for(provider)
        except providers.InvalidInput as exc:
            raise BadUpstream(str(exc)) from None

    def upstream(self, owner: str, provider: providers.Provider, name: str, *, actor: str) -> Upstream:
        if not provider.needs_key:
            return Upstream(self._endpoint(provider, None), provider.auth_headers(None), None)
        # Bound to its provider, checked on the record before anything is decrypted or counted as a use.
        name = validate_name(name)
        metadata: Any = None
        if self._env.get(name) and name in self.env_credential_names:
            kind: tuple[str | None, str] | None = (None, "api_key")  # the env var wins at use time
        else:
            rec = self._record(owner, name)
            kind = (rec.provider, rec.type) if rec is not None else None  # None: resolve says it is missing
            metadata = rec.metadata if rec is not None else None
        base_url = self._endpoint(provider, metadata)
        refusal = injection_refusal(provider, name, *kind) if kind is not None else None
        if refusal:
            self.audit(owner, "use", name, "denied", actor=actor, detail=f"route={provider.id}")
            raise AccessDenied(refusal)
        resolved = self.resolve(owner, name, actor=actor)
        return Upstream(base_url, provider.auth_headers(resolved.value), resolved.value,
                        expires_at=resolved.expires_at)

    def record_uses(self, owner: str, uses: Mapping[tuple[str, str], int]) -> None:
        for (name, actor), count in uses.items():
            self.audit(owner, "use", name, "ok", actor=actor, detail=f"requests={count}")
            self.touch(owner, name)

    def access_tokens(self) -> TokenStore:
        return self._tokens

    def session_heartbeat(self, owner: str) -> None:
        """Session-only values live in this process: they end with it, nothing to keep alive."""
