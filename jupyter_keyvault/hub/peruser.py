"""Per-user mode on JupyterHub: every user's server keeps its own vault, sealed with a
master key derived for that user alone from one hub secret.

In `jupyterhub_config.py`:

    from jupyter_keyvault.hub.peruser import configure_per_user_keys
    configure_per_user_keys(c)                    # reads KEYVAULT_HUB_SECRET from the hub's env

Each spawned server gets `KEYVAULT_MASTER_KEY` = HKDF-SHA256(hub secret, info = framed
("jupyter-keyvault/per-user-master-key/v1", context, user name)); the extension reads it at
start and removes it from the server's environment, so kernels and terminals never see it.
The hub secret itself never leaves the hub. A user who extracts their own key (they control
their server) can open only their own vault: HKDF is one-way, so no user's key reveals the
secret or another user's key. See docs/jupyterhub-per-user.md.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from typing import Any, Callable, Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..envguard import wipe_process_env_value
from ..store.crypto import KEY_BYTES, encode_master_key
from ..store.errors import MasterKeyError
from ..store.masterkey import ENV_MASTER_KEY, env_secret

DEFAULT_SECRET_ENV = "KEYVAULT_HUB_SECRET"  # noqa: S105 - a name, not a secret
INFO_LABEL = "jupyter-keyvault/per-user-master-key/v1"
MIN_SECRET_BYTES = 32
MIN_DISTINCT_BYTES = 16  # 32 random bytes have ~30 distinct values; "aaaa..." or a counter has few
_HEX = re.compile(r"[0-9a-fA-F]+")
GENERATE_HINT = "generate one with `python -m jupyter_keyvault.peruser generate-secret`"


class WeakHubSecret(MasterKeyError):
    """The hub secret is absent, malformed or too weak to derive keys from."""


def _frame(*parts: str) -> bytes:
    """Length-prefixed parts: ("ab", "c") and ("a", "bc") never give the same info."""
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def parse_hub_secret(text: str | None, *, name: str = DEFAULT_SECRET_ENV) -> bytes:
    """The secret's bytes, from hex or (urlsafe) base64 of at least 32 random bytes."""
    if text is None or not text.strip():
        raise WeakHubSecret(f"{name} is not set: per-user keys need a hub secret; {GENERATE_HINT}")
    text = text.strip()
    raw: bytes | None = None
    if _HEX.fullmatch(text) and len(text) % 2 == 0 and len(text) >= 2 * MIN_SECRET_BYTES:
        raw = bytes.fromhex(text)
    else:
        try:
            standard = text.translate(str.maketrans("-_", "+/")).rstrip("=")
            raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None:
        raise WeakHubSecret(f"{name} is not hex or base64 of random bytes; {GENERATE_HINT}")
    if len(raw) < MIN_SECRET_BYTES:
        raise WeakHubSecret(f"{name} holds {len(raw)} bytes; at least {MIN_SECRET_BYTES} random bytes are needed; "
                            f"{GENERATE_HINT}")
    if len(set(raw)) < MIN_DISTINCT_BYTES:
        raise WeakHubSecret(f"{name} does not look random (too few distinct bytes); {GENERATE_HINT}")
    return raw


def derive_user_key(secret: bytes, username: str, *, context: str = "") -> bytes:
    """The 32-byte master key of one user. `context` separates hubs that share a secret."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < MIN_SECRET_BYTES:
        raise WeakHubSecret(f"the hub secret must be at least {MIN_SECRET_BYTES} bytes")
    if not isinstance(username, str) or not username:
        raise ValueError("a per-user key needs a non-empty user name")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_frame(INFO_LABEL, context, username))
    return hkdf.derive(bytes(secret))


def user_master_key_env(secret: bytes, *, context: str = "") -> Callable[[Any], str]:
    """A `Spawner.environment` value: called with the spawner, returns that user's key."""

    def master_key_for(spawner) -> str:
        return encode_master_key(derive_user_key(secret, spawner.user.name, context=context))

    master_key_for.__name__ = "keyvault_per_user_master_key"
    return master_key_for


