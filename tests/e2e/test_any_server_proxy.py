"""allow_any_server through the proxy: a typed host is reached, off by default."""

from __future__ import annotations

import imaplib
from pathlib import Path

import pytest

from mailproxy_core.errors import ConfigurationError
from mailproxy_core.proxy.config import parse_config

from .dovecot import DovecotServer
from .proxyfixtures import StartProxy
from .tripwire import Tripwire

pytestmark = pytest.mark.e2e


def test_typed_host_is_used_when_allowed(
    start_proxy: StartProxy, dovecot: DovecotServer, tripwire: Tripwire
) -> None:
    proxy = start_proxy(
        {
            "imap4s": {
                "servers": {"mail": {"host": "127.0.0.1", "port": tripwire.port}},
                "allow_any_server": True,
                "any_server": {"port": dovecot.imap_port, "tls": "none"},
            }
        }
    )
    with proxy.imap() as client:
        client.login("vpnuser:mailuser@127.0.0.1", "vpnpass:mailpass")
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == dovecot.messages[0]
    assert tripwire.count() == 0


def test_typed_host_ignored_by_default(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    proxy = start_proxy()
    with proxy.imap() as client, pytest.raises(imaplib.IMAP4.error) as failure:
        client.login("vpnuser:mailuser@127.0.0.1", "vpnpass:mailpass")
    # The whole "mailuser@127.0.0.1" went to the default server as the name.
    assert "Authentication failed." in str(failure.value)


def test_any_server_table_needs_the_switch(tmp_path: Path) -> None:
    document = {
        "imap4s": {
            "authentication": ["mailhost"],
            "servers": {"mail": {"host": "127.0.0.1"}},
            "any_server": {"port": 143},
        }
    }
    with pytest.raises(ConfigurationError, match="set allow_any_server = true"):
        parse_config(document, tmp_path / "proxy.toml")
