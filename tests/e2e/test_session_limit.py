"""The limit on connections that have not logged in, seen by real clients.

Each test opens one session that logs in for real and
:data:`IDLE_CONNECTIONS` TLS connections that only read the greeting, with
``outstanding`` set to :data:`LIMIT`. The proxy must close exactly the
oldest idle connections beyond the limit and leave the logged-in session
alone, wherever it sits in accept order.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from .dovecot import DovecotServer
from .proxyfixtures import (
    CLIENT_TIMEOUT,
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    RawClient,
    RunningProxy,
    StartProxy,
)

pytestmark = pytest.mark.e2e

LIMIT = 20
IDLE_CONNECTIONS = 25

#: Seconds that an evicted connection may take to reach end of stream.
EOF_TIMEOUT = 5.0

#: Accept positions of the logged-in session: before every idle connection,
#: and after the first 12 of them, while the limit still has room.
POSITIONS = pytest.mark.parametrize("position", [0, 12], ids=["first", "middle"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect:
    """The bytes that idle connections of one protocol send and expect.

    :ivar probe: A command that the proxy replies to before login.
    :ivar probe_end: The bytes that end the reply to :attr:`probe`.
    :ivar probe_reply: The prefix of a successful reply to :attr:`probe`.
    :ivar goodbye: The prefix of the line the proxy sends before it closes.
    """

    probe: bytes
    probe_end: bytes
    probe_reply: bytes
    goodbye: bytes


DIALECTS = {
    "imap4s": Dialect(
        probe=b"p NOOP\r\n", probe_end=b"\r\n", probe_reply=b"p OK", goodbye=b"* BYE "
    ),
    # CAPA, because RFC 1939 allows NOOP only after login.
    "pop3s": Dialect(
        probe=b"CAPA\r\n", probe_end=b"\r\n.\r\n", probe_reply=b"+OK", goodbye=b"-ERR "
    ),
    "smtps": Dialect(
        probe=b"NOOP\r\n", probe_end=b"\r\n", probe_reply=b"250", goodbye=b"421 "
    ),
}


def listener_changes(
    protocol: str, dovecot: DovecotServer, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """Build the configuration changes that set the limit on one listener.

    The base configuration already has the IMAP4S listener, and POP3S or
    SMTPS join it.

    :param protocol: The listener's section name.
    :param dovecot: The server behind IMAP4S and POP3S.
    :param request: Provides the ``postfix`` fixture, only for SMTPS.
    :returns: The changes for :func:`~.proxyfixtures.start_proxy`.
    """
    if protocol == "imap4s":
        return {"imap4s": {"outstanding": LIMIT}}

    if protocol == "pop3s":
        server = {"host": dovecot.host, "port": dovecot.pop3_port, "tls": "none"}
    else:
        postfix = request.getfixturevalue("postfix")
        server = {"host": postfix.host, "port": postfix.submission_port, "tls": "none"}
    table = {
        "listen": "127.0.0.1:0",
        "authentication": ["aaa", "mailhost"],
        "authentication_server_group": "LOCAL",
        "default_server": "mail",
        "outstanding": LIMIT,
        "servers": {"mail": server},
    }
    return {protocol: table}


def listener_context(proxy: RunningProxy, protocol: str) -> ssl.SSLContext:
    """Return a client context that trusts the certificate of one listener.

    :param proxy: The running proxy.
    :param protocol: The listener's section name, such as ``pop3s``.
    :returns: The context.
    """

    def certificate() -> str:
        for listener in proxy.server.listeners:
            if listener.config.protocol == protocol:
                pair = listener.tls.self_signed
                assert pair is not None
                return pair.certificate.decode("ascii")
        raise LookupError(f"no {protocol} listener")

    return ssl.create_default_context(cadata=proxy.call(certificate))


def counted(proxy: RunningProxy, protocol: str) -> int:
    """Return how many connections of one listener count toward its limit.

    :param proxy: The running proxy.
    :param protocol: The listener's section name.
    :returns: The count that the listener's session limit keeps.
    """

    def read() -> int:
        for listener in proxy.server.listeners:
            if listener.config.protocol == protocol:
                return listener.limit.counted
        raise LookupError(f"no {protocol} listener")

    return proxy.call(read)


def open_idle(proxy: RunningProxy, protocol: str, context: ssl.SSLContext) -> RawClient:
    """Open a TLS connection, finish the handshake and read the greeting line.

    :param proxy: The running proxy.
    :param protocol: The listener to connect to.
    :param context: A context that trusts the listener's certificate.
    :returns: The connection, which then stays silent.
    """
    address = (proxy.host, proxy.port_of(protocol))
    sock = socket.create_connection(address, CLIENT_TIMEOUT)
    client = RawClient(context.wrap_socket(sock, server_hostname=proxy.host))
    client.read_until(b"\r\n")
    return client


class LoggedIn:
    """A session that logged in through the proxy with a standard client.

    :param login: Opens the client and logs in.
    :param check: Runs a command after login and asserts its success.
    :param close: Ends the session.
    """

    def __init__(
        self,
        login: Callable[[], object],
        check: Callable[[object], None],
        close: Callable[[object], None],
    ) -> None:
        self._client = login()
        self._check = check
        self._close = close

    def check(self) -> None:
        """Assert that the session still works."""
        self._check(self._client)

    def close(self) -> None:
        """End the session."""
        self._close(self._client)


def imap_session(
    proxy: RunningProxy, context: ssl.SSLContext, dovecot: DovecotServer
) -> LoggedIn:
    """Log in over IMAP4S; the check runs NOOP and SELECT.

    :param proxy: The running proxy.
    :param context: A context that trusts the listener's certificate.
    :param dovecot: The server whose mail password to use.
    :returns: The session.
    """

    def login() -> imaplib.IMAP4_SSL:
        port = proxy.port_of("imap4s")
        imap = imaplib.IMAP4_SSL(
            proxy.host, port, ssl_context=context, timeout=CLIENT_TIMEOUT
        )
        imap.login(*combined(dovecot))
        return imap

    def check(client: object) -> None:
        assert isinstance(client, imaplib.IMAP4)
        status, reply = client.noop()
        assert status == "OK", reply
        status, count = client.select("INBOX", readonly=True)
        assert status == "OK", count
        assert count == [str(len(dovecot.messages)).encode()]

    def close(client: object) -> None:
        assert isinstance(client, imaplib.IMAP4)
        client.logout()

    return LoggedIn(login, check, close)


def pop3_session(
    proxy: RunningProxy, context: ssl.SSLContext, dovecot: DovecotServer
) -> LoggedIn:
    """Log in over POP3S with USER and PASS; the check runs STAT.

    :param proxy: The running proxy.
    :param context: A context that trusts the listener's certificate.
    :param dovecot: The server whose mail password to use.
    :returns: The session.
    """

    def login() -> poplib.POP3_SSL:
        port = proxy.port_of("pop3s")
        pop = poplib.POP3_SSL(proxy.host, port, context=context, timeout=CLIENT_TIMEOUT)
        user, password = combined(dovecot)
        pop.user(user)
        pop.pass_(password)
        return pop

    def check(client: object) -> None:
        assert isinstance(client, poplib.POP3)
        count, _size = client.stat()
        assert count == len(dovecot.messages)

    def close(client: object) -> None:
        assert isinstance(client, poplib.POP3)
        client.quit()

    return LoggedIn(login, check, close)


def smtp_session(
    proxy: RunningProxy, context: ssl.SSLContext, dovecot: DovecotServer
) -> LoggedIn:
    """Log in over SMTPS with AUTH; the check runs NOOP.

    :param proxy: The running proxy.
    :param context: A context that trusts the listener's certificate.
    :param dovecot: The server whose mail password to use.
    :returns: The session.
    """

    def login() -> smtplib.SMTP_SSL:
        port = proxy.port_of("smtps")
        smtp = smtplib.SMTP_SSL(
            proxy.host, port, context=context, timeout=CLIENT_TIMEOUT
        )
        smtp.login(*combined(dovecot))
        return smtp

    def check(client: object) -> None:
        assert isinstance(client, smtplib.SMTP)
        code, text = client.noop()
        assert code == 250, text

    def close(client: object) -> None:
        assert isinstance(client, smtplib.SMTP)
        client.quit()

    return LoggedIn(login, check, close)


SESSIONS = {"imap4s": imap_session, "pop3s": pop3_session, "smtps": smtp_session}


def combined(dovecot: DovecotServer) -> tuple[str, str]:
    """Return the combined user name and password for ``mailuser``.

    :param dovecot: The server whose mail password to use.
    :returns: ``vpnuser:mailuser`` and ``vpnpass:mailpass``.
    """
    return f"{VPN_USER}:{MAIL_USER}", f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"


@pytest.fixture
def limited_proxy(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    request: pytest.FixtureRequest,
    protocol: str,
) -> RunningProxy:
    """Return a proxy whose ``protocol`` listener has the limit :data:`LIMIT`.

    :param start_proxy: The fixture function.
    :param dovecot: The server behind IMAP4S and POP3S.
    :param request: Provides the ``postfix`` fixture for SMTPS.
    :param protocol: The test's listener, from its parameters.
    :returns: The running proxy.
    """
    return start_proxy(listener_changes(protocol, dovecot, request))


@pytest.fixture
def exit_stack() -> Iterator[ExitStack]:
    """Return an exit stack that closes the test's connections at the end.

    :returns: A generator that yields the stack.
    """
    with ExitStack() as stack:
        yield stack


@pytest.mark.parametrize("protocol", ["imap4s", "pop3s", "smtps"])
@POSITIONS
def test_limit_evicts_oldest_idle(
    limited_proxy: RunningProxy,
    dovecot: DovecotServer,
    exit_stack: ExitStack,
    protocol: str,
    position: int,
) -> None:
    dialect = DIALECTS[protocol]
    context = listener_context(limited_proxy, protocol)
    idle: list[RawClient] = []
    session: LoggedIn | None = None

    for index in range(IDLE_CONNECTIONS):
        if index == position:
            session = SESSIONS[protocol](limited_proxy, context, dovecot)
            exit_stack.callback(session.close)
        client = open_idle(limited_proxy, protocol, context)
        exit_stack.enter_context(client)
        idle.append(client)
    assert session is not None

    evicted_count = IDLE_CONNECTIONS - LIMIT
    for number, client in enumerate(idle[:evicted_count], start=1):
        client.sock.settimeout(EOF_TIMEOUT)
        rest = client.read_to_end()
        assert rest.startswith(dialect.goodbye), (number, rest)

    for number, client in enumerate(idle[evicted_count:], start=evicted_count + 1):
        client.send(dialect.probe)
        reply = client.read_until(dialect.probe_end)
        assert reply.startswith(dialect.probe_reply), (number, reply)

    assert counted(limited_proxy, protocol) == LIMIT
    session.check()
