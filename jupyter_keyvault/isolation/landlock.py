"""A small ctypes binding to Linux Landlock (and the two prctl calls the sandbox needs).

Only what kernel isolation uses: ABI detection, a filesystem ruleset with `path_beneath`
rules, ABI 6 scoping (signals, abstract unix sockets), `restrict_self`. Network rights are
never handled, so the sandboxed process keeps its network. Stdlib only: the launcher imports
this before it execs the kernel, so it must start fast and import nothing heavy.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import sys
from dataclasses import dataclass

# Syscall numbers are the same on every architecture of the unified table (x86_64, aarch64, ...).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

PR_SET_NO_NEW_PRIVS = 38
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# Filesystem access rights (include/uapi/linux/landlock.h), with the ABI that introduced each.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2: link/rename across directories
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_ABI1_FS = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
# Rights that make sense on a regular file (a path_beneath rule on a file may hold only these).
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


def handled_fs_rights(abi: int) -> int:
    """Every filesystem right this ABI knows: all of them are handled (denied unless a rule allows)."""
    rights = _ABI1_FS
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def scopes(abi: int) -> int:
    """Scopes to restrict: the sandbox may not signal, or connect to abstract sockets of, outside processes."""
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


class LandlockError(OSError):
    """A Landlock or prctl call failed; the message names the call and the errno."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = None


def _syscall():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.prctl.restype = ctypes.c_int
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"{what} failed: {os.strerror(err)}")
    return result


@dataclass(frozen=True)
class Availability:
    abi: int  # 0 when unavailable
    reason: str  # why unavailable, or "" when available


def availability() -> Availability:
    """The Landlock ABI this kernel offers to this process, or 0 with the reason it is unavailable."""
    if sys.platform != "linux":
        return Availability(0, f"Landlock is Linux-only (this is {platform.system() or sys.platform})")
    try:
        libc = _syscall()
    except OSError as exc:  # pragma: no cover - a Linux without a loadable libc
        return Availability(0, f"cannot load libc: {exc}")
    abi = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if abi >= 1:
        return Availability(int(abi), "")
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        why = "the kernel has no Landlock support (Linux < 5.13 or CONFIG_SECURITY_LANDLOCK=n)"
    elif err == errno.EOPNOTSUPP:
        why = "Landlock is built in but disabled (add 'landlock' to the lsm= boot parameter)"
    else:
        why = f"landlock_create_ruleset failed: {os.strerror(err)}"
    return Availability(0, why)


FORCE_NO_LANDLOCK_ENV = "KEYVAULT_TEST_FORCE_NO_LANDLOCK"


def detect(mode: str) -> Availability:
    """Landlock as `isolate_kernels = mode` sees it. The test switch is honoured only for "on",
    where it can only make kernels refuse to start: under "auto" it would unconfine them."""
    if mode == "on" and os.environ.get(FORCE_NO_LANDLOCK_ENV) == "1":
        return Availability(0, f"forced unavailable by {FORCE_NO_LANDLOCK_ENV}=1 (tests only)")
    return availability()


def abi_version() -> int:
    """The Landlock ABI version (1, 2, ...), or 0 when unavailable (see `availability()` for why)."""
    return availability().abi


class Ruleset:
    """A Landlock ruleset being built: add path rules, then `restrict_self()` once."""

    def __init__(self, abi: int):
        if abi < 1:
            raise LandlockError(errno.EOPNOTSUPP, "Landlock is unavailable")
        self.abi = abi
        self.handled = handled_fs_rights(abi)
        attr = _RulesetAttr(self.handled, 0, scopes(abi))
        # An older kernel rejects a bigger struct unless the unknown tail is zero; pass what it knows.
        size = ctypes.sizeof(attr) if abi >= 6 else 16 if abi >= 4 else 8
        self.fd = _check(
            _syscall().syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)),
            "landlock_create_ruleset",
        )

    def allow(self, path: str, rights: int) -> None:
        """Allow `rights` (masked to what this ABI handles) on `path` and everything beneath it."""
        rights &= self.handled
        # O_NOFOLLOW: a rule must bind the inode named, never what a symlink points at.
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                raise LandlockError(errno.ELOOP, f"refusing a Landlock rule on a symlink: {path}")
            if not stat.S_ISDIR(mode):
                rights &= FILE_RIGHTS
            if not rights:
                return
            attr = _PathBeneathAttr(rights, fd)
            _check(
                _syscall().syscall(_SYS_ADD_RULE, self.fd, ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(attr),
                                   ctypes.c_uint32(0)),
                f"landlock_add_rule({path!r})",
            )
        finally:
            os.close(fd)

    def restrict_self(self) -> None:
        """Sets no_new_privs (required), then confines this process and every future child. Irreversible."""
        _check(_syscall().prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                                ctypes.c_ulong(0)), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(_syscall().syscall(_SYS_RESTRICT_SELF, self.fd, ctypes.c_uint32(0)), "landlock_restrict_self")
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def set_non_dumpable() -> None:
    """Marks this process non-dumpable: same-uid processes lose /proc/<pid>/mem, environ, fd, ptrace.

    The server calls this on itself. (Root, or anyone with CAP_SYS_PTRACE, is not stopped by it;
    Landlock's own ptrace rule is what stops a sandboxed kernel in that case.)
    """
    _check(_syscall().prctl(PR_SET_DUMPABLE, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0),
                            ctypes.c_ulong(0)), "prctl(PR_SET_DUMPABLE, 0)")


def is_dumpable() -> bool:
    return bool(_check(_syscall().prctl(PR_GET_DUMPABLE, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0),
                                        ctypes.c_ulong(0)), "prctl(PR_GET_DUMPABLE)"))


def drop_all_capabilities() -> int:
    """Empties the capability bounding and ambient sets, so the program this process execs gets none.

    Needed when kernels run as root: Landlock confines root too, but capabilities reach around
    it (CAP_SYS_ADMIN/CAP_PERFMON read /proc/<pid>/environ and maps of any process, CAP_SYS_MODULE,
    CAP_BPF, CAP_SYS_RAWIO read kernel or physical memory). uid 0 keeps owning its files.
    A process without CAP_SETPCAP has nothing to drop (exec under no_new_privs grants no file
    capabilities), so that case is a no-op. Returns how many capabilities were dropped.
    """
    libc = _syscall()
    # Ambient capabilities survive exec; clearing them needs no privilege.
    _check(libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    with open("/proc/self/status", encoding="ascii") as f:
        status = f.read()
    effective = int(status.split("CapEff:")[1].split()[0], 16)
    bounding = int(status.split("CapBnd:")[1].split()[0], 16)
    if not effective & (1 << 8):  # without CAP_SETPCAP the bounding set cannot change, and exec grants nothing
        return 0
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            last = int(f.read())
    except OSError:
        last = 63
    dropped = 0
    for cap in range(last + 1):
        if bounding & (1 << cap):
            _check(libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0),
                              ctypes.c_ulong(0)), f"prctl(PR_CAPBSET_DROP, {cap})")
            dropped += 1
    return dropped
