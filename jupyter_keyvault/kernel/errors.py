"""Errors of the kernel helper. Messages are safe to show: they never contain a value."""

from __future__ import annotations


class KeyVaultError(Exception):
    """Base class of every error `keyvault.*` raises on purpose.

    `status` is the HTTP status the Jupyter server answered with, when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class NoCredentialError(KeyVaultError, LookupError):
    """No credential of that name is configured (not stored, not in the environment)."""


class AccessDenied(KeyVaultError, PermissionError):
    """The server refused this kernel access to the credential (e.g. not from this notebook)."""


class DirectAccessDisabled(AccessDenied):
    """Direct mode (the value inside the kernel) is disabled by the administrator."""


class ServerUnreachable(KeyVaultError, ConnectionError):
    """The Jupyter server that started this kernel does not answer."""


class KernelNotRecognised(KeyVaultError):
    """The server did not accept this kernel's credential (HTTP 401)."""


class UnknownProvider(KeyVaultError, ValueError):
    """The provider id is not in the provider table."""


class InvalidRequest(KeyVaultError, ValueError):
    """A name, value or option was rejected; nothing was changed."""


__all__ = [
    "AccessDenied",
    "DirectAccessDisabled",
    "InvalidRequest",
    "KernelNotRecognised",
    "KeyVaultError",
    "NoCredentialError",
    "ServerUnreachable",
    "UnknownProvider",
]
