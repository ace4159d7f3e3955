"""Forwarding the client's address upstream: IMAP ID, SMTP and POP3 XCLIENT.

Each test logs in with method ``mailhost`` alone, so the session selects
the upstream at once, and plays the upstream server reply by reply.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailproxy_core import events as ev
from mailproxy_core.imap import ImapSession
from mailproxy_core.pop3 import PopSession
from mailproxy_core.proxy.config import parse_config
from mailproxy_core.session import Session
from mailproxy_core.settings import (
    AuthMethod,
    SessionSettings,
    UpstreamServer,
    UpstreamTLS,
)
from mailproxy_core.smtp import SmtpSession
from mailproxy_core.states import ConnectionState

from .sessionkit import byte_by_byte, normalize, whole

Splitter = Callable[[bytes], Iterator[bytes]]

ADDRESS = "192.0.2.7"
PORT = 40000
IMAP_ID = b'mp1 ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "40000")\r\n'
AUTH_PLAIN = b"AUTH PLAIN " + base64.b64encode(b"\x00mailuser\x00mailpass") + b"\r\n"
EHLO_XCLIENT = (
    b"250-mta.example\r\n"
    b"250-XCLIENT NAME ADDR PROTO HELO PORT LOGIN\r\n"
    b"250 AUTH PLAIN LOGIN\r\n"
)
EHLO_PLAIN = b"250-mta.example\r\n250 AUTH PLAIN LOGIN\r\n"


def server(forward: bool = True, tls: UpstreamTLS = UpstreamTLS.NONE) -> UpstreamServer:
    return UpstreamServer(
        name="mail",
        host="127.0.0.1",
        port=10000,
        tls=tls,
        forward_client_address=forward,
    )


def start(
    session_class: type[Session],
    upstream: UpstreamServer,
    login: bytes,
    *,
    address: str | None = ADDRESS,
    port: int | None = PORT,
) -> Session:
    """Start a session, send the client's login and connect the upstream."""
    settings = SessionSettings(
        methods=frozenset({AuthMethod.MAILHOST}),
        servers={"mail": upstream},
        default_server="mail",
    )
    session = session_class(settings)
    session.start(client_address=address, client_port=port)
    events = session.receive_client(login)
    assert any(isinstance(e, ev.UpstreamSelected) for e in events)
    assert session.upstream_connected() == []
    return session


def imap(
    upstream: UpstreamServer | None = None,
    *,
    address: str | None = ADDRESS,
    port: int | None = PORT,
) -> Session:
    login = b'a1 LOGIN "mailuser" "mailpass"\r\n'
    return start(ImapSession, upstream or server(), login, address=address, port=port)


def smtp(
    upstream: UpstreamServer | None = None,
    *,
    address: str | None = ADDRESS,
    port: int | None = PORT,
) -> Session:
    login = b"EHLO client.example\r\n" + AUTH_PLAIN
    return start(SmtpSession, upstream or server(), login, address=address, port=port)


def pop3(
    upstream: UpstreamServer | None = None,
    *,
    address: str | None = ADDRESS,
    port: int | None = PORT,
) -> Session:
    login = b"USER mailuser\r\nPASS mailpass\r\n"
    return start(PopSession, upstream or server(), login, address=address, port=port)


def feed(session: Session, data: bytes, split: Splitter = whole) -> list[ev.Event]:
    events: list[ev.Event] = []
    for chunk in split(data):
        events.extend(session.receive_upstream(chunk))
    return normalize(events)


def to_upstream(events: list[ev.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.SendToUpstream))


def to_client(events: list[ev.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.SendToClient))


# IMAP ---------------------------------------------------------------------


