"""`keyvault.get`, `env` (see envexport), `list`, `status`, `set`, `delete`, `test`."""

from __future__ import annotations

import builtins
import getpass

from .envexport import env
from .errors import InvalidRequest
from .mode import current_backend, valid_name
from .secret import Secret

__all__ = ["delete_credential", "env", "get", "list_credentials", "read_value", "set_credential", "status",
           "test_credential"]


def get(name: str) -> Secret:
    """The value of credential `name` as a masked `Secret` (direct mode; `.reveal()` gives the value)."""
    name = valid_name(name)
    found = current_backend().reveal(name)
    return Secret(name, found["value"])


def list_credentials() -> builtins.list[dict]:
    """Name, provider, type, presence and source of every credential; never a value."""
    return current_backend().list()


def status() -> dict:
    """Where credentials come from: `mode` is "server" (the Jupyter server that started this
    kernel) or "local" (this user's vault on disk; `reason` says why), plus protection details."""
    return current_backend().status()


def read_value(name: str) -> str:
    """Prompt for a value without echo (in Jupyter: the frontend's password prompt)."""
    no_stdin: type[Exception]
    try:
        from IPython.core.error import StdinNotImplementedError as no_stdin
    except ImportError:  # pragma: no cover - IPython is always there in a kernel
        no_stdin = NotImplementedError
    try:
        value = getpass.getpass(f"Value for {name} (input hidden): ")
    except no_stdin:
        raise InvalidRequest(
            "this frontend cannot prompt for input; use the Key Vault panel, or "
            f"`jupyter keyvault set {name}` in a terminal"
        ) from None
    value = (value or "").strip()
    if not value:
        raise InvalidRequest("no value given; nothing was stored")
    return value


def set_credential(name: str, *, provider: str | None = None, session: bool = False,
                   expires: str | None = None) -> dict:
    """Prompt for the value of `name` (never echoed, never in cell source) and store it. `session`:
    held in the server's memory only, gone when it stops; `expires`: a duration (8h, 7d) or an
    ISO 8601 date or time after which it is refused and destroyed."""
    name = valid_name(name)
    backend = current_backend()
    value = read_value(name)
    return backend.put(name, value, provider, session=session, expires=expires) or {"name": name}


def delete_credential(name: str) -> None:
    current_backend().delete(valid_name(name))


def test_credential(name: str) -> dict:
    """Run the provider's cheap test request with the stored key: {"ok": …, "detail"|"error": …}."""
    return current_backend().test(valid_name(name))
