"""The piggyback directory: the web portal's sessions in a SQLite file.

Method ``piggyback`` accepts a mail login when the client's IP address
has a live session on a web portal. The portal writes its sessions into
the SQLite database that ``[piggyback] database`` names, in this table::

    CREATE TABLE web_sessions (
        username TEXT NOT NULL,        -- the portal's user name
        client_address TEXT NOT NULL,  -- the client's IP address
        expires_at INTEGER NOT NULL    -- end of the session, Unix seconds
    );

``mailproxy piggyback init`` creates the table and an index on
``client_address``. A check passes when a row has the client's address and
an ``expires_at`` later than now. When the login already has a VPN
identity (the user name of the client certificate, or with method ``aaa``
the VPN user name that the client typed), the row's ``username`` must also
equal it, compared case-insensitively. Expired rows are ignored, so the
portal may delete them whenever it likes.

Write ``client_address`` in the form that Python's :mod:`ipaddress`
prints: dotted decimal for IPv4 (``192.0.2.10``), the RFC 5952 compressed
form for IPv6 (``2001:db8::10``). An IPv4 client also matches rows written
as an IPv4-mapped IPv6 address (``::ffff:192.0.2.10``), and a client that
reaches an IPv6 socket through such an address matches IPv4 rows.

The proxy opens the file read-only for each check, in a worker thread, so
that a slow disk or a portal that holds a write lock does not stop the
event loop. A missing file or table fails the login with the reason in the
log, and the proxy goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .blocking import BlockingRunner

_log = logging.getLogger(__name__)

#: Seconds that one check may take when ``[piggyback] timeout`` is absent.
DEFAULT_TIMEOUT: Final = 5.0

#: Web-session lookups that may run at once; more wait their turn.
PIGGYBACK_WORKERS: Final = 4

#: The statements of ``mailproxy piggyback init``.
SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS web_sessions ("
    " username TEXT NOT NULL,"
    " client_address TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS web_sessions_by_address"
    " ON web_sessions (client_address, expires_at)",
)

_LIVE_ROWS: Final = (
    "FROM web_sessions WHERE client_address IN (?, ?) AND expires_at > ?"
)
_ANY_USER_QUERY: Final = f"SELECT 1 {_LIVE_ROWS} LIMIT 1"
_USER_QUERY: Final = f"SELECT 1 {_LIVE_ROWS} AND casefold(username) = ? LIMIT 1"
_INSERT: Final = (
    "INSERT INTO web_sessions (username, client_address, expires_at) VALUES (?, ?, ?)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PiggybackConfig:
    """The top-level ``[piggyback]`` table.

    :param database: the SQLite file of web sessions.
    :param timeout: seconds that one check may take.
    """

    database: Path
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class PiggybackResult:
    """The result of one piggyback check.

    :param success: whether a matching live web session exists.
    :param reason: why the check failed, for the log.
    """

    success: bool
    reason: str = ""


class _Match(enum.Enum):
    USER = "user"
    OTHER_USER = "other user"
    NONE = "none"


def normalize_address(text: str) -> str:
    """Return IP address ``text`` as :mod:`ipaddress` prints it.

    An IPv4-mapped IPv6 address becomes the IPv4 address.

    :raises ValueError: when ``text`` is no IP address.
    """
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _stored_forms(address: str) -> tuple[str, str]:
    # Web servers on a dual-stack socket see IPv4 clients as ::ffff:a.b.c.d,
    # so a portal may have written that form.
    if isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address):
        return address, f"::ffff:{address}"
    return address, address


#: A value that SQLite passes to a function defined in Python.
_SqlValue = str | bytes | int | float | None


def _casefold(value: _SqlValue) -> _SqlValue:
    return value.casefold() if isinstance(value, str) else value


class PiggybackDirectory:
    """The web sessions database that method ``piggyback`` checks.

    :param database: the SQLite file; it need not exist yet.
    :param timeout: seconds that one check may take, lock waits included.
    :param clock: returns the current Unix time, replaceable in tests.
    """

    def __init__(
        self,
        database: Path,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self._timeout = timeout
        self._clock = clock
        self._last_error: str | None = None
        self._runner = BlockingRunner("piggyback", PIGGYBACK_WORKERS)

    async def check(self, client_address: str, identity: str | None) -> PiggybackResult:
        """Look for a live web session of ``client_address`` in a worker thread.

        :param identity: the VPN identity that the row's user name must
            match, or ``None`` to accept any user.
        :returns: a failure with the reason when no row matches, when the
            database cannot be read, or when the check times out.
        """
        try:
            address = normalize_address(client_address)
        except ValueError:
            reason = f"client address {client_address!r} is no IP address"
            return PiggybackResult(success=False, reason=reason)
        now = int(self._clock())
        try:
            async with asyncio.timeout(self._timeout):
                match = await self._runner.run(self._lookup, address, identity, now)
        except TimeoutError:
            return self._database_failed(f"timed out after {self._timeout:g} s")
        except sqlite3.Error as error:
            return self._database_failed(str(error))
        self._last_error = None
        return _result(match, address, identity)

    def _lookup(self, address: str, identity: str | None, now: int) -> _Match:
        live_rows = (*_stored_forms(address), now)
        with contextlib.closing(self._connect()) as connection:
            if identity is not None:
                user_rows = (*live_rows, identity.casefold())
                if connection.execute(_USER_QUERY, user_rows).fetchone():
                    return _Match.USER
            if connection.execute(_ANY_USER_QUERY, live_rows).fetchone() is None:
                return _Match.NONE
        return _Match.OTHER_USER if identity is not None else _Match.USER

    def _connect(self) -> sqlite3.Connection:
        # mode=ro fails on a missing file instead of creating an empty one.
        uri = f"{self.database.absolute().as_uri()}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, timeout=self._timeout)
        connection.create_function("casefold", 1, _casefold, deterministic=True)
        return connection

    def _database_failed(self, error: str) -> PiggybackResult:
        reason = f"cannot read piggyback database {self.database}: {error}"

        # Every failed login logs its reason anyway, so the error line for
        # the operator comes once until the error changes or a check works.
        if error != self._last_error:
            _log.error("%s", reason)
            self._last_error = error
        return PiggybackResult(success=False, reason=reason)


def _result(match: _Match, address: str, identity: str | None) -> PiggybackResult:
    if match is _Match.USER:
        return PiggybackResult(success=True)
    if match is _Match.OTHER_USER:
        reason = (
            f"the live web sessions of {address} belong to users other "
            f"than {identity!r}"
        )
        return PiggybackResult(success=False, reason=reason)
    return PiggybackResult(success=False, reason=f"no live web session of {address}")


def create_database(path: Path) -> bool:
    """Create ``path`` with the ``web_sessions`` table, unless it has one.

    :returns: whether the table was created.
    :raises sqlite3.Error: when the file cannot be opened or is no database.
    """
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            ("web_sessions",),
        ).fetchone()
        for statement in SCHEMA:
            connection.execute(statement)
    return exists is None


def add_web_session(
    path: Path, *, username: str, client_address: str, expires_at: int
) -> None:
    """Insert one web session into the existing database at ``path``.

    :param client_address: an IP address, stored as :func:`normalize_address`
        returns it.
    :param expires_at: the end of the session in Unix seconds.
    :raises ValueError: when ``client_address`` is no IP address.
    :raises sqlite3.Error: when the file or the table does not exist.
    """
    address = normalize_address(client_address)

    # mode=rw, so that a mistyped path fails instead of creating a file.
    uri = f"{path.absolute().as_uri()}?mode=rw"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection, connection:
        connection.execute(_INSERT, (username, address, expires_at))
