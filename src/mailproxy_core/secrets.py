"""A wrapper that keeps secret text out of ``repr``, ``str`` and logs."""

from __future__ import annotations

import hmac
from typing import Final

_REDACTED: Final = "<redacted>"


class Secret:
    """A password or token whose value is shown only through :meth:`reveal`.

    ``repr`` and ``str`` print ``<redacted>``, so a secret inside an event,
    an exception or a log record never leaks by accident. Equality compares
    in constant time.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret text."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_REDACTED!r})"

    def __str__(self) -> str:
        return _REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)
