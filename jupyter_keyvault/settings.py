"""`c.KeyVault.*`: the configuration shared by the server extension and the CLI."""

from __future__ import annotations

import getpass
import os
import re
from pathlib import Path

from traitlets import Bool, Dict, Enum, Float, Int, List, TraitError, Unicode, Union, default, validate
from traitlets.config import Configurable

from . import providers
from .scrub import Scrubber, default_scrubber, install_log_filter
from .store import SQLiteBackend
from .store.masterkey import SOURCES
from .vaults import ServerVault

# Env vars that must never reach kernels or terminals, besides every credential name.
DEFAULT_SECRET_ENV_PATTERNS = [
    "KEYVAULT_*",
    "*_API_KEY",
    "*_API_TOKEN",
    "*_SECRET",
    "*_SECRET_KEY",
    "*_ACCESS_KEY",
    "*_PASSWORD",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "AWS_SESSION_TOKEN",
]
# What kernels must keep to find the vault (matches the KEYVAULT_* pattern above).
KERNEL_ENV_ALLOWLIST = ["KEYVAULT_SERVER_URL", "KEYVAULT_PROXY_URL", "KEYVAULT_KERNEL_MODE", "KEYVAULT_PREVIOUS_PYTHONSTARTUP"]


def default_owner() -> str:
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


