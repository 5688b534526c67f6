"""A module imported on first use instead of at import time.

For what the server process loads with the extension but needs only once a request uses it:
aiohttp (about 8 MiB of the server's memory, and 0.1 s) is needed by the first proxied request, not
by a server that never proxies. tests/test_architecture.py checks that the extension's load leaves
the modules in LAZY_IN_SERVER unimported.

Not the standard library's `LazyLoader`: that one puts a placeholder in `sys.modules` for everyone in
the process, and on Python 3.11 two threads touching it first at once can see it half loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

# What the server extension imports lazily; its load must not import them.
LAZY_IN_SERVER = ("aiohttp",)


class LazyModule:
    """Stands for module `name`: the first attribute read imports it (with the import system's own
    locking), later reads go to the module. A module that is not installed fails at once, here."""

    def __init__(self, name: str):
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module else ''}>"
