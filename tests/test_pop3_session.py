"""POP3 session behaviour beyond the transcripts."""

from __future__ import annotations

from mailproxy_core import events as ev
from mailproxy_core.pop3 import PopSession
from mailproxy_core.settings import (
    AuthMethod,
    SessionSettings,
    UpstreamServer,
    UpstreamTLS,
)
from mailproxy_core.states import ConnectionState


def make_session(tls: UpstreamTLS = UpstreamTLS.NONE, **options: bool) -> PopSession:
    server = UpstreamServer(name="mail", host="127.0.0.1", port=10110, tls=tls)
    settings = SessionSettings(
        servers={"mail": server}, default_server="mail", **options
    )
    session = PopSession(settings)
    session.start()
    return session


def to_client(events: list[ev.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.SendToClient))


def to_upstream(events: list[ev.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.SendToUpstream))


def test_command_line_limit_is_255() -> None:
    session = make_session()
    events = session.receive_client(b"USER " + b"x" * 249 + b"\r\n")
    assert to_client(events) == b"-ERR Line too long\r\n"
    assert session.closed


def test_long_auth_initial_response_is_accepted() -> None:
    session = make_session()
    events = session.receive_client(b"AUTH PLAIN " + b"QUFB" * 500 + b"\r\n")
    assert not session.closed
    assert to_client(events) == b"-ERR Invalid SASL initial response\r\n"


def test_greeting_has_no_apop_timestamp() -> None:
    server = UpstreamServer(name="mail", host="127.0.0.1", port=10110)
    session = PopSession(SessionSettings(servers={"mail": server}))
    [greeting] = session.start()
    assert isinstance(greeting, ev.SendToClient)
    assert b"<" not in greeting.data


def test_stls_required_hides_user_and_drops_pipelined() -> None:
    session = make_session(starttls_required=True)
    capa = to_client(session.receive_client(b"CAPA\r\n"))
    assert b"STLS\r\n" in capa
    assert b"USER\r\n" not in capa
    events = session.receive_client(b"USER vpn:mail\r\n")
    assert to_client(events) == b"-ERR Use STLS first\r\n"
    events = session.receive_client(b"STLS\r\nUSER injected:x\r\n")
    assert to_client(events) == b"+OK Begin TLS negotiation\r\n"
    assert events[-1] == ev.StartTLS(side=ev.Side.CLIENT)
    assert session.tls_established(ev.Side.CLIENT) == []
    assert (
        to_client(session.receive_client(b"PASS x:y\r\n"))
        == b"-ERR Send USER first\r\n"
    )


def test_upstream_stls_and_auth_plain_fallback() -> None:
    session = make_session(UpstreamTLS.STARTTLS)
    session.receive_client(b"USER vpnuser:mailuser\r\nPASS vpnpass:mailpass\r\n")
    session.authentication_result(AuthMethod.AAA, success=True)
    session.upstream_connected()
    events = session.receive_upstream(b"+OK <123.456@host> ready\r\n")
    assert to_upstream(events) == b"STLS\r\n"
    assert session.receive_upstream(b"+OK go\r\n") == [
        ev.StartTLS(side=ev.Side.UPSTREAM)
    ]
    assert to_upstream(session.tls_established(ev.Side.UPSTREAM)) == b"CAPA\r\n"
    events = session.receive_upstream(b"+OK\r\nSASL PLAIN\r\n.\r\n")
    assert to_upstream(events) == b"AUTH PLAIN AG1haWx1c2VyAG1haWxwYXNz\r\n"
    events = session.receive_upstream(b"+OK Logged in.\r\n")
    assert to_client(events) == b"+OK Logged in.\r\n"
    assert session.state is ConnectionState.AUTHENTICATED


def test_upstream_refuses_with_response_code() -> None:
    session = make_session()
    session.receive_client(b"USER vpnuser:mailuser\r\nPASS vpnpass:wrong\r\n")
    session.authentication_result(AuthMethod.AAA, success=True)
    session.upstream_connected()
    session.receive_upstream(b"+OK ready\r\n")
    session.receive_upstream(b"+OK\r\nUSER\r\n.\r\n")
    session.receive_upstream(b"+OK\r\n")
    events = session.receive_upstream(b"-ERR [AUTH] Authentication failed.\r\n")
    assert to_client(events) == b"-ERR [AUTH] Authentication failed.\r\n"
    assert session.state is ConnectionState.UNAUTHENTICATED


def test_three_failures_close() -> None:
    session = make_session()
    for _ in range(3):
        session.receive_client(b"USER vpnuser:mailuser\r\nPASS vpnpass:mailpass\r\n")
        events = session.authentication_result(AuthMethod.AAA, success=False)
    assert to_client(events) == (
        b"-ERR [AUTH] Authentication failed\r\n-ERR Too many failed logins\r\n"
    )
    assert session.closed
