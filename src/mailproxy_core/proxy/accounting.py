"""Accounting: one record per ended session, to the log and a JSON-lines file.

Each record states who logged in, from where, to which upstream, how many
bytes went each way, how long the session lasted and how it ended. The
file, when configured, gets one JSON object per line, appended and
flushed per record, so that ``tail -f`` and log shippers see each record
at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    """The accounting record of one client connection.

    :param connection: the connection id, such as ``imap4s-17``.
    :param protocol: the listener's protocol section name.
    :param client: the client's address as ``host:port``.
    :param vpn_user: the VPN user name of the last login, or ``None``.
    :param mail_user: the mail user name of the last login, or ``None``.
    :param identity: the VPN identity of the authenticated user (the user
        name of the client certificate, else the VPN user name), or
        ``None``.
    :param methods: the authentication methods that the last login passed,
        in the order they were checked.
    :param upstream: the configured name of the upstream, or ``None``.
    :param authenticated: whether the session reached the relay.
    :param bytes_from_client: bytes received from the client.
    :param bytes_to_client: bytes sent to the client.
    :param duration: seconds from accept to close.
    :param end_reason: why the connection ended.
    """

    connection: str
    protocol: str
    client: str
    vpn_user: str | None
    mail_user: str | None
    identity: str | None
    methods: tuple[str, ...]
    upstream: str | None
    authenticated: bool
    bytes_from_client: int
    bytes_to_client: int
    duration: float
    end_reason: str


class Accounting:
    """The destination of session records.

    :param path: the JSON-lines file, or ``None`` to log the records only.
    :raises OSError: when the file cannot be opened for appending.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._file: TextIO | None = None
        if path is not None:
            self._file = path.open("a", encoding="utf-8")

    def record(self, record: SessionRecord) -> None:
        """Log ``record`` and append it to the file.

        A failed write is logged and does not end the proxy, because losing
        one accounting line is better than dropping every connection.
        """
        _log.info(
            # User names come from the client: %r escapes control characters,
            # so a name cannot forge log lines or fields.
            "[%s] accounting: client %s, user %r, mail user %r, identity %r, "
            "methods %s, upstream %r, %d bytes from client, %d bytes to client, "
            "%.1f s, %s",
            record.connection,
            record.client,
            record.vpn_user,
            record.mail_user,
            record.identity,
            ",".join(record.methods) or "none",
            record.upstream,
            record.bytes_from_client,
            record.bytes_to_client,
            record.duration,
            record.end_reason,
        )
        if self._file is None:
            return
        line = json.dumps(dataclasses.asdict(record), separators=(",", ":"))
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as error:
            _log.error(
                "[%s] cannot write accounting record: %s", record.connection, error
            )

    def close(self) -> None:
        """Close the file, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None
