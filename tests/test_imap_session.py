"""IMAP session behaviour that transcripts do not show well."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailproxy_core import events as ev
from mailproxy_core.errors import LocalProtocolError
from mailproxy_core.imap import ImapSession
from mailproxy_core.settings import (
    AuthMethod,
    Limits,
    SessionSettings,
    UpstreamServer,
    UpstreamTLS,
)
from mailproxy_core.states import ConnectionState

SERVER = UpstreamServer(name="mail", host="127.0.0.1", port=10143)
GREETING_UPSTREAM = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] ready\r\n"


def make_session(**overrides: object) -> ImapSession:
    options: dict[str, object] = {"servers": {"mail": SERVER}, "default_server": "mail"}
    options.update(overrides)
    session = ImapSession(SessionSettings(**options))  # type: ignore[arg-type]
    session.start()
    return session


def client_bytes(events: list[ev.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.SendToClient))


def authenticated_session() -> ImapSession:
    session = make_session()
    session.receive_client(b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n")
    session.authentication_result(AuthMethod.AAA, success=True)
    session.upstream_connected()
    session.receive_upstream(GREETING_UPSTREAM)
    session.receive_upstream(b"mp1 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
    assert session.state is ConnectionState.AUTHENTICATED
    return session


def test_relay_passes_same_bytes_object() -> None:
    session = authenticated_session()
    data = bytes(bytearray(b"a2 SELECT INBOX\r\n"))
    [event] = session.receive_client(data)
    assert isinstance(event, ev.ForwardData)
    assert event.data is data
    reply = bytes(bytearray(b"* 3 EXISTS\r\n"))
    [back] = session.receive_upstream(reply)
    assert isinstance(back, ev.ForwardData)
    assert back.data is reply
    assert back.direction is ev.Direction.TO_CLIENT


def test_secrets_absent_from_event_reprs() -> None:
    session = make_session()
    events = session.receive_client(
        b"a1 LOGIN vpnuser:mailuser vpnsecret:mailsecret\r\n"
    )
    events += session.authentication_result(AuthMethod.AAA, success=True)
    events += session.upstream_connected()
    events += session.receive_upstream(GREETING_UPSTREAM)
    assert any(isinstance(e, ev.SendToUpstream) for e in events)
    for event in events:
        assert "secret" not in repr(event)
        assert "secret" not in str(event)


def test_no_default_server_fails_without_upstream() -> None:
    session = make_session(default_server=None)
    events = session.receive_client(b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n")
    events += session.authentication_result(AuthMethod.AAA, success=True)
    assert not any(isinstance(e, ev.UpstreamSelected) for e in events)
    assert b"a1 NO [AUTHENTICATIONFAILED]" in client_bytes(events)
    failure = [e for e in events if isinstance(e, ev.AuthenticationFailed)]
    assert failure[0].reason == "no server was named and none is the default"


def test_named_server_selected() -> None:
    other = UpstreamServer(name="archive", host="127.0.0.1", port=10144)
    session = make_session(servers={"mail": SERVER, "archive": other})
    session.receive_client(b"a1 LOGIN vpnuser:mailuser@ARCHIVE vpnpass:mailpass\r\n")
    events = session.authentication_result(AuthMethod.AAA, success=True)
    selected = [e for e in events if isinstance(e, ev.UpstreamSelected)]
    assert selected[0].server is other


def test_line_too_long_closes() -> None:
    session = make_session()
    events = session.receive_client(b"a1 NOOP " + b"x" * 9000 + b"\r\n")
    assert client_bytes(events) == b"* BAD Line too long\r\n"
    assert isinstance(events[-1], ev.CloseConnection)
    assert session.state is ConnectionState.CLOSED


def test_large_literal_rejected() -> None:
    session = make_session()
    events = session.receive_client(b"a1 LOGIN {9000}\r\n")
    assert client_bytes(events).startswith(b"a1 BAD [TOOBIG]")
    assert session.closed


def test_command_count_limit() -> None:
    session = make_session(limits=Limits(max_commands=3))
    events = session.receive_client(b"a NOOP\r\n" * 4)
    assert client_bytes(events).endswith(b"* BYE Too many commands before login\r\n")
    assert session.closed


def test_held_bytes_bounded() -> None:
    session = make_session(limits=Limits(max_buffered=1000))
    session.receive_client(b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n")
    events = session.receive_client(b"a2 NOOP\r\n" * 200)
    assert b"* BYE" in client_bytes(events)
    assert session.closed


def test_starttls_required_rejects_login() -> None:
    session = make_session(starttls_required=True)
    events = session.receive_client(b"a1 CAPABILITY\r\n")
    assert b"STARTTLS LOGINDISABLED" in client_bytes(events)
    assert b"AUTH=PLAIN" not in client_bytes(events)
    events = session.receive_client(b"a2 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n")
    assert client_bytes(events) == b"a2 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n"
    assert session.state is ConnectionState.UNAUTHENTICATED


def test_starttls_drops_pipelined_bytes() -> None:
    session = make_session(starttls_required=True)
    events = session.receive_client(b"a1 STARTTLS\r\na2 LOGIN injected:x y:z\r\n")
    assert client_bytes(events) == b"a1 OK Begin TLS negotiation now\r\n"
    assert events[-1] == ev.StartTLS(side=ev.Side.CLIENT)
    assert session.tls_established(ev.Side.CLIENT) == []
    events = session.receive_client(b"a3 CAPABILITY\r\n")
    assert b"AUTH=PLAIN" in client_bytes(events)
    assert not any(isinstance(e, ev.CredentialsObserved) for e in events)


def test_upstream_starttls() -> None:
    server = UpstreamServer(
        name="mail", host="127.0.0.1", port=10143, tls=UpstreamTLS.STARTTLS
    )
    session = make_session(servers={"mail": server})
    session.receive_client(b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n")
    session.authentication_result(AuthMethod.AAA, success=True)
    session.upstream_connected()
    events = session.receive_upstream(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n")
    assert events == [ev.SendToUpstream(data=b"mp1 STARTTLS\r\n")]
    events = session.receive_upstream(b"mp1 OK go\r\n")
    assert events == [ev.StartTLS(side=ev.Side.UPSTREAM)]
    events = session.tls_established(ev.Side.UPSTREAM)
    assert events == [ev.SendToUpstream(data=b"mp2 CAPABILITY\r\n")]


def test_upstream_bytes_after_starttls_go_ahead_fail() -> None:
    server = UpstreamServer(
        name="mail", host="127.0.0.1", port=10143, tls=UpstreamTLS.STARTTLS
    )
    session = make_session(servers={"mail": server})
    session.receive_client(b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n")
    session.authentication_result(AuthMethod.AAA, success=True)
    session.upstream_connected()
    session.receive_upstream(b"* OK hi\r\n")
    events = session.receive_upstream(b"mp1 OK go\r\n* injected\r\n")
    assert any(isinstance(e, ev.ProtocolErrorObserved) for e in events)
    assert b"a1 NO [UNAVAILABLE]" in client_bytes(events)
    assert not any(isinstance(e, ev.StartTLS) for e in events)


def test_wrong_state_calls_raise() -> None:
    session = make_session()
    with pytest.raises(LocalProtocolError):
        session.authentication_result(AuthMethod.AAA, success=True)
    with pytest.raises(LocalProtocolError):
        session.upstream_connected()
    with pytest.raises(LocalProtocolError):
        session.start()


def test_shutdown_before_and_after_login() -> None:
    session = make_session()
    events = session.shutdown()
    assert client_bytes(events) == b"* BYE Server shutting down\r\n"
    assert isinstance(events[-1], ev.CloseConnection)
    assert authenticated_session().shutdown() == []


def test_pipelined_commands_after_failure_run_locally() -> None:
    session = make_session()
    session.receive_client(b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\na2 NOOP\r\n")
    events = session.authentication_result(AuthMethod.AAA, success=False, reason="bad")
    assert client_bytes(events) == (
        b"a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
        b"a2 OK NOOP completed\r\n"
    )


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_client_bytes_never_raise(chunks: list[bytes]) -> None:
    # Bad client bytes get an error reply; no exception reaches the driver.
    session = make_session()
    for chunk in chunks:
        events = session.receive_client(chunk)
        assert all(isinstance(e, ev.Event) for e in events)


_COMMANDS = st.sampled_from(
    [
        b"a LOGIN ",
        b"a AUTHENTICATE PLAIN ",
        b"a AUTHENTICATE LOGIN\r\n",
        b"{3}\r\n",
        b"{2+}\r\n",
        b'"x\\"y"',
        b"*\r\n",
        b"=\r\n",
        b"AHZwbnVzZXI6bWFpbHVzZXIAdnBucGFzczptYWlscGFzcw==\r\n",
        b"vpn:mail ",
        b"\r\n",
        b"\n",
        b"\x00",
        b"\xff",
        b"a CAPABILITY\r\n",
        b'a ID ("a" NIL)\r\n',
    ]
)


@settings(max_examples=300)
@given(st.lists(_COMMANDS, max_size=12))
def test_command_fragments_raise_nothing(parts: list[bytes]) -> None:
    session = make_session()
    session.receive_client(b"".join(parts))
    if session.state is ConnectionState.AUTHENTICATING and not session.closed:
        session.authentication_result(AuthMethod.AAA, success=False, reason="no")


def test_early_upstream_bytes_any_split() -> None:
    server = UpstreamServer(
        name="mail", host="127.0.0.1", port=10143, tls=UpstreamTLS.STARTTLS
    )
    outcomes = []
    for split in (None, 11):
        session = make_session(servers={"mail": server})
        session.receive_client(b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n")
        session.authentication_result(AuthMethod.AAA, success=True)
        session.upstream_connected()
        session.receive_upstream(b"* OK hi\r\n")
        data = b"mp1 OK go\r\n* injected\r\n"
        if split is None:
            events = session.receive_upstream(data)
        else:
            events = session.receive_upstream(data[:split])
            events += session.receive_upstream(data[split:])
        outcomes.append([e for e in events if not isinstance(e, ev.StartTLS)])
    assert outcomes[0] == outcomes[1]


def test_long_sasl_initial_response_accepted() -> None:
    session = make_session()
    events = session.receive_client(
        b"a1 AUTHENTICATE PLAIN " + b"QUFB" * 2300 + b"\r\n"
    )
    assert client_bytes(events) == b"a1 BAD Invalid SASL initial response\r\n"
    assert not session.closed
    events = session.receive_client(b"a2 NOOP " + b"x" * 9000 + b"\r\n")
    assert client_bytes(events) == b"* BAD Line too long\r\n"
    assert session.closed


def test_upstream_literal_in_any_split_reaches_client() -> None:
    login_reply = (
        b'* ID ("name" {7}\r\nDovecot "os" NIL)\r\n'
        b"mp1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"
    )
    outcomes = []
    for size in (len(login_reply), 1, 5):
        session = make_session()
        session.receive_client(b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n")
        session.authentication_result(AuthMethod.AAA, success=True)
        session.upstream_connected()
        session.receive_upstream(GREETING_UPSTREAM)
        events: list[ev.Event] = []
        for start in range(0, len(login_reply), size):
            events += session.receive_upstream(login_reply[start : start + size])
        assert session.state is ConnectionState.AUTHENTICATED
        outcomes.append(client_bytes(events))
    assert outcomes[0] == (
        b'* ID ("name" {7}\r\nDovecot "os" NIL)\r\n'
        b"a1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"
    )
    assert outcomes[1] == outcomes[0]
    assert outcomes[2] == outcomes[0]
