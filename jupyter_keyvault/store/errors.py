"""Errors raised by the store. Messages are safe to show: they never contain a value."""


class VaultError(Exception):
    """Base class for every error the vault raises on purpose."""


class InvalidInput(VaultError, ValueError):
    """A name, value, provider or option was rejected; nothing was changed."""


class NotFound(VaultError, KeyError):
    """No credential (or token) with that name exists for this owner."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "not found"


class MasterKeyError(VaultError):
    """The master key is missing, malformed, or is not the one that sealed the vault."""


class WrongMasterKey(MasterKeyError):
    """The vault was sealed with a different master key."""


class DecryptionError(VaultError):
    """One opaque error for any ciphertext that fails to open (no oracle)."""


class VaultLocked(VaultError):
    """The vault files cannot be read or written (permissions, missing directory)."""


class NoCredential(VaultError, LookupError):
    """Neither the environment nor the vault holds the requested credential."""


class StaleMasterKey(VaultError):
    """Another process rotated the master key since this one opened the vault."""


class StaleValue(VaultError):
    """A compare-and-swap found the value changed by another writer; nothing was written."""


class NotAvailable(VaultError):
    """The operation does not exist for this kind of vault (e.g. access tokens in hub mode)."""


class AccessDenied(VaultError):
    """The caller may not use this credential from here (e.g. a notebook outside its access list)."""


class RateLimited(VaultError):
    """Too many attempts; `retry_after` seconds until the next one is accepted."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class CredentialExpired(VaultError):
    """The credential's `expires_at` has passed: it is refused for every use until replaced or purged."""


class BadUpstream(VaultError):
    """The configured upstream (e.g. a provider base URL) is unusable; a 502 for the caller."""


# -- storage faults: one class per thing a user can act on; messages name the file.
class VaultDamaged(VaultError):
    """The vault file exists but is not a usable vault (empty, truncated, not SQLite,
    malformed, failing its integrity check, or without its identity records).
    It is never replaced by a new vault: the user restores a backup."""


class VaultDiskFull(VaultError):
    """The disk (or the user's quota) is full: the write was not made, nothing stored was lost."""


class VaultReadOnly(VaultLocked):
    """The vault file or its filesystem is read-only: reads work, writes are refused."""


class VaultPermissionDenied(VaultLocked):
    """This user may not read or write the vault file (the message names the file)."""