class KeyVault(Configurable):
    """Settings of jupyter-keyvault (`c.KeyVault.<trait>` in jupyter_server_config.py)."""

    owner = Unicode(
        help="Owner of the credentials this server manages. Defaults to the JupyterHub user, "
        "else the operating-system user; all credentials of one vault are stored per owner."
    ).tag(config=True)

    @default("owner")
    def _default_owner(self):
        return default_owner()

    vault_path = Unicode(
        help="Path of the SQLite vault file. Defaults to <Jupyter data dir>/keyvault/vault.db "
        "(honours JUPYTER_DATA_DIR)."
    ).tag(config=True)

    @default("vault_path")
    def _default_vault_path(self):
        from jupyter_core.paths import jupyter_data_dir

        return str(Path(jupyter_data_dir()) / "keyvault" / "vault.db")

    @validate("vault_path")
    def _validate_vault_path(self, proposal):
        value = proposal["value"]
        if not value or not value.strip():
            raise TraitError("KeyVault.vault_path must not be empty")
        return str(Path(value).expanduser().absolute())

    backend = Enum(
        ["sqlite", "hub"], default_value="sqlite",
        help="Storage backend: 'sqlite' (embedded, the default) or 'hub' (the JupyterHub keyvault service: "
        "credentials live in the service, which alone decrypts; see docs/jupyterhub.md).",
    ).tag(config=True)

    hub_url = Unicode(
        help="URL of the keyvault hub service's prefix, e.g. http://127.0.0.1:10101/services/keyvault/ "
        "(backend = 'hub'). Default: $KEYVAULT_HUB_URL, set by the hub's spawner config."
    ).tag(config=True)

    @default("hub_url")
    def _default_hub_url(self):
        return os.environ.get("KEYVAULT_HUB_URL", "")

    master_key_source = Enum(
        list(SOURCES),
        default_value=None,
        allow_none=True,
        help="Force where a NEW vault's master key comes from ('env', 'keyring', 'passphrase', 'file'). "
        "Default: the first available of KEYVAULT_MASTER_KEY, an OS keyring, KEYVAULT_PASSPHRASE, "
        "then a generated key file (reported as weaker protection). Existing vaults keep their source.",
    ).tag(config=True)

    use_keyring = Bool(True, help="Use the OS keyring (via `keyring`) when a real backend exists.").tag(config=True)

    max_value_bytes = Int(
        16 * 1024, help="Largest credential value accepted, in bytes (UTF-8)."
    ).tag(config=True)

    @validate("max_value_bytes")
    def _validate_max_value_bytes(self, proposal):
        if not 1 <= proposal["value"] <= 1024 * 1024:
            raise TraitError("KeyVault.max_value_bytes must be between 1 and 1048576")
        return proposal["value"]

    provider_base_urls = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="Base URL per provider id, e.g. {'openai': 'https://my-gateway.example/v1'}. Overrides the "
        "provider SDK's env var (OPENAI_BASE_URL, …) and the built-in default. Plain http:// is refused "
        "except for loopback hosts.",
    ).tag(config=True)

    @validate("provider_base_urls")
    def _validate_provider_base_urls(self, proposal):
        cleaned = {}
        for pid, url in proposal["value"].items():
            if pid not in providers.PROVIDERS:
                raise TraitError(f"KeyVault.provider_base_urls: unknown provider {pid!r}")
            try:
                cleaned[pid] = providers.validate_base_url(url)
            except ValueError as exc:
                raise TraitError(f"KeyVault.provider_base_urls[{pid!r}]: {exc}") from None
        return cleaned

    oauth_providers = Dict(
        help="OAuth2 providers users can connect credentials to: {id: {authorize_url, token_url, client_id, "
        "api_base_url, scopes, display_name?, revoke_url?, extra_authorize_params?, client_secret_credential?, "
        "token_endpoint_auth_method?}}. The client secret is never configured here: store it in the vault "
        "(`jupyter keyvault set OAUTH_<ID>_CLIENT_SECRET --type oauth_client_secret`). See docs/oauth.md.",
    ).tag(config=True)

    @validate("oauth_providers")
    def _validate_oauth_providers(self, proposal):
        from .oauth import validate_providers

        try:
            return validate_providers(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"KeyVault.{exc}") from None

    oauth_refresh_skew = Float(
        60.0, help="Refresh an OAuth2 access token this many seconds before it expires."
    ).tag(config=True)

    env_credentials = List(
        Unicode(),
        help="Extra env-var names that, when set in the server's environment, are used as credentials "
        "(before stored values). Provider names such as OPENAI_API_KEY are always included.",
    ).tag(config=True)

    secret_env_patterns = List(
        Unicode(),
        default_value=DEFAULT_SECRET_ENV_PATTERNS,
        help="Glob patterns of env-var names removed from the environment kernels and terminals inherit "
        "(the master key, passphrases and API keys). Credential names are always removed too.",
    ).tag(config=True)

    extra_secret_patterns = List(
        Unicode(), help="Extra regular expressions the scrubber redacts, besides the built-in provider patterns."
    ).tag(config=True)

    @validate("extra_secret_patterns")
    def _validate_extra_patterns(self, proposal):
        for pattern in proposal["value"]:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise TraitError(f"KeyVault.extra_secret_patterns: {pattern!r} is not a valid regex: {exc}") from None
        return proposal["value"]

    test_timeout = Float(10.0, help="Seconds to wait for a provider's test request.").tag(config=True)

    # -- the server extension (read by KeyVaultManager)
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
    freeze_startup_heap = Bool(
        True, help="Once the server has started, move every object it holds to the garbage collector's "
        "permanent generation (gc.freeze). A full collection of a Jupyter server's startup heap (a few "
        "hundred thousand objects) otherwise stalls every request and stream for 100-200 ms, several times "
        "a minute under load. The cost: cycles among startup objects that later become garbage are not "
        "freed. The setting is process-wide.",
    ).tag(config=True)
    scrub_server_environ = Bool(
        True, help="Remove the master key, passphrases and API keys from this server's own os.environ at start "
        "(after reading them), so nothing it spawns (kernels, terminals, subprocesses) can inherit them.",
    ).tag(config=True)
    allow_direct_access = Bool(
        help="Let kernels fetch stored values (keyvault.get, keyvault.env, mode='direct'). When False only "
        "proxy mode works, and the key never enters any kernel. Default: True, except where kernels are "
        "isolated (isolate_kernels), where a kernel that could read values would undo the isolation. One "
        "credential can be allowed on its own: metadata {\"allow_direct\": true} (REST PATCH).",
    ).tag(config=True)

    @default("allow_direct_access")
    def _default_allow_direct_access(self):
        return not self.kernels_isolated()

    isolate_kernels = Enum(
        ["auto", "on", "off"], default_value="auto",
        help="Kernel isolation (Linux Landlock): every kernel this server starts runs under a launcher that "
        "denies it the vault, the key file, the runtime dir (server token, other kernels' connection files), "
        "writes to Jupyter/IPython config and the server's Python, and access to the server's memory. "
        "'auto': on where Landlock is available, reported loudly where not; 'on': kernels refuse to start "
        "without it; 'off': kernels run as the server's user can. See docs/isolation.md.",
    ).tag(config=True)

    isolate_terminals = Bool(
        False, help="Start terminals under the same Landlock policy as kernels (when kernels are isolated). "
        "Off by default: a terminal is the user's own shell, from which they manage their own vault "
        "(jupyter keyvault set/list); turn it on where terminals must not reach the vault either.",
    ).tag(config=True)

    isolation_writable_paths = List(
        Unicode(), help="Extra paths isolated kernels may write, besides the notebook root, /tmp and caches.",
    ).tag(config=True)

    def kernels_isolated(self) -> bool:
        """Whether new kernels start confined (or, with 'on' and no Landlock, refuse to start)."""
        from .isolation import detect, resolve_mode

        return resolve_mode(self.isolate_kernels, detect(self.isolate_kernels).abi)
    proxy_read_timeout = Float(
        600.0, help="Seconds the proxy waits for the next bytes from an upstream (long generations stream slowly)."
    ).tag(config=True)
    proxy_max_body_size = Int(
        512 * 1024 * 1024, help="Largest request body the provider proxy relays, in bytes (a file upload, say); "
        "larger ones get 413 with a JSON error, before any of the body is read when Content-Length says so. "
        "Bodies stream upstream as they arrive, so this bounds traffic, not the server's memory. It replaces "
        "jupyter_server's max_body_size on proxy routes only.",
    ).tag(config=True)

    @validate("proxy_max_body_size")
    def _validate_proxy_max_body_size(self, proposal):
        if proposal["value"] < 0:
            raise TraitError("KeyVault.proxy_max_body_size must be 0 or more bytes")
        return proposal["value"]

    proxy_max_connections = Int(
        0, help="Upper bound on concurrent upstream connections of the proxy (0 = no limit)."
    ).tag(config=True)
    resolve_cache_seconds = Float(
        5.0, help="How long the proxy may reuse a decrypted key (or a verified vault access token) before "
        "reading the vault again. Writes and token revocations through this server invalidate it at once; "
        "writes by another process (the CLI) are seen after this delay.",
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
    jupyter_ai_secrets = Bool(
        True,
        help="When jupyter-ai 3.x (Jupyternaut) runs in this server, store the secrets saved in its settings in "
        "the vault instead of a plaintext .env file in the workspace; its models get them in this server's "
        "environment, which kernels and terminals do not inherit.",
    ).tag(config=True)
    kernel_token_lifetime = Float(
        600.0,
        help="Seconds a kernel-bound token lives (what `keyvault.env(NAME)` exports in proxy mode instead of the "
        "key): the kernel renews it while the block or `%keyvault env` is active; it dies with its kernel.",
    ).tag(config=True)

    @validate("kernel_token_lifetime")
    def _validate_kernel_token_lifetime(self, proposal):
        from .store.tokens import KERNEL_TOKEN_MAX_SECONDS, KERNEL_TOKEN_MIN_SECONDS

        if not KERNEL_TOKEN_MIN_SECONDS <= proposal["value"] <= KERNEL_TOKEN_MAX_SECONDS:
            raise TraitError(f"KeyVault.kernel_token_lifetime must be between {KERNEL_TOKEN_MIN_SECONDS} and "
                             f"{KERNEL_TOKEN_MAX_SECONDS} seconds")
        return proposal["value"]

    server_url = Unicode(
        "", help="URL kernels use to reach this server's vault (default: the server's own connection URL)."
    ).tag(config=True)
    loopback_proxy = Bool(
        True, help="Serve the provider proxy to this server's kernels on a listener of its own on 127.0.0.1 "
        "(aiohttp): the same checks and relay as the proxy on the server's URL, at about a third less CPU "
        "per request and a fifth less memory per open stream. Kernels learn its URL from KEYVAULT_PROXY_URL. Not used when "
        "server_url is set (kernels elsewhere than this host could not reach it).",
    ).tag(config=True)
    loopback_proxy_port = Int(
        0, help="Port of the loopback proxy on 127.0.0.1 (0: any free port, chosen at start)."
    ).tag(config=True)

    # -- credential lifetimes (docs/lifetimes.md)
    delete_on_exit = Union(
        [Bool(), Unicode(), List(Unicode())], default_value=[],
        help="Credentials deleted when this server stops: a list of names, or 'all' (True) for every stored "
        "credential. On a clean stop they are deleted then; after a crash (SIGKILL, power loss), on the next "
        "start. For shared machines where keys must not outlive the working session.",
    ).tag(config=True)

    @validate("delete_on_exit")
    def _validate_delete_on_exit(self, proposal):
        from .store import InvalidInput, validate_name

        value = proposal["value"]
        if value is True or value == "all":
            return "all"
        if value is False or value == "":
            return []
        if isinstance(value, str):
            value = [value]
        try:
            return [validate_name(n) for n in value]
        except InvalidInput as exc:
            raise TraitError(f"KeyVault.delete_on_exit: {exc}") from None

    key_age_warning_days = Int(
        90, help="A stored value older than this many days is reported as stale (status, the sidebar, the panel, "
        "`jupyter keyvault list --stale`) so it gets rotated. 0 turns the warning off.",
    ).tag(config=True)

    @validate("key_age_warning_days")
    def _validate_key_age_warning_days(self, proposal):
        if not 0 <= proposal["value"] <= 3660:
            raise TraitError("KeyVault.key_age_warning_days must be between 0 (off) and 3660")
        return proposal["value"]

    expiry_check_seconds = Float(
        60.0, help="How often the server destroys expired credentials (and, in hub mode, tells the keyvault "
        "service it is still running, which keeps its session-only credentials alive). Expired values are "
        "refused from the moment they expire, whatever this is.",
    ).tag(config=True)

    @validate("expiry_check_seconds")
    def _validate_expiry_check_seconds(self, proposal):
        if not 0.05 <= proposal["value"] <= 3600:
            raise TraitError("KeyVault.expiry_check_seconds must be between 0.05 and 3600")
        return proposal["value"]

    def credential_env_names(self) -> set[str]:
        return providers.credential_env_names() | set(self.env_credentials)

    def make_scrubber(self, *, build_on_scrub: bool = True) -> Scrubber:
        """The scrubber for this process. A server passes build_on_scrub=False and rebuilds off its
        event loop (Scrubber.rebuild_async), so nothing on the loop grows with the vault."""
        if self.extra_secret_patterns or not build_on_scrub:
            return Scrubber(extra_patterns=self.extra_secret_patterns, build_on_scrub=build_on_scrub)
        return default_scrubber

    def open_vault(self, env=None, scrubber: Scrubber | None = None) -> ServerVault:
        """Open (creating if needed) the configured vault; known values feed the scrubber.
        The one place that picks the implementation of `ServerVault`."""
        scrubber = scrubber or self.make_scrubber()
        install_log_filter(scrubber, ["jupyter_keyvault"])
        env = os.environ if env is None else env
        if self.backend == "hub":
            from .vaults.hub import HubVaultClient

            return HubVaultClient(self.hub_url, env.get("JUPYTERHUB_API_TOKEN", ""), self.owner)
        from .vaults.local import LocalVault

        return LocalVault(
            SQLiteBackend(self.vault_path),
            base_url_for=lambda provider: self.base_url_for(provider, env),
            test_timeout=self.test_timeout,
            env=env,
            preferred_source=self.master_key_source,
            use_keyring=self.use_keyring,
            env_credential_names=self.credential_env_names(),
            max_value_bytes=self.max_value_bytes,
            # A value seen under a name replaces what was known under it (a replaced key is forgotten).
            on_value=lambda name, value: scrubber.replace_known(None, value, name),
        )

    def base_url_for(self, provider: providers.Provider, env=None) -> str:
        return providers.effective_base_url(provider, self.provider_base_urls, os.environ if env is None else env)