def test_imap_id_before_login() -> None:
    session = imap()
    events = feed(session, b"* OK [CAPABILITY IMAP4rev1 ID AUTH=PLAIN] ready\r\n")
    assert to_upstream(events) == IMAP_ID
    events = feed(session, b'* ID ("name" "Dovecot")\r\nmp1 OK ID completed.\r\n')
    assert to_upstream(events) == b'mp2 LOGIN "mailuser" "mailpass"\r\n'
    assert to_client(events) == b""
    events = feed(session, b"mp2 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    assert to_client(events) == b"a1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"
    assert session.state is ConnectionState.AUTHENTICATED


def test_imap_id_after_capability_command() -> None:
    session = imap()
    events = feed(session, b"* OK ready\r\n")
    assert to_upstream(events) == b"mp1 CAPABILITY\r\n"
    events = feed(session, b"* CAPABILITY IMAP4rev1 ID\r\nmp1 OK done\r\n")
    expected = b'mp2 ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "40000")'
    assert to_upstream(events) == expected + b"\r\n"


def test_imap_id_rejected_still_logs_in() -> None:
    session = imap()
    feed(session, b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
    events = feed(session, b"mp1 NO not trusted\r\n")
    assert to_upstream(events) == b'mp2 LOGIN "mailuser" "mailpass"\r\n'
    assert not any(isinstance(e, ev.AuthenticationFailed) for e in events)
    events = feed(session, b"mp2 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    assert session.state is ConnectionState.AUTHENTICATED


def test_imap_id_bad_still_logs_in() -> None:
    session = imap()
    feed(session, b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
    events = feed(session, b"mp1 BAD unknown command\r\n")
    assert to_upstream(events) == b'mp2 LOGIN "mailuser" "mailpass"\r\n'


def test_imap_id_reply_with_literal_ignored() -> None:
    session = imap()
    feed(session, b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
    reply = b'* ID ("name" {7}\r\nDovecot)\r\nmp1 OK ID completed.\r\n'
    events = feed(session, reply)
    assert to_upstream(events) == b'mp2 LOGIN "mailuser" "mailpass"\r\n'
    events = feed(session, b"mp2 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    assert b"* ID" not in to_client(events)


def test_imap_id_skipped_when_not_offered() -> None:
    session = imap()
    events = feed(session, b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
    assert to_upstream(events) == b'mp1 LOGIN "mailuser" "mailpass"\r\n'


def test_imap_id_skipped_when_off() -> None:
    session = imap(server(forward=False))
    events = feed(session, b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
    assert to_upstream(events) == b'mp1 LOGIN "mailuser" "mailpass"\r\n'


def test_imap_id_without_port() -> None:
    session = imap(port=None)
    events = feed(session, b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
    assert to_upstream(events) == b'mp1 ID ("x-originating-ip" "192.0.2.7")\r\n'


def test_imap_id_ipv6_address() -> None:
    session = imap(address="2001:db8::7")
    events = feed(session, b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
    expected = b'mp1 ID ("x-originating-ip" "2001:db8::7" "x-originating-port" "40000")'
    assert to_upstream(events) == expected + b"\r\n"


def test_imap_id_skipped_without_address() -> None:
    session = imap(address=None)
    events = feed(session, b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
    assert to_upstream(events) == b'mp1 LOGIN "mailuser" "mailpass"\r\n'


def test_imap_id_skipped_for_non_ip_address() -> None:
    session = imap(address='x" "y')
    events = feed(session, b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n")
    assert to_upstream(events) == b'mp1 LOGIN "mailuser" "mailpass"\r\n'


def test_imap_id_after_upstream_starttls() -> None:
    session = imap(server(tls=UpstreamTLS.STARTTLS))
    events = feed(session, b"* OK [CAPABILITY IMAP4rev1 STARTTLS ID] ready\r\n")
    assert to_upstream(events) == b"mp1 STARTTLS\r\n"
    events = feed(session, b"mp1 OK begin TLS\r\n")
    assert any(isinstance(e, ev.StartTLS) for e in events)
    events = session.tls_established(ev.Side.UPSTREAM)
    assert to_upstream(events) == b"mp2 CAPABILITY\r\n"
    events = feed(session, b"* CAPABILITY IMAP4rev1 ID\r\nmp2 OK done\r\n")
    assert to_upstream(events).startswith(b'mp3 ID ("x-originating-ip" "192.0.2.7"')


# SMTP ---------------------------------------------------------------------


def test_smtp_xclient_then_ehlo_again() -> None:
    session = smtp()
    events = feed(session, b"220 mta.example ESMTP\r\n")
    assert to_upstream(events) == b"EHLO client.example\r\n"
    events = feed(session, EHLO_XCLIENT)
    assert to_upstream(events) == b"XCLIENT ADDR=192.0.2.7 PORT=40000\r\n"
    events = feed(session, b"220 mta.example ESMTP\r\n")
    assert to_upstream(events) == b"EHLO client.example\r\n"
    events = feed(session, EHLO_PLAIN)
    assert to_upstream(events) == AUTH_PLAIN
    events = feed(session, b"235 2.7.0 Authentication successful\r\n")
    assert session.state is ConnectionState.AUTHENTICATED


def test_smtp_xclient_ipv6_prefix() -> None:
    session = smtp(address="2001:db8::7")
    feed(session, b"220 mta.example ESMTP\r\n")
    events = feed(session, EHLO_XCLIENT)
    assert to_upstream(events) == b"XCLIENT ADDR=IPV6:2001:db8::7 PORT=40000\r\n"


def test_smtp_xclient_without_port_attribute() -> None:
    session = smtp()
    feed(session, b"220 mta.example ESMTP\r\n")
    events = feed(
        session, b"250-mta.example\r\n250-XCLIENT NAME ADDR\r\n250 AUTH PLAIN\r\n"
    )
    assert to_upstream(events) == b"XCLIENT ADDR=192.0.2.7\r\n"


def test_smtp_xclient_without_port() -> None:
    session = smtp(port=None)
    feed(session, b"220 mta.example ESMTP\r\n")
    events = feed(session, EHLO_XCLIENT)
    assert to_upstream(events) == b"XCLIENT ADDR=192.0.2.7\r\n"


def test_smtp_xclient_skipped_when_not_offered() -> None:
    session = smtp()
    feed(session, b"220 mta.example ESMTP\r\n")
    events = feed(session, EHLO_PLAIN)
    assert to_upstream(events) == AUTH_PLAIN


def test_smtp_xclient_skipped_without_addr_attribute() -> None:
    session = smtp()
    feed(session, b"220 mta.example ESMTP\r\n")
    events = feed(
        session, b"250-mta.example\r\n250-XCLIENT NAME HELO\r\n250 AUTH PLAIN\r\n"
    )
    assert to_upstream(events) == AUTH_PLAIN


def test_smtp_xclient_skipped_when_off() -> None:
    session = smtp(server(forward=False))
    feed(session, b"220 mta.example ESMTP\r\n")
    events = feed(session, EHLO_XCLIENT)
    assert to_upstream(events) == AUTH_PLAIN


def test_smtp_xclient_rejected_still_authenticates() -> None:
    session = smtp()
    feed(session, b"220 mta.example ESMTP\r\n")
    feed(session, EHLO_XCLIENT)
    events = feed(session, b"550 5.7.0 insufficient authorization\r\n")
    assert to_upstream(events) == AUTH_PLAIN
    assert not any(isinstance(e, ev.AuthenticationFailed) for e in events)


def test_smtp_xclient_after_upstream_starttls() -> None:
    session = smtp(server(tls=UpstreamTLS.STARTTLS))
    feed(session, b"220 mta.example ESMTP\r\n")
    ehlo = b"250-mta.example\r\n250-STARTTLS\r\n250 XCLIENT ADDR PORT\r\n"
    events = feed(session, ehlo)
    assert to_upstream(events) == b"STARTTLS\r\n"
    feed(session, b"220 2.0.0 Ready to start TLS\r\n")
    events = session.tls_established(ev.Side.UPSTREAM)
    assert to_upstream(events) == b"EHLO client.example\r\n"
    events = feed(session, EHLO_XCLIENT)
    assert to_upstream(events) == b"XCLIENT ADDR=192.0.2.7 PORT=40000\r\n"


# POP3 ---------------------------------------------------------------------


def test_pop3_xclient_before_user() -> None:
    session = pop3()
    events = feed(session, b"+OK Dovecot ready.\r\n")
    assert to_upstream(events) == b"CAPA\r\n"
    events = feed(session, b"+OK\r\nUSER\r\nXCLIENT\r\n.\r\n")
    assert to_upstream(events) == b"XCLIENT ADDR=192.0.2.7 PORT=40000\r\n"
    events = feed(session, b"+OK Updated\r\n")
    assert to_upstream(events) == b"USER mailuser\r\n"


def test_pop3_xclient_rejected_still_logs_in() -> None:
    session = pop3()
    feed(session, b"+OK Dovecot ready.\r\n")
    feed(session, b"+OK\r\nUSER\r\nXCLIENT\r\n.\r\n")
    events = feed(session, b"-ERR You aren't allowed to use XCLIENT\r\n")
    assert to_upstream(events) == b"USER mailuser\r\n"


def test_pop3_xclient_skipped_when_not_offered() -> None:
    session = pop3()
    feed(session, b"+OK Dovecot ready.\r\n")
    events = feed(session, b"+OK\r\nUSER\r\n.\r\n")
    assert to_upstream(events) == b"USER mailuser\r\n"


# Chunking -----------------------------------------------------------------

IMAP_REPLIES = (
    b"* OK [CAPABILITY IMAP4rev1 ID] ready\r\n",
    b'* ID ("name" "Dovecot")\r\nmp1 OK ID completed.\r\n',
    b"mp2 OK [CAPABILITY IMAP4rev1] Logged in\r\n",
)
SMTP_REPLIES = (
    b"220 mta.example ESMTP\r\n",
    EHLO_XCLIENT,
    b"220 mta.example ESMTP\r\n",
    EHLO_PLAIN,
    b"235 2.7.0 Authentication successful\r\n",
)
POP3_REPLIES = (
    b"+OK Dovecot ready.\r\n",
    b"+OK\r\nUSER\r\nXCLIENT\r\n.\r\n",
    b"+OK Updated\r\n",
    b"+OK\r\n",
    b"+OK Logged in.\r\n",
)


@pytest.mark.parametrize(
    ("make", "replies"),
    [(imap, IMAP_REPLIES), (smtp, SMTP_REPLIES), (pop3, POP3_REPLIES)],
    ids=["imap", "smtp", "pop3"],
)
def test_split_replies_give_same_events(
    make: Callable[[], Session], replies: tuple[bytes, ...]
) -> None:
    results: list[list[list[ev.Event]]] = []
    for split in (whole, byte_by_byte):
        session = make()
        results.append([feed(session, reply, split) for reply in replies])
        assert session.state is ConnectionState.AUTHENTICATED
    assert results[0] == results[1]


# Configuration ------------------------------------------------------------


def test_config_key_sets_forwarding(tmp_path: Path) -> None:
    listener = {
        "authentication": ["mailhost"],
        "default_server": "a",
        "servers": {
            "a": {"host": "127.0.0.1", "forward_client_address": True},
            "b": {"host": "127.0.0.1"},
        },
    }
    config = parse_config({"imap4s": listener}, tmp_path / "proxy.toml")
    servers = config.listeners["imap4s"].session.servers
    assert servers["a"].forward_client_address is True
    assert servers["b"].forward_client_address is False
