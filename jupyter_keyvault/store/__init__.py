"""The store layer: credentials, envelope encryption, master keys, persistence, audit.

Pure Python + `cryptography`: nothing here imports tornado or Jupyter.
"""

from .backend import StorageBackend
from .errors import (
    DecryptionError,
    InvalidInput,
    MasterKeyError,
    NoCredential,
    NotFound,
    VaultDamaged,
    VaultDiskFull,
    VaultError,
    VaultLocked,
    VaultPermissionDenied,
    VaultReadOnly,
    WrongMasterKey,
)
from .model import CREDENTIAL_TYPES, AuditEvent, CredentialInfo, CredentialRecord, validate_name
from .sqlite import SQLiteBackend
from .vault import ResolvedCredential, Vault

__all__ = [
    "CREDENTIAL_TYPES",
    "AuditEvent",
    "CredentialInfo",
    "CredentialRecord",
    "DecryptionError",
    "InvalidInput",
    "MasterKeyError",
    "NoCredential",
    "NotFound",
    "ResolvedCredential",
    "SQLiteBackend",
    "StorageBackend",
    "Vault",
    "VaultDamaged",
    "VaultDiskFull",
    "VaultError",
    "VaultLocked",
    "VaultPermissionDenied",
    "VaultReadOnly",
    "WrongMasterKey",
    "validate_name",
]
