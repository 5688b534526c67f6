"""`Secret`: a credential value that does not show itself by accident."""

from __future__ import annotations

import hmac

MASK = "********"


class Secret:
    """A value fetched in direct mode. `repr`, `str` and f-strings show only the name.

    `.reveal()` returns the value. A `Secret` refuses pickling and copying into JSON, so
    it cannot be written to disk or sent elsewhere without an explicit `.reveal()`.
    """

    __slots__ = ("_name", "_value")
    _name: str
    _value: str

    def __init__(self, name: str, value: str):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_value", value)

    @property
    def name(self) -> str:
        return self._name

    def reveal(self) -> str:
        """The value itself. Anything you print or return from a cell is scrubbed, but be careful."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._name!r}, {MASK!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython's pretty printer
        printer.text(repr(self))

    def __setattr__(self, key, value):
        raise AttributeError("Secret is read-only")

    def __delattr__(self, key):
        raise AttributeError("Secret is read-only")

    def __eq__(self, other) -> bool:
        if isinstance(other, Secret):
            return self._name == other._name and hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._name))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):
        raise TypeError(f"{self!r} cannot be pickled; use .reveal() if you really mean to store the value")

    def __reduce_ex__(self, protocol):
        return self.__reduce__()

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo) -> Secret:
        return self
