"""Keep secrets out of the environment that kernels and terminals inherit."""

from __future__ import annotations

import ctypes
import fnmatch
import os
import sys
from typing import Iterable, Mapping, MutableMapping


def is_secret_env_name(name: str, patterns: Iterable[str], credential_names: Iterable[str], allow: Iterable[str] = ()) -> bool:
    if name in allow:
        return False
    if name in credential_names:
        return True
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def filtered_env(env: Mapping[str, str], patterns: Iterable[str], credential_names: Iterable[str],
                 allow: Iterable[str] = ()) -> dict[str, str]:
    patterns, names, allow = list(patterns), set(credential_names), set(allow)
    return {k: v for k, v in env.items() if not is_secret_env_name(k, patterns, names, allow)}


def remove_secret_env(environ: MutableMapping[str, str], patterns: Iterable[str], credential_names: Iterable[str],
                      allow: Iterable[str] = ()) -> list[str]:
    """Delete secret variables from `environ` in place; returns the removed names (never values)."""
    keep = filtered_env(environ, patterns, credential_names, allow)
    removed = [k for k in list(environ) if k not in keep]
    for name in removed:
        if environ is os.environ:
            wipe_process_env_value(name)
        del environ[name]
    return sorted(removed)


def wipe_process_env_value(name: str) -> bool:
    """Overwrite a variable's value in this process's C environment, in place.

    unsetenv() only unlinks the entry: the original bytes stay in the block that
    /proc/<pid>/environ shows to every process of the same user (a terminal's shell can
    `cat /proc/$PPID/environ`). Linux only; True when a value was overwritten."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        getenv, strlen = libc.getenv, libc.strlen
    except (OSError, AttributeError):
        return False
    getenv.restype, getenv.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    strlen.restype, strlen.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    wiped = False
    seen: set[int] = set()
    while True:  # a name may appear more than once in a hand-built environment
        value = getenv(os.fsencode(name))
        if not value or value in seen:
            break
        seen.add(value)
        length = strlen(value)
        if length == 0 or ctypes.string_at(value, length) == b"*" * length:
            break
        ctypes.memset(value, ord("*"), length)
        wiped = True
    # setenv() may have moved the live value elsewhere: the block the process started with keeps the original.
    return wipe_environ_block(name) or wiped


def wipe_live_value(name: str, value: str) -> bool:
    """Overwrite `name`'s current C-environment value in place when it is exactly `value` (one this
    process exported, e.g. by `keyvault.env`), before the caller unsets or replaces it: unsetenv()
    would leave the bytes in the heap. Linux only; True when bytes changed."""
    if not sys.platform.startswith("linux") or not value:
        return False
    try:
        libc = ctypes.CDLL(None)
        getenv = libc.getenv
    except (OSError, AttributeError):
        return False
    getenv.restype, getenv.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    address = getenv(os.fsencode(name))
    encoded = os.fsencode(value)
    if not address or ctypes.string_at(address, len(encoded) + 1) != encoded + b"\0":
        return False
    ctypes.memset(address, ord("*"), len(encoded))
    return True


def wipe_environ_block(name: str, value: str | None = None) -> bool:
    """Overwrite `name`'s value in the environment block the kernel gave this process at exec
    (what /proc/<pid>/environ shows), even after os.environ.pop() or unsetenv() unlinked it.
    With `value`, only an entry holding exactly that value. Linux only; True when bytes changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # Fields 50 and 51 of proc(5), counted after the ")" that ends the command name.
        start, end = int(fields[47]), int(fields[48])
    except (OSError, IndexError, ValueError):
        return False
    if not 0 < start < end or end - start > 1 << 24:
        return False
    block = ctypes.string_at(start, end - start)
    prefix = os.fsencode(name) + b"="
    wiped, at = False, 0
    while True:
        at = block.find(prefix, at)
        if at < 0:
            return wiped
        if at == 0 or block[at - 1] == 0:  # the start of an entry, not the middle of another one
            value_at = at + len(prefix)
            stop = block.find(b"\0", value_at)
            stop = len(block) if stop < 0 else stop
            current = block[value_at:stop]
            if current.strip(b"*") and (value is None or current == os.fsencode(value)):
                ctypes.memset(start + value_at, ord("*"), stop - value_at)
                wiped = True
        at += len(prefix)
