"""Storage faults as one clear, actionable message each.

SQLite and the OS report a full disk, a read-only mount, a permission problem or a
damaged file in many shapes (result codes, errno, message text). Everything below turns
them into the `VaultError` subclasses of `errors.py`, naming the file and what to do.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from .errors import VaultDamaged, VaultDiskFull, VaultError, VaultLocked, VaultPermissionDenied, VaultReadOnly

# SQLite primary result codes (the low byte of an extended code).
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY = 3, 5, 6, 8
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN = 10, 11, 13, 14
SQLITE_AUTH, SQLITE_NOTADB = 23, 26

RESTORE_HINT = (
    "move it aside and restore it from a backup (a copy made by `jupyter keyvault backup`, or "
    "`jupyter keyvault import` of an export); nothing was changed"
)


def damaged(path: Path | str, what: str) -> VaultDamaged:
    return VaultDamaged(f"vault file {path} is damaged: {what}; {RESTORE_HINT}")


def disk_full(path: Path | str) -> VaultDiskFull:
    return VaultDiskFull(
        f"disk full: cannot write the vault at {path}; free some space (or raise the quota) and retry; "
        "nothing was saved, nothing stored was lost"
    )


def read_only(path: Path | str, why: str = "the file or its filesystem is read-only") -> VaultReadOnly:
    return VaultReadOnly(
        f"vault {path} is read-only ({why}): credentials can be listed and read, but not changed; "
        "make it writable (or remount the filesystem read-write) to save changes"
    )


def _owner_and_mode(path: Path | str) -> str:
    try:
        st = os.stat(path)
        return f" (owner uid {st.st_uid}, mode {st.st_mode & 0o777:04o})"
    except OSError:
        return ""


def permission_denied(path: Path | str, access: str = "read and write",
                      blocked_by: Path | str | None = None) -> VaultPermissionDenied:
    """Names the vault FILE; `blocked_by` is the directory that denies it, when it is one."""
    uid = os.getuid() if hasattr(os, "getuid") else "?"
    if blocked_by is not None:
        return VaultPermissionDenied(
            f"permission denied: this user (uid {uid}) cannot {access} vault file {path}: its directory "
            f"{blocked_by}{_owner_and_mode(blocked_by)} does not allow it; run as the user who owns it, "
            "or fix the directory's owner/mode"
        )
    return VaultPermissionDenied(
        f"permission denied: this user (uid {uid}) cannot {access} vault file {path}{_owner_and_mode(path)}; "
        "run as the user who owns it, or fix its owner/mode"
    )


def _sqlite_code(exc: sqlite3.Error) -> int | None:
    """The primary result code (Python 3.11+ carries it; 3.10 only has the message)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    text = str(exc).lower()
    for needle, primary in (
        ("database or disk is full", SQLITE_FULL),
        ("readonly database", SQLITE_READONLY),
        ("read-only", SQLITE_READONLY),
        ("file is not a database", SQLITE_NOTADB),
        ("malformed", SQLITE_CORRUPT),
        ("unable to open database", SQLITE_CANTOPEN),
        ("disk i/o error", SQLITE_IOERR),
        ("locked", SQLITE_BUSY),
        ("busy", SQLITE_BUSY),
    ):
        if needle in text:
            return primary
    return None


def _unreadable(path: Path) -> bool:
    return path.exists() and not os.access(path, os.R_OK)


def _unwritable(path: Path) -> bool:
    return path.exists() and not os.access(path, os.W_OK)


def filesystem_read_only(path: Path) -> bool:
    """True when the filesystem holding `path` (or its directory) is mounted read-only."""
    target = path if path.exists() else path.parent
    try:
        return bool(os.statvfs(target).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def no_space_left(path: Path) -> bool:
    """SQLite reports a full disk as SQLITE_FULL when a write fails, but as an I/O or
    cannot-open error when it cannot even create its -wal/-shm files."""
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def from_sqlite(exc: sqlite3.Error, path: Path) -> VaultError:
    code = _sqlite_code(exc)
    if code in (SQLITE_IOERR, SQLITE_CANTOPEN) and no_space_left(path):
        return disk_full(path)
    if code == SQLITE_FULL:
        return disk_full(path)
    if code == SQLITE_READONLY:
        if filesystem_read_only(path):
            return read_only(path, "its filesystem is mounted read-only")
        if _unwritable(path):
            return read_only(path, "the file is not writable by this user")
        return read_only(path)
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return damaged(path, f"SQLite reports: {exc}")
    if code in (SQLITE_CANTOPEN, SQLITE_PERM, SQLITE_AUTH):
        for candidate in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
            if _unreadable(candidate):
                return permission_denied(candidate, "read")
            if _unwritable(candidate) and not filesystem_read_only(path):
                return permission_denied(candidate, "write")
        if filesystem_read_only(path):
            return read_only(path, "its filesystem is mounted read-only")
        return VaultLocked(f"cannot open vault file {path}: {exc}")
    if code in (SQLITE_BUSY, SQLITE_LOCKED):
        return VaultLocked(f"vault {path} is busy (another process holds a lock); retry: {exc}")
    if code == SQLITE_IOERR:
        if filesystem_read_only(path):
            return read_only(path, "its filesystem is mounted read-only")
        return VaultLocked(f"I/O error on vault file {path} ({exc}); check the disk; nothing was changed")
    return VaultError(f"the vault {path} refused the operation: {exc}; nothing was changed")


def from_os(exc: OSError, path: Path | str | None = None) -> VaultError:
    where = Path(exc.filename) if exc.filename else Path(path or "?")
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return disk_full(where)
    if exc.errno == errno.EROFS:
        return read_only(where, "its filesystem is mounted read-only")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return permission_denied(where, "access")
    return VaultLocked(f"cannot use vault file {where}: {exc.strerror or exc}")
