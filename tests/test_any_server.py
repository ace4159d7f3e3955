"""allow_any_server: users may name hosts that are not configured."""

from __future__ import annotations

import dataclasses

from mailproxy_core import events as ev
from mailproxy_core.delimiters import Delimiters, is_host_name, split_server
from mailproxy_core.imap import ImapSession
from mailproxy_core.settings import (
    AuthMethod,
    GroupPolicy,
    SessionSettings,
    UpstreamServer,
    UpstreamTLS,
)

MAIL = UpstreamServer(name="mail", host="127.0.0.1", port=10143)
TEMPLATE = UpstreamServer(name="*", host="*", port=993, tls=UpstreamTLS.IMPLICIT)


def selected(session: ImapSession, login: bytes) -> ev.UpstreamSelected | None:
    session.start()
    session.receive_client(login)
    events = session.authentication_result(AuthMethod.AAA, success=True)
    found = [e for e in events if isinstance(e, ev.UpstreamSelected)]
    return found[0] if found else None


def test_host_names() -> None:
    assert is_host_name("mail.example.org")
    assert is_host_name("127.0.0.1")
    assert not is_host_name("-bad.example")
    assert not is_host_name("two words")
    assert not is_host_name("a" * 64 + ".example")
    assert not is_host_name("")
    assert not is_host_name("127.1")
    assert not is_host_name("2130706433")
    assert not is_host_name("127.0.0.256")


def test_split_any_host_lowercases() -> None:
    delimiters = Delimiters()
    assert split_server("alice@Mail.Example", delimiters, ["mail"]) == (
        "alice@Mail.Example",
        None,
    )
    result = split_server("alice@Mail.Example", delimiters, ["mail"], any_host=True)
    assert result == ("alice", "mail.example")


def test_off_by_default_keeps_name_whole() -> None:
    settings = SessionSettings(servers={"mail": MAIL}, default_server="mail")
    event = selected(ImapSession(settings), b"a LOGIN v:alice@elsewhere.test v:p\r\n")
    assert event is not None
    assert event.server is MAIL


def test_any_host_uses_template() -> None:
    settings = SessionSettings(
        servers={"mail": MAIL}, default_server="mail", any_server=TEMPLATE
    )
    event = selected(ImapSession(settings), b"a LOGIN v:alice@imap.example v:p\r\n")
    assert event is not None
    expected = dataclasses.replace(TEMPLATE, name="imap.example", host="imap.example")
    assert event.server == expected


def test_policy_servers_still_restrict() -> None:
    policy = GroupPolicy(name="default", servers=frozenset({"mail"}))
    settings = SessionSettings(
        servers={"mail": MAIL},
        default_server="mail",
        any_server=TEMPLATE,
        default_group_policy=policy,
    )
    assert (
        selected(ImapSession(settings), b"a LOGIN v:alice@intra.example v:p\r\n")
        is None
    )
