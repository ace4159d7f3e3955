"""A fake IMAP upstream and helpers that run a proxy listener in a test.

:class:`FakeImapServer` is just enough of an IMAP server for the proxy's
upstream login: a greeting with capabilities, ``CAPABILITY``, ``LOGIN``
against one user name and password, ``LOGOUT``, and ``OK`` for anything
else. ``behaviour`` switches it into failure modes that Dovecot cannot
be made to show on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailproxy_core.proxy.aaa import AaaGroup, AaaResult
from mailproxy_core.proxy.accounting import Accounting
from mailproxy_core.proxy.config import parse_config
from mailproxy_core.proxy.server import Listener
from mailproxy_core.proxy.tls import server_tls

MAIL_USER = "mailuser"
MAIL_PASSWORD = "mailpass"
VPN_USER = "vpnuser"
VPN_PASSWORD = "vpnpass"

#: Seconds that a test waits for any single reply.
REPLY_TIMEOUT = 5.0

GREETING = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] fake ready\r\n"


@dataclass(kw_only=True)
class FakeImapServer:
    """A scripted IMAP upstream on 127.0.0.1.

    :ivar behaviour: ``normal``, ``silent`` (never greets) or ``close``
        (closes the connection on LOGIN).
    :ivar port: the bound port, once started.
    :ivar received: every line received, for assertions.
    """

    behaviour: str = "normal"
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listening socket."""
        if self._server is not None:
            self._server.close()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            if self.behaviour == "silent":
                await reader.read()
                return
            writer.write(GREETING)
            while line := await reader.readline():
                self.received.append(line)
                if not await self._answer(line, writer):
                    break
                await writer.drain()
        writer.close()

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter) -> bool:
        tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
        command = rest.split(b" ", 1)[0].upper()
        if command == b"LOGIN":
            return self._login(tag, rest, writer)
        if command == b"LOGOUT":
            writer.write(b"* BYE bye\r\n" + tag + b" OK LOGOUT done\r\n")
            return False
        writer.write(tag + b" OK " + command + b" done\r\n")
        return True

    def _login(self, tag: bytes, rest: bytes, writer: asyncio.StreamWriter) -> bool:
        if self.behaviour == "close":
            return False
        expected = b'LOGIN "%s" "%s"' % (MAIL_USER.encode(), MAIL_PASSWORD.encode())
        if rest == expected:
            writer.write(tag + b" OK [CAPABILITY IMAP4rev1] Logged in\r\n")
        else:
            writer.write(tag + b" NO [AUTHENTICATIONFAILED] Authentication failed\r\n")
        return True


class StaticAaaGroup:
    """An AAA server group that accepts one user and can be made slow or broken.

    :param delay: seconds to wait before the result.
    :param error: an exception to raise instead of a result.
    """

    def __init__(self, *, delay: float = 0.0, error: Exception | None = None) -> None:
        self.delay = delay
        self.error = error
        self.calls = 0

    @property
    def name(self) -> str:
        """Name of the group."""
        return "STATIC"

    async def authenticate(self, user: str, password: str) -> AaaResult:
        """Accept ``vpnuser`` / ``vpnpass`` after :attr:`delay` seconds."""
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        if (user, password) == (VPN_USER, VPN_PASSWORD):
            return AaaResult(success=True, group="staff")
        return AaaResult(success=False, reason="wrong password")


def listener_document(upstream_port: int, **imap4s: Any) -> dict[str, Any]:
    """Return a configuration whose IMAP4S listener uses the fake upstream."""
    table: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "authentication_server_group": "LOCAL",
        "default_server": "fake",
        "servers": {"fake": {"host": "127.0.0.1", "port": upstream_port}},
    }
    table.update(imap4s)
    return {
        "aaa": {"LOCAL": {"type": "local", "users_file": "unused.db"}},
        "group_policy": {"staff": {"max_sessions_per_user": 2}},
        "imap4s": table,
    }


@contextlib.asynccontextmanager
async def running_listener(
    folder: Path,
    upstream_port: int,
    aaa_group: AaaGroup,
    accounting: Accounting | None = None,
    **imap4s: Any,
) -> AsyncIterator[Listener]:
    """Run one IMAP4S listener with ``aaa_group`` until the block ends."""
    document = listener_document(upstream_port, **imap4s)
    config = parse_config(document, folder / "proxy.toml").listeners["imap4s"]
    listener = Listener(
        config,
        session_factory=config.session_factory or config.spec.session_class,
        tls=server_tls(None, None, listener="imap4s"),
        aaa_group=aaa_group,
        accounting=accounting or Accounting(),
    )
    await listener.start()
    try:
        yield listener
    finally:
        listener.stop_accepting()
        listener.abort_all("test ended")
        await listener.wait_finished(REPLY_TIMEOUT)


def client_context(listener: Listener) -> ssl.SSLContext:
    """Return a client context that trusts the listener's throwaway certificate."""
    pair = listener.tls.self_signed
    assert pair is not None
    return ssl.create_default_context(cadata=pair.certificate.decode("ascii"))


@dataclass(kw_only=True)
class Client:
    """An asyncio IMAP client connection to a listener."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def line(self) -> bytes:
        """Return the next line."""
        return await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)

    async def until(self, prefix: bytes) -> bytes:
        """Return lines up to and with the first that starts with ``prefix``."""
        lines = b""
        while True:
            line = await self.line()
            assert line, f"stream ended before {prefix!r}; got {lines!r}"
            lines += line
            if line.startswith(prefix):
                return lines

    async def send(self, data: bytes) -> None:
        """Send ``data``."""
        self.writer.write(data)
        await self.writer.drain()

    async def at_eof(self) -> bytes:
        """Read until the proxy closes and return what arrived."""
        try:
            return await asyncio.wait_for(self.reader.read(), REPLY_TIMEOUT)
        except (ConnectionResetError, ssl.SSLError):
            return b""

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()


async def connect(listener: Listener, *, tls: bool = True) -> Client:
    """Connect to ``listener``; with TLS, read nothing yet."""
    address = listener.bound_addresses()[0]
    reader, writer = await asyncio.open_connection(
        address.host,
        address.port,
        ssl=client_context(listener) if tls else None,
        server_hostname=address.host if tls else None,
    )
    return Client(reader=reader, writer=writer)


def login_line(tag: str = "a", vpn_password: str = VPN_PASSWORD) -> bytes:
    """Return a LOGIN command with the combined credentials."""
    user = f"{VPN_USER}:{MAIL_USER}"
    password = f"{vpn_password}:{MAIL_PASSWORD}"
    return f'{tag} LOGIN "{user}" "{password}"\r\n'.encode()


def quiet_asyncio() -> None:
    """Keep asyncio's own debug lines out of captured logs."""
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def state_names(listener: Listener) -> Mapping[str, str]:
    """Return the state of each open connection by id."""
    return {cid: c.state.value for cid, c in listener.connections.items()}
