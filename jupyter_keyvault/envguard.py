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
            return wiped
        seen.add(value)
        length = strlen(value)
        if length == 0 or ctypes.string_at(value, length) == b"*" * length:
            return wiped
        ctypes.memset(value, ord("*"), length)
        wiped = True
