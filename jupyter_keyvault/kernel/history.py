"""Keep secrets out of IPython's history: the SQLite database and, where possible, memory.

`install(ip)` wraps four methods of the shell's `HistoryManager` (as instance attributes):

- `store_inputs(line_num, source, source_raw)`: the cell's source is scrubbed before IPython
  keeps it, so `In`, `_i`, `_iN`, `%history` and the database cache only ever see the
  redacted text (the cell itself still runs as typed: IPython compiles its own copy).
- `store_output(line_num)`: the text repr kept for `db_log_output` is scrubbed.
- `_writeout_input_cache(conn)` / `_writeout_output_cache(conn)`: the rows are scrubbed again
  right before they are written to the database, with whatever the scrubber knows by then
  (a value registered later in the same cell is caught here when the write happens after).

`Out` / `_` keep the objects themselves; only text can be scrubbed.

A value the kernel was never given (a key pasted into a cell that has no provider pattern)
is found by its fingerprints: keyed hashes of its chunks that the server computes per kernel
(`scrub.history_fingerprints`); `set_fingerprints(ip, document)` hands them to the hook.
"""

from __future__ import annotations

from typing import Any

from .. import scrub as _scrub

__all__ = ["install", "installed", "set_fingerprints", "uninstall"]

WITHHELD = "# [keyvault: history entry withheld because it could not be scrubbed]"
_METHODS = ("store_inputs", "store_output", "_writeout_input_cache", "_writeout_output_cache")


class _HistoryHook:
    def __init__(self, hm: Any, scrubber: _scrub.Scrubber):
        self.hm = hm
        self.scrubber = scrubber
        self.enabled = True
        self.fingerprints: _scrub.FingerprintMatcher | None = None
        self.originals = {name: getattr(hm, name) for name in _METHODS}

    def clean(self, text: Any) -> Any:
        if not self.enabled or not isinstance(text, str) or not text:
            return text
        try:
            text = self.scrubber.scrub(text)
            return self.fingerprints.scrub(text) if self.fingerprints is not None else text
        except Exception:  # noqa: BLE001 - never persist in clear, never break the shell
            return WITHHELD

    def store_inputs(self, line_num, source, source_raw=None):
        if source_raw is None:
            source_raw = source
        return self.originals["store_inputs"](line_num, self.clean(source), self.clean(source_raw))

    def store_output(self, line_num):
        reprs = getattr(self.hm, "output_hist_reprs", None)
        if self.enabled and isinstance(reprs, dict) and line_num in reprs:
            reprs[line_num] = self.clean(reprs[line_num])
        return self.originals["store_output"](line_num)

    # Called by writeout_cache with the cache's lock held.
    def _writeout_input_cache(self, conn):
        if self.enabled:
            cache = self.hm.db_input_cache
            cache[:] = [(row[0], *(self.clean(v) for v in row[1:])) for row in cache]
        return self.originals["_writeout_input_cache"](conn)

    def _writeout_output_cache(self, conn):
        if self.enabled:
            cache = self.hm.db_output_cache
            cache[:] = [(row[0], *(self.clean(v) for v in row[1:])) for row in cache]
        return self.originals["_writeout_output_cache"](conn)


def _hook_of(hm: Any) -> _HistoryHook | None:
    hook = getattr(hm, "_keyvault_history_hook", None) if hm is not None else None
    return hook if isinstance(hook, _HistoryHook) else None


def installed(ip: Any) -> bool:
    hook = _hook_of(getattr(ip, "history_manager", None))
    return hook is not None and hook.enabled


def install(ip: Any, scrubber: _scrub.Scrubber | None = None) -> bool:
    """Scrub what this shell's history keeps and persists. False when it has no history manager."""
    hm = getattr(ip, "history_manager", None)
    if hm is None or not all(hasattr(hm, name) for name in _METHODS):
        return False
    hook = _hook_of(hm)
    if hook is not None:
        hook.enabled = True
        if scrubber is not None:
            hook.scrubber = scrubber
        return True
    hook = _HistoryHook(hm, scrubber or _scrub.default_scrubber)
    for name in _METHODS:
        setattr(hm, name, getattr(hook, name))
    hm._keyvault_history_hook = hook
    return True


def uninstall(ip: Any) -> bool:
    hm = getattr(ip, "history_manager", None)
    hook = _hook_of(hm)
    if hm is None or hook is None:  # without a history manager there is no hook either
        return False
    hook.enabled = False
    if all(getattr(hm, name) == getattr(hook, name) for name in _METHODS):
        for name in _METHODS:
            if name in hm.__dict__:
                del hm.__dict__[name]
            if getattr(hm, name) != hook.originals[name]:
                setattr(hm, name, hook.originals[name])
        del hm._keyvault_history_hook
    return True


def set_fingerprints(ip: Any, document: dict | None) -> int:
    """Give the installed history hook the server's fingerprints of stored values (a document
    from `scrub.history_fingerprints`; None clears them). Returns how many chunks it holds.
    Raises ValueError for a malformed document, RuntimeError when the hook is not installed."""
    hook = _hook_of(getattr(ip, "history_manager", None))
    if hook is None:
        raise RuntimeError("the keyvault history hook is not installed in this shell")
    hook.fingerprints = _scrub.FingerprintMatcher(document) if document is not None else None
    return len(hook.fingerprints) if hook.fingerprints is not None else 0