def configure_per_user_keys(
    c,
    *,
    secret_env: str = DEFAULT_SECRET_ENV,
    context: str = "",
    environ: Mapping[str, str] | None = None,
) -> None:
    """Give every spawned server its own vault key. Call from jupyterhub_config.py.

    Fails at hub start (not at the first spawn) when the secret is missing or weak.
    """
    environ = os.environ if environ is None else environ
    secret = parse_hub_secret(env_secret(environ, secret_env), name=secret_env)
    if environ is os.environ:
        # The hub needs it no more (the closure below holds it): out of /proc/<hub pid>/environ too,
        # even if the caller already popped it from os.environ.
        wipe_process_env_value(secret_env)
        os.environ.pop(secret_env, None)
    env = c.Spawner.environment
    if isinstance(env, dict) and secret_env in env:
        raise WeakHubSecret(f"c.Spawner.environment passes {secret_env} to user servers; remove it")
    env.update({ENV_MASTER_KEY: user_master_key_env(secret, context=context)})
    # Spawner.env_keep copies hub variables into user servers: never the secret.
    keep = c.Spawner.env_keep
    if isinstance(keep, list) and secret_env in keep:
        c.Spawner.env_keep = [name for name in keep if name != secret_env]


def generate_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(MIN_SECRET_BYTES)).decode().rstrip("=")


NEW_SECRET_ENV = "KEYVAULT_HUB_SECRET_NEW"  # noqa: S105 - a name, not a secret


def rekey_vault(vault_path: str, user: str, *, secret: bytes, new_secret: bytes | None = None,
                new_user: str | None = None, context: str = "", new_context: str | None = None) -> int:
    """Re-wrap one user's vault from the key derived for (secret, user) to the key derived for
    (new_secret, new_user): after rotating the hub secret or renaming a user. Returns the
    number of data keys re-wrapped; WrongMasterKey (nothing changed) if the old key is wrong."""
    from ..store import SQLiteBackend, Vault

    old_key = derive_user_key(secret, user, context=context)
    new_key = derive_user_key(new_secret or secret, new_user or user,
                              context=context if new_context is None else new_context)
    env = {ENV_MASTER_KEY: encode_master_key(old_key), "KEYVAULT_NEW_MASTER_KEY": encode_master_key(new_key)}
    vault = Vault(SQLiteBackend(vault_path), env=env, use_keyring=False)
    try:
        if new_user and new_user != user:
            # Values are bound to their owner's name: move them first (re-runnable if interrupted).
            for info in vault.list(user, include_env=False):
                value = vault.get_value(user, info.name, purpose="rekey", actor="hub-admin", touch=False)
                vault.set(new_user, info.name, value, provider=info.provider, type=info.type,
                          metadata=info.metadata, actor="hub-admin", action="rekey")
                vault.delete(user, info.name, actor="hub-admin")
        return vault.rotate_master_key(actor="hub-admin")
    finally:
        vault.close()


USAGE = """usage: python -m jupyter_keyvault.peruser generate-secret
       python -m jupyter_keyvault.peruser rekey VAULT_PATH USER [NEW_USER]
           (secrets from KEYVAULT_HUB_SECRET and, to rotate it, KEYVAULT_HUB_SECRET_NEW)"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["generate-secret"]:
        print(generate_secret())
        return 0
    if args[:1] == ["rekey"] and len(args) in (3, 4):
        from ..store.errors import VaultError

        try:
            secret = parse_hub_secret(os.environ.get(DEFAULT_SECRET_ENV), name=DEFAULT_SECRET_ENV)
            new_text = os.environ.get(NEW_SECRET_ENV)
            new_secret = parse_hub_secret(new_text, name=NEW_SECRET_ENV) if new_text else None
            if new_secret is None and len(args) == 3:
                print(f"error: nothing to do: set {NEW_SECRET_ENV} or give NEW_USER", file=sys.stderr)
                return 2
            count = rekey_vault(args[1], args[2], secret=secret, new_secret=new_secret,
                                new_user=args[3] if len(args) == 4 else None)
        except (VaultError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"re-keyed {args[1]}: {count} data key(s) re-wrapped")
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
