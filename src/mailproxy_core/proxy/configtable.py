"""Typed access to one TOML table, with errors that name the full key.

:class:`ConfigTable` wraps a parsed table and its dotted path, so that every
check in :mod:`mailproxy_core.proxy.config` reports the exact key, such as
``imap4s.timeouts.aaa``, the value it found and the values it accepts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Final, TypeVar

from ..errors import ConfigurationError

_T = TypeVar("_T")

_TYPE_NAMES: Final[dict[type, str]] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    dict: "a table",
    list: "a list",
}


def describe_choices(choices: Collection[str]) -> str:
    """Return ``choices`` sorted and joined with commas, for error messages."""
    return ", ".join(sorted(choices))


class ConfigTable:
    """One table of the configuration file and the keys read from it.

    :param values: the parsed table.
    :param path: the dotted key of the table, or ``""`` for the top level.
    """

    def __init__(self, values: Mapping[str, object], path: str = "") -> None:
        self._values = values
        self._path = path

    @property
    def path(self) -> str:
        """Dotted key of this table; empty for the top level."""
        return self._path

    def key(self, name: str) -> str:
        """Return the dotted key of ``name`` inside this table."""
        return f"{self._path}.{name}" if self._path else name

    def error(self, name: str, message: str) -> ConfigurationError:
        """Return a :class:`ConfigurationError` about key ``name``."""
        return ConfigurationError(f"{self.key(name)}: {message}")

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def names(self) -> Iterator[str]:
        """Iterate over the keys of this table in file order."""
        return iter(self._values)

    def raw(self, name: str) -> object:
        """Return the value of ``name``, or ``None`` when it is absent."""
        return self._values.get(name)

    def string(self, name: str, default: str | None = None) -> str | None:
        """Return a string value, or ``default`` when the key is absent.

        :raises ConfigurationError: when the value is not a string.
        """
        return self._typed(name, str, default)

    def required_string(self, name: str) -> str:
        """Return a string value that must be present and not empty.

        :raises ConfigurationError: when it is missing, empty or no string.
        """
        value = self.string(name)
        if value is None:
            raise self.error(name, "missing; this key is required")
        if not value:
            raise self.error(name, "must not be empty")
        return value

    def choice(self, name: str, choices: Collection[str], default: str) -> str:
        """Return a string value that must be one of ``choices``.

        :raises ConfigurationError: naming the allowed values.
        """
        value = self.string(name, default)
        assert value is not None
        if value not in choices:
            raise self.error(
                name, f"{value!r} is invalid; use one of: {describe_choices(choices)}"
            )
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        """Return an integer value of at least ``minimum``.

        :raises ConfigurationError: when it is no integer or too small.
        """
        value = self._typed(name, int, default)
        assert value is not None
        if value < minimum:
            raise self.error(name, f"{value} is too small; use {minimum} or more")
        return value

    def seconds(self, name: str, default: float) -> float:
        """Return a positive duration in seconds, integer or float.

        :raises ConfigurationError: when it is no number or not positive.
        """
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number of seconds, got {value!r}")
        if value <= 0:
            raise self.error(name, f"{value} is invalid; use a number above 0")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        """Return a boolean value.

        :raises ConfigurationError: when the value is not true or false.
        """
        value = self._typed(name, bool, default)
        assert value is not None
        return value

    def string_list(self, name: str) -> list[str] | None:
        """Return a list of strings; a single string becomes a one-item list.

        :raises ConfigurationError: when an item is not a string.
        """
        value = self.raw(name)
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise self.error(name, f"expected a string or a list, got {value!r}")
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise self.error(f"{name}[{index}]", f"expected a string, got {item!r}")
        return items

    def table(self, name: str) -> ConfigTable | None:
        """Return the sub-table ``name``, or ``None`` when it is absent.

        :raises ConfigurationError: when the value is not a table.
        """
        value = self._typed(name, dict, None)
        if value is None:
            return None
        return ConfigTable(value, self.key(name))

    def subtables(self) -> Iterator[tuple[str, ConfigTable]]:
        """Iterate over every key of this table as a sub-table.

        :raises ConfigurationError: when a value is not a table.
        """
        for name in list(self._values):
            table = self.table(name)
            assert table is not None
            yield name, table

    def reject_unknown(self, allowed: Collection[str]) -> None:
        """Raise for the first key of this table that is not in ``allowed``.

        Misspelt keys would otherwise be ignored in silence and leave a
        default in force that the operator meant to change.

        :raises ConfigurationError: naming the key and the known keys.
        """
        for name in self._values:
            if name not in allowed:
                raise self.error(
                    name, f"unknown key; use one of: {describe_choices(allowed)}"
                )

    def _typed(self, name: str, kind: type[_T], default: _T | None) -> _T | None:
        value = self.raw(name)
        if value is None:
            return default

        # bool is a subclass of int, but true is no port number.
        is_bool_for_int = kind is int and isinstance(value, bool)
        if not isinstance(value, kind) or is_bool_for_int:
            raise self.error(name, f"expected {_TYPE_NAMES[kind]}, got {value!r}")
        return value
