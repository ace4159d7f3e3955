"""End-to-end tests of the proxy's relay: large transfers and back-pressure."""

from __future__ import annotations

import imaplib
import socket
import time
from collections.abc import Iterator

import pytest

from mailproxy_core.proxy.stream import RAW_WRITE_BUFFER, READ_BUFFER, WRITE_BUFFER
from mailproxy_core.states import ConnectionState

from .dovecot import DovecotServer
from .proxyfixtures import (
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    RawClient,
    RunningProxy,
)

pytestmark = pytest.mark.e2e

MAILBOX = "ProxyRelayTest"

#: A message far larger than every buffer of the proxy together.
MESSAGE_SIZE = 4 * 1024 * 1024


def large_message() -> bytes:
    """Return an RFC 5322 message of about :data:`MESSAGE_SIZE` bytes."""
    header = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: large\r\n\r\n"
    line = b"0123456789" * 7 + b"\r\n"
    return header + line * (MESSAGE_SIZE // len(line))


@pytest.fixture
def large_mailbox(imap_proxy: RunningProxy, dovecot: DovecotServer) -> Iterator[bytes]:
    """Append :func:`large_message` through the proxy to a new mailbox."""
    message = large_message()
    with login(imap_proxy, dovecot) as imap:
        imap.create(MAILBOX)
        status, _ = imap.append(MAILBOX, None, None, message)
        assert status == "OK"
    try:
        yield message
    finally:
        with login(imap_proxy, dovecot) as imap:
            imap.delete(MAILBOX)


def login(proxy: RunningProxy, dovecot: DovecotServer) -> imaplib.IMAP4_SSL:
    """Return a client logged in through ``proxy``."""
    imap = proxy.imap()
    imap.login(f"{VPN_USER}:{MAIL_USER}", f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}")
    return imap


def test_large_message_round_trip(
    imap_proxy: RunningProxy, dovecot: DovecotServer, large_mailbox: bytes
) -> None:
    with login(imap_proxy, dovecot) as imap:
        imap.select(MAILBOX, readonly=True)
        status, data = imap.fetch("1", "(BODY.PEEK[])")
        assert status == "OK"
        item = data[0]
        assert isinstance(item, tuple)
        assert item[1] == large_mailbox


def slow_reader(proxy: RunningProxy) -> RawClient:
    """Connect with a small receive buffer, so the client stops reading soon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(10)
    sock.connect((proxy.host, proxy.port))
    wrapped = proxy.client_context().wrap_socket(sock, server_hostname=proxy.host)
    return RawClient(wrapped)


def relay_buffers(proxy: RunningProxy) -> tuple[int, int, bool]:
    """Return the client write buffer, upstream read buffer and pause flag."""
    connections = [
        c
        for c in proxy.listener.connections.values()
        if c.state is ConnectionState.AUTHENTICATED and c.upstream is not None
    ]
    assert len(connections) == 1
    upstream = connections[0].upstream
    assert upstream is not None
    client = connections[0].client
    return client.write_buffer_size, upstream.buffered, upstream.reading_paused


def test_stalled_client_stops_upstream_reads(
    imap_proxy: RunningProxy, dovecot: DovecotServer, large_mailbox: bytes
) -> None:
    password = f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"
    with slow_reader(imap_proxy) as client:
        client.read_until(b"\r\n")
        client.send(f'a LOGIN "{VPN_USER}:{MAIL_USER}" "{password}"\r\n'.encode())
        client.read_until(b"a OK")
        client.send(f"b SELECT {MAILBOX}\r\n".encode())
        client.read_until(b"b OK")
        client.send(b"c FETCH 1 BODY.PEEK[]\r\n")

        # The client reads nothing now, so the proxy must pause the upstream.
        deadline = time.monotonic() + 10
        while not imap_proxy.call(lambda: relay_buffers(imap_proxy))[2]:
            assert time.monotonic() < deadline, "upstream reading never paused"
            time.sleep(0.05)
        time.sleep(0.3)
        written, buffered, paused = imap_proxy.call(lambda: relay_buffers(imap_proxy))
        assert paused
        assert written <= WRITE_BUFFER
        assert buffered <= READ_BUFFER
        assert written + buffered + RAW_WRITE_BUFFER <= 256 * 1024

        reply = client.read_until(b"c OK")
        assert large_mailbox in reply
