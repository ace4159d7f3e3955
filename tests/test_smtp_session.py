"""SMTP session behaviour beyond the transcripts."""

from __future__ import annotations

from mailproxy_core import events as ev
from mailproxy_core.settings import (
    AuthMethod,
    SessionSettings,
    UpstreamServer,
    UpstreamTLS,
)
from mailproxy_core.smtp import SmtpSession
from mailproxy_core.states import ConnectionState

AUTH_PLAIN = b"AUTH PLAIN AHZwbnVzZXI6bWFpbHVzZXIAdnBucGFzczptYWlscGFzcw==\r\n"


def make_session(tls: UpstreamTLS = UpstreamTLS.NONE) -> SmtpSession:
    server = UpstreamServer(name="mail", host="127.0.0.1", port=10025, tls=tls)
    settings = SessionSettings(servers={"mail": server}, default_server="mail")
    session = SmtpSession(settings)
    session.start()
    return session


def to_client(events: list[ev.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.SendToClient))


def to_upstream(events: list[ev.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.SendToUpstream))


def logged_in_upstream(tls: UpstreamTLS = UpstreamTLS.NONE) -> SmtpSession:
    session = make_session(tls)
    session.receive_client(b"EHLO client.example\r\n" + AUTH_PLAIN)
    session.authentication_result(AuthMethod.AAA, success=True)
    session.upstream_connected()
    return session


def test_command_line_limit() -> None:
    session = make_session()
    events = session.receive_client(b"NOOP " + b"x" * 510 + b"\r\n")
    assert to_client(events) == b"500 5.5.2 Line too long\r\n"
    assert session.closed


def test_long_auth_line_is_accepted() -> None:
    session = make_session()
    session.receive_client(b"EHLO client.example\r\n")
    events = session.receive_client(b"AUTH XOAUTH2 " + b"A" * 4000 + b"\r\n")
    assert not session.closed
    assert to_client(events).startswith(b"504 ")


def test_multiline_greeting_split_and_helo_fallback() -> None:
    session = logged_in_upstream()
    assert session.receive_upstream(b"220-mta.example\r\n22") == []
    events = session.receive_upstream(b"0 ready\r\n")
    assert to_upstream(events) == b"EHLO client.example\r\n"
    events = session.receive_upstream(b"502 5.5.1 EHLO not supported\r\n")
    assert to_upstream(events) == b"HELO client.example\r\n"
    events = session.receive_upstream(b"250 mta.example\r\n")
    assert to_client(events) == b"454 4.7.0 Temporary authentication failure\r\n"
    failed = [e for e in events if isinstance(e, ev.AuthenticationFailed)]
    assert failed[0].reason == "upstream offers no usable AUTH mechanism"


def test_auth_login_challenge_without_space() -> None:
    session = logged_in_upstream()
    session.receive_upstream(b"220 mta.example\r\n")
    events = session.receive_upstream(b"250-mta.example\r\n250 AUTH=LOGIN\r\n")
    assert to_upstream(events) == b"AUTH LOGIN\r\n"
    events = session.receive_upstream(b"334\r\n")
    assert to_upstream(events) == b"bWFpbHVzZXI=\r\n"
    events = session.receive_upstream(b"334 UGFzc3dvcmQ6\r\n")
    assert to_upstream(events) == b"bWFpbHBhc3M=\r\n"
    events = session.receive_upstream(
        b"535 5.7.8 Authentication credentials invalid\r\n"
    )
    assert to_client(events) == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert session.state is ConnectionState.UNAUTHENTICATED
    assert any(isinstance(e, ev.CloseUpstream) for e in events)


def test_upstream_starttls_then_ehlo_again() -> None:
    session = logged_in_upstream(UpstreamTLS.STARTTLS)
    session.receive_upstream(b"220 mta.example\r\n")
    events = session.receive_upstream(b"250-mta.example\r\n250 STARTTLS\r\n")
    assert to_upstream(events) == b"STARTTLS\r\n"
    events = session.receive_upstream(b"220 2.0.0 Ready\r\n")
    assert events == [ev.StartTLS(side=ev.Side.UPSTREAM)]
    events = session.tls_established(ev.Side.UPSTREAM)
    assert to_upstream(events) == b"EHLO client.example\r\n"
    events = session.receive_upstream(b"250-mta.example\r\n250 AUTH PLAIN\r\n")
    assert to_upstream(events) == b"AUTH PLAIN AG1haWx1c2VyAG1haWxwYXNz\r\n"
    events = session.receive_upstream(b"235 2.7.0 OK\r\n")
    assert to_client(events) == b"235 2.7.0 OK\r\n"
    assert session.state is ConnectionState.AUTHENTICATED


def test_upstream_data_after_starttls_go_ahead() -> None:
    session = logged_in_upstream(UpstreamTLS.STARTTLS)
    session.receive_upstream(b"220 mta.example\r\n")
    session.receive_upstream(b"250-mta.example\r\n250 STARTTLS\r\n")
    events = session.receive_upstream(b"220 2.0.0 Ready\r\n250 injected\r\n")
    assert not any(isinstance(e, ev.StartTLS) for e in events)
    assert any(isinstance(e, ev.ProtocolErrorObserved) for e in events)
    assert to_client(events) == b"454 4.7.0 Temporary authentication failure\r\n"


def test_starttls_missing_at_upstream() -> None:
    session = logged_in_upstream(UpstreamTLS.STARTTLS)
    session.receive_upstream(b"220 mta.example\r\n")
    events = session.receive_upstream(b"250 mta.example\r\n")
    failed = [e for e in events if isinstance(e, ev.AuthenticationFailed)]
    assert failed[0].reason == "upstream does not offer STARTTLS"
    assert to_upstream(events) == b""


def test_shutdown_sends_421() -> None:
    session = make_session()
    events = session.shutdown()
    assert to_client(events).startswith(b"421 4.3.2 ")
    assert session.closed
