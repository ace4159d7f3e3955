"""Protocol-specific listener keys reach the sessions they configure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailproxy_core import events as ev
from mailproxy_core.errors import ConfigurationError
from mailproxy_core.proxy.config import parse_config

SERVER = {"mail": {"host": "127.0.0.1", "port": 10025}}


def listener(tmp_path: Path, protocol: str, **keys: Any) -> Any:
    table = {"listen": "127.0.0.1:0", "authentication": ["mailhost"], "servers": SERVER}
    document = {protocol: {**table, **keys}}
    return parse_config(document, tmp_path / "proxy.toml").listeners[protocol]


def client_text(events: list[ev.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ev.SendToClient))


def test_smtps_hostname_and_size(tmp_path: Path) -> None:
    session = listener(
        tmp_path, "smtps", hostname="mx.example", size=1000
    ).make_session()
    assert client_text(session.start()).startswith(b"220 mx.example ESMTP")
    reply = client_text(session.receive_client(b"EHLO client\r\n"))
    assert b"250-SIZE 1000\r\n" in reply
    assert b"250-8BITMIME\r\n" in reply


def test_smtps_extensions_off_by_default(tmp_path: Path) -> None:
    session = listener(tmp_path, "smtps", eightbitmime=False).make_session()
    session.start()
    reply = client_text(session.receive_client(b"EHLO client\r\n"))
    assert b"SIZE" not in reply
    assert b"8BITMIME" not in reply
    assert b"SMTPUTF8" not in reply


def test_imap4rev2_announced(tmp_path: Path) -> None:
    session = listener(tmp_path, "imap4s", imap4rev2=True).make_session()
    assert b"IMAP4rev1 IMAP4rev2 " in client_text(session.start())


def test_keys_of_other_protocols_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"pop3s\.imap4rev2: unknown key"):
        listener(tmp_path, "pop3s", imap4rev2=True)
    with pytest.raises(ConfigurationError, match=r"imap4s\.size: unknown key"):
        listener(tmp_path, "imap4s", size=10)


def test_smtps_hostname_must_be_one_word(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"smtps\.hostname: 'mx example'"):
        listener(tmp_path, "smtps", hostname="mx example")
