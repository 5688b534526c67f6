"""Where the master key comes from: env, OS keyring, passphrase, or a key file.

A new vault takes the first available source in that order (or the configured one)
and records it; an existing vault keeps its recorded source, so adding a keyring
later never locks anyone out. The key itself is never logged or reported.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .crypto import KEY_BYTES, decode_master_key, encode_master_key
from .errors import MasterKeyError

log = logging.getLogger("jupyter_keyvault.store")

ENV_MASTER_KEY = "KEYVAULT_MASTER_KEY"
ENV_PASSPHRASE = "KEYVAULT_PASSPHRASE"  # noqa: S105 - an env-var name
ENV_NEW_MASTER_KEY = "KEYVAULT_NEW_MASTER_KEY"
ENV_NEW_PASSPHRASE = "KEYVAULT_NEW_PASSPHRASE"  # noqa: S105 - an env-var name
FILE_SUFFIX = "_FILE"  # KEYVAULT_MASTER_KEY_FILE=/run/secrets/kv: the value read from a private file


def env_secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret given as `NAME` or, preferably, as `NAME_FILE` (a 0600 file: the secret then never
    sits in an environment block that other processes of the user can read via /proc)."""
    value = env.get(name)
    if value:
        return value
    path = env.get(name + FILE_SUFFIX)
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise MasterKeyError(f"{name}{FILE_SUFFIX}={path}: cannot read it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise MasterKeyError(f"{name}{FILE_SUFFIX}={path} is not a regular file")
        if info.st_mode & 0o077:
            raise MasterKeyError(f"{name}{FILE_SUFFIX}={path} is readable by other users: chmod 600 it")
        text = f.read(64 * 1024).decode("utf-8", "replace").strip()
    if not text:
        raise MasterKeyError(f"{name}{FILE_SUFFIX}={path} is empty")
    return text
SOURCES = ("env", "keyring", "passphrase", "file")
KEYRING_SERVICE = "jupyter-keyvault"
SCRYPT_PARAMS = {"n": 2**15, "r": 8, "p": 1}
KEY_FILE_WARNING = (
    "no strong master-key source (KEYVAULT_MASTER_KEY, an OS keyring or KEYVAULT_PASSPHRASE): "
    "the vault is encrypted with a generated key file stored next to it, which protects "
    "against leaked vault files but not against a copied home directory"
)


@dataclass
class MasterKey:
    key: bytes = field(repr=False)
    source: str
    strong: bool
    detail: str = ""
    warnings: list[str] = field(default_factory=list)


def keyring_usable() -> bool:
    """True when `keyring` has a real backend (not the fail/null/empty-chainer fallbacks)."""
    try:
        import keyring
        from keyring.backends import chainer, fail
    except ImportError:
        return False
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        return False
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        return False
    return type(backend).__module__ != "keyring.backends.null"


def _keyring_name(vault_id: str, pending: bool = False) -> str:
    return f"{'pending-' if pending else ''}master-key:{vault_id}"


def keyring_get(vault_id: str, pending: bool = False) -> bytes | None:
    import keyring

    text = keyring.get_password(KEYRING_SERVICE, _keyring_name(vault_id, pending))
    if text is None:
        return None
    return decode_master_key(text, origin="the master key in the OS keyring")


def keyring_set(vault_id: str, key: bytes, pending: bool = False) -> None:
    import keyring

    keyring.set_password(KEYRING_SERVICE, _keyring_name(vault_id, pending), encode_master_key(key))


def keyring_delete(vault_id: str, pending: bool = False) -> None:
    import keyring
    from keyring.errors import PasswordDeleteError

    try:
        keyring.delete_password(KEYRING_SERVICE, _keyring_name(vault_id, pending))
    except PasswordDeleteError:
        pass


def new_kdf_params() -> dict:
    return {"alg": "scrypt", **SCRYPT_PARAMS, "salt": base64.b64encode(os.urandom(16)).decode()}


def derive_from_passphrase(passphrase: str, params: dict) -> bytes:
    if not passphrase:
        raise MasterKeyError(f"{ENV_PASSPHRASE} is empty")
    if params.get("alg") != "scrypt":
        raise MasterKeyError(f"unsupported key-derivation function {params.get('alg')!r}")
    kdf = Scrypt(salt=base64.b64decode(params["salt"]), length=KEY_BYTES, n=params["n"], r=params["r"], p=params["p"])
    return kdf.derive(passphrase.encode("utf-8"))


def write_private_file(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    fsync_path(path.parent)


def fsync_path(path: Path | str) -> None:
    """Flush a file's data, or a directory's entries (after a create, link or rename), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> bytes:
    try:
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise MasterKeyError(f"cannot read master key file {path}: {exc.__class__.__name__}") from None
    return decode_master_key(text, origin=f"master key file {path}")


def require_key_file(key_file: Path | None) -> Path:
    """The key file of a vault keyed by a file; a clear error when its database has no directory for one."""
    if key_file is None:
        raise MasterKeyError(
            f"this vault's database has no directory for a key file: set {ENV_MASTER_KEY} "
            f"(or {ENV_PASSPHRASE}, or an OS keyring), or give a key file"
        )
    return key_file


class MasterKeyResolver:
    """Finds (or, for a new vault, creates) the master key.

    `meta_get`/`meta_set` read and write the vault's plaintext metadata (recorded
    source, KDF salt); `key_file` is where the file fallback lives.
    """

    def __init__(
        self,
        *,
        key_file: Path | None,
        env: Mapping[str, str],
        preferred_source: str | None = None,
        use_keyring: bool = True,
    ):
        if preferred_source is not None and preferred_source not in SOURCES:
            raise MasterKeyError(f"master key source must be one of {', '.join(SOURCES)}")
        self.key_file = Path(key_file) if key_file is not None else None
        self.env = env
        self.preferred_source = preferred_source
        self.use_keyring = use_keyring

    def choose_new_source(self) -> str:
        if self.preferred_source:
            return self.preferred_source
        if env_secret(self.env, ENV_MASTER_KEY):
            return "env"
        if self.use_keyring and keyring_usable():
            return "keyring"
        if env_secret(self.env, ENV_PASSPHRASE):
            return "passphrase"
        return "file"

    def resolve(
        self,
        vault_id: str,
        recorded: str | None,
        meta_get: Callable[[str], str | None],
        meta_init: Callable[[str, str], str],
    ) -> MasterKey:
        """Load the key of an existing vault (recorded source) or a new one (recorded None)."""
        source = recorded or self.choose_new_source()
        env_key = env_secret(self.env, ENV_MASTER_KEY)
        if env_key:
            # An explicit env key always wins; the vault's check tells if it is the right one.
            return MasterKey(decode_master_key(env_key, origin=ENV_MASTER_KEY), "env", True, ENV_MASTER_KEY)
        if source == "env":
            raise MasterKeyError(f"this vault is sealed with a master key from {ENV_MASTER_KEY}, which is not set")
        if source == "keyring":
            return self._from_keyring(vault_id, create=recorded is None)
        if source == "passphrase":
            passphrase = env_secret(self.env, ENV_PASSPHRASE)
            if not passphrase:
                raise MasterKeyError(f"this vault is sealed with a passphrase: set {ENV_PASSPHRASE}")
            params_text = meta_get("kdf")
            if params_text is None:
                if recorded is not None:
                    raise MasterKeyError("vault metadata has no key-derivation parameters")
                params_text = meta_init("kdf", json.dumps(new_kdf_params()))
            key = derive_from_passphrase(passphrase, json.loads(params_text))
            return MasterKey(key, "passphrase", True, "scrypt")
        return self._from_file(create=recorded is None)

    def _from_keyring(self, vault_id: str, create: bool) -> MasterKey:
        if not (self.use_keyring and keyring_usable()):
            raise MasterKeyError("this vault is sealed with a key in the OS keyring, but no keyring backend is available")
        import keyring

        backend = type(keyring.get_keyring()).__name__
        key = keyring_get(vault_id)
        if key is None:
            if not create:
                raise MasterKeyError("this vault is sealed with a key in the OS keyring, but the keyring has no entry for it")
            key = os.urandom(KEY_BYTES)
            keyring_set(vault_id, key)
        return MasterKey(key, "keyring", True, backend)

    def _from_file(self, create: bool) -> MasterKey:
        key_file = require_key_file(self.key_file)
        if key_file.exists():
            key = read_key_file(key_file)
        elif create:
            key = self._create_key_file(key_file)
        else:
            raise MasterKeyError(f"this vault is sealed with a key file, but {key_file} is missing")
        if create:  # later opens report it through status() instead of on every command
            log.warning("jupyter-keyvault: %s (%s)", KEY_FILE_WARNING, key_file)
        return MasterKey(key, "file", False, str(key_file), [KEY_FILE_WARNING])

    def _create_key_file(self, key_file: Path) -> bytes:
        """Create the key file exclusively: two processes opening a new vault agree on one key."""
        key = os.urandom(KEY_BYTES)
        tmp = key_file.with_name(f"{key_file.name}.{os.getpid()}.tmp")
        write_private_file(tmp, (encode_master_key(key) + "\n").encode())
        try:
            os.link(tmp, key_file)  # fails if another process won the race
        except FileExistsError:
            key = read_key_file(key_file)
        finally:
            tmp.unlink()
        fsync_path(key_file.parent)
        return key

    def new_key_for_rotation(self, source: str, meta_get: Callable[[str], str | None]) -> tuple[bytes, dict[str, str]]:
        """The next master key for `source`, plus metadata to commit with the re-wrap."""
        if source == "env":
            text = env_secret(self.env, ENV_NEW_MASTER_KEY)
            if not text:
                raise MasterKeyError(
                    f"this vault is keyed by {ENV_MASTER_KEY}: put the new key in {ENV_NEW_MASTER_KEY} to rotate"
                )
            return decode_master_key(text, origin=ENV_NEW_MASTER_KEY), {}
        if source == "passphrase":
            passphrase = env_secret(self.env, ENV_NEW_PASSPHRASE) or env_secret(self.env, ENV_PASSPHRASE) or ""
            params = new_kdf_params()
            return derive_from_passphrase(passphrase, params), {"kdf": json.dumps(params)}
        return os.urandom(KEY_BYTES), {}
