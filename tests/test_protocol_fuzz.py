"""Arbitrary bytes from either peer never crash a session of any protocol."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailproxy_core import events as ev
from mailproxy_core.errors import LocalProtocolError
from mailproxy_core.imap import ImapSession
from mailproxy_core.pop3 import PopSession
from mailproxy_core.session import Session
from mailproxy_core.settings import AuthMethod, SessionSettings, UpstreamServer
from mailproxy_core.smtp import SmtpSession

FACTORIES: dict[str, Callable[[SessionSettings], Session]] = {
    "imap": ImapSession,
    "pop3": PopSession,
    "smtp": SmtpSession,
}

LOGINS = {
    "imap": b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n",
    "pop3": b"USER vpnuser:mailuser\r\nPASS vpnpass:mailpass\r\n",
    "smtp": b"EHLO x\r\n"
    b"AUTH PLAIN AHZwbnVzZXI6bWFpbHVzZXIAdnBucGFzczptYWlscGFzcw==\r\n",
}


def make_session(protocol: str) -> Session:
    server = UpstreamServer(name="mail", host="127.0.0.1", port=10000)
    settings = SessionSettings(servers={"mail": server}, default_server="mail")
    session = FACTORIES[protocol](settings)
    session.start()
    return session


@pytest.mark.parametrize("protocol", sorted(FACTORIES))
@settings(max_examples=200)
@given(chunks=st.lists(st.binary(max_size=600), max_size=8))
def test_client_bytes_never_raise(protocol: str, chunks: list[bytes]) -> None:
    session = make_session(protocol)
    for chunk in chunks:
        events = session.receive_client(chunk)
        assert all(isinstance(e, ev.Event) for e in events)


@pytest.mark.parametrize("protocol", sorted(FACTORIES))
@settings(max_examples=200)
@given(chunks=st.lists(st.binary(max_size=600), max_size=8))
def test_upstream_bytes_raise_only_own_errors(
    protocol: str, chunks: list[bytes]
) -> None:
    # Bad upstream bytes end the login through events; only feeding more
    # after the session closed the upstream raises, as a LocalProtocolError.
    session = make_session(protocol)
    session.receive_client(LOGINS[protocol])
    session.authentication_result(AuthMethod.AAA, success=True)
    session.upstream_connected()
    upstream_gone = False
    for chunk in chunks:
        try:
            events = session.receive_upstream(chunk)
        except LocalProtocolError:
            assert upstream_gone
            break
        assert all(isinstance(e, ev.Event) for e in events)
        closing = (ev.CloseUpstream, ev.CloseConnection)
        upstream_gone = upstream_gone or any(isinstance(e, closing) for e in events)
