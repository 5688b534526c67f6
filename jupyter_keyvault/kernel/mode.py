"""Server mode or local mode: decided per call, explicitly, and reported by `status()`."""

from __future__ import annotations

import contextlib
import threading

from .errors import InvalidRequest
from .identity import detect_identity

_override = threading.local()
_LOCAL_SETTINGS = None


def current_backend():
    """The backend for this call: the server that started this kernel, or the local vault."""
    forced = getattr(_override, "backend", None)
    if forced is not None:
        return forced
    identity, reason = detect_identity()
    if identity is not None:
        from .remote import RemoteBackend

        return RemoteBackend(identity)
    return local_backend(reason)


def local_backend(reason: str = ""):
    global _LOCAL_SETTINGS
    from .local import LocalBackend, _load_settings

    if _LOCAL_SETTINGS is None:
        _LOCAL_SETTINGS = _load_settings()
    return LocalBackend(reason, settings=_LOCAL_SETTINGS)


def reset() -> None:
    """Forget cached local settings and opened vaults (re-read config and key env vars)."""
    global _LOCAL_SETTINGS
    from .local import reset as reset_vaults

    _LOCAL_SETTINGS = None
    reset_vaults()


@contextlib.contextmanager
def use_backend(backend):
    """Run with a given backend in this thread (tests; embedding in other tools)."""
    previous = getattr(_override, "backend", None)
    _override.backend = backend
    try:
        yield backend
    finally:
        _override.backend = previous


def valid_name(name) -> str:
    from ..store import InvalidInput, validate_name

    try:
        return validate_name(name)
    except InvalidInput as exc:
        raise InvalidRequest(str(exc)) from None
