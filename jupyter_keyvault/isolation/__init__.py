"""Kernel isolation: an OS boundary (Linux Landlock) between notebook code and the server's secrets.

No tornado / jupyter_server imports here: the server wires it in (see docs/isolation.md).
"""

from __future__ import annotations

import re

from .landlock import abi_version, availability, detect, set_non_dumpable
from .policy import IsolationPolicy, PolicyError, build_policy, default_policy, resolve_mode


def _without_paths(note: str) -> str:
    """A note for the browser, which needs no server paths: each absolute path becomes its last part."""
    return re.sub(r"(?<![\w.])/(?:[^\s,;:'\"()/]+/)*([^\s,;:'\"()/]+)/?", r"…/\1", note)


def isolation_status(mode: str, policy: IsolationPolicy | None = None, *, with_paths: bool = True) -> dict:
    """What `status` should report about kernel isolation for `c.KeyVault.isolate_kernels = mode`.

    `enforced` is true only when new kernels will actually be confined.
    """
    found = detect(mode)
    enforced = mode in ("on", "auto") and found.abi > 0
    if mode == "off":
        detail = "off by configuration: kernel code can read the vault, the runtime dir and the server's memory"
    elif enforced:
        detail = f"kernels are confined by Landlock ABI {found.abi}"
    elif mode == "on":
        detail = f"'on' but Landlock is unavailable ({found.reason}): kernels will refuse to start"
    else:
        detail = f"'auto' and Landlock is unavailable ({found.reason}): kernels run unconfined"
    return {
        "mode": mode,
        "enforced": enforced,
        "landlock_abi": found.abi,
        "detail": detail,
        "limitations": [note if with_paths else _without_paths(note) for note in (policy.notes if policy else [])],
    }


__all__ = [
    "IsolationPolicy",
    "PolicyError",
    "abi_version",
    "availability",
    "build_policy",
    "default_policy",
    "detect",
    "isolation_status",
    "resolve_mode",
    "set_non_dumpable",
]
