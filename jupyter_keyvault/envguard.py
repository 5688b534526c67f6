"""Keep secrets out of the environment that kernels and terminals inherit."""

from __future__ import annotations

import fnmatch
import os
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
        del environ[name]
    return sorted(removed)


def snapshot_environ() -> dict[str, str]:
    return dict(os.environ)
