"""Tests of the PROXY protocol driver: trusted addresses, configuration, reads."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest

from mailproxy_core.errors import ConfigurationError
from mailproxy_core.proxy.config import parse_config
from mailproxy_core.proxy.loadbalancer import (
    is_trusted,
    parse_network,
    read_proxy_header,
)
from mailproxy_core.proxy.stream import READ_SIZE, PeerStream
from mailproxy_core.proxy.tls import server_tls
from mailproxy_core.proxyheader import ProxyHeaderError

from .test_stream import run_pair

V1_HEADER = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 993\r\n"

NETWORKS = (
    ipaddress.ip_network("127.0.0.1"),
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("2001:db8::/32"),
)


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("10.255.0.1", True),
        ("11.0.0.1", False),
        ("2001:db8::5", True),
        ("2001:db9::5", False),
        ("::ffff:10.0.0.5", True),
        ("::ffff:192.0.2.1", False),
        ("::1", False),
        ("localhost", False),
        (None, False),
    ],
)
def test_is_trusted(host: str | None, trusted: bool) -> None:
    assert is_trusted(host, NETWORKS) is trusted


def test_nothing_trusted_without_networks() -> None:
    assert is_trusted("127.0.0.1", ()) is False


def test_parse_network_address_and_network() -> None:
    assert parse_network("127.0.0.1") == ipaddress.ip_network("127.0.0.1/32")
    assert parse_network(" 10.0.0.0/8 ") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_network("::1") == ipaddress.ip_network("::1/128")


@pytest.mark.parametrize("text", ["10.0.0.1/8", "lb.example", "", "10.0.0.0/33"])
def test_parse_network_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_network(text)


# Configuration ------------------------------------------------------------------


def listener_document(**keys: Any) -> dict[str, Any]:
    """Return a one-listener configuration with extra ``imap4s`` keys."""
    return {
        "imap4s": {
            "authentication": ["mailhost"],
            "servers": {"mail": {"host": "127.0.0.1"}},
            **keys,
        }
    }


def test_config_reads_proxy_protocol(tmp_path: Path) -> None:
    document = listener_document(proxy_protocol=["127.0.0.1", "10.0.0.0/8"])
    listener = parse_config(document, tmp_path / "proxy.toml").listeners["imap4s"]
    assert listener.proxy_protocol == NETWORKS[:2]


def test_config_single_string_allowed(tmp_path: Path) -> None:
    document = listener_document(proxy_protocol="10.0.0.0/8")
    listener = parse_config(document, tmp_path / "proxy.toml").listeners["imap4s"]
    assert listener.proxy_protocol == (NETWORKS[1],)


def test_config_default_reads_no_header(tmp_path: Path) -> None:
    listener = parse_config(listener_document(), tmp_path / "proxy.toml").listeners
    assert listener["imap4s"].proxy_protocol == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["10.0.0.1/8"], r"imap4s\.proxy_protocol\[0\]: '10\.0\.0\.1/8' is invalid"),
        (["127.0.0.1", "lb"], r"imap4s\.proxy_protocol\[1\]: 'lb' is invalid"),
        ([5], r"imap4s\.proxy_protocol\[0\]: expected a string"),
        (True, r"imap4s\.proxy_protocol: expected a string or a list"),
    ],
)
def test_config_rejects_bad_entry(tmp_path: Path, value: object, message: str) -> None:
    document = listener_document(proxy_protocol=value)
    with pytest.raises(ConfigurationError, match=message):
        parse_config(document, tmp_path / "proxy.toml")


# Reading the header --------------------------------------------------------------


def test_read_leaves_tls_bytes_in_socket() -> None:
    # Header and TLS record arrive in one segment, and the header read must
    # not take a byte of the record.
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(V1_HEADER + b"\x16\x03\x01rest")
        await writer.drain()
        await asyncio.sleep(0.05)
        header = await read_proxy_header(stream, timeout=5)
        assert header is not None
        assert header.source == ("192.0.2.7", 40000)
        assert stream.buffered == 0
        assert stream.reading_paused
        stream.resume()
        assert await stream.read() == b"\x16\x03\x01rest"

    run_pair(body, start_paused=True)


def test_read_then_tls_handshake() -> None:
    tls = server_tls(None, None, listener="test")
    pair = tls.self_signed
    assert pair is not None
    client_context = ssl.create_default_context(cadata=pair.certificate.decode())

    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(V1_HEADER)
        client = asyncio.create_task(
            writer.start_tls(client_context, server_hostname="127.0.0.1")
        )
        header = await read_proxy_header(stream, timeout=5)
        assert header is not None
        await stream.start_tls(tls.context, server_side=True, timeout=5)
        await client
        writer.write(b"hello")
        assert await stream.read() == b"hello"

    run_pair(body, start_paused=True)


def test_read_returns_none_at_eof() -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(V1_HEADER[:10])
        writer.close()
        assert await read_proxy_header(stream, timeout=5) is None

    run_pair(body, start_paused=True)


def test_read_raises_on_bad_header() -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"GET / HTTP/1.1\r\n")
        with pytest.raises(ProxyHeaderError):
            await read_proxy_header(stream, timeout=5)

    run_pair(body, start_paused=True)


def test_read_times_out() -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(V1_HEADER[:10])
        with pytest.raises(TimeoutError):
            await read_proxy_header(stream, timeout=0.1)
        assert stream.reading_paused

    run_pair(body, start_paused=True)


def test_read_at_most_splits_buffered_chunk() -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"abcdef")
        assert await stream.read_at_most(2) == b"ab"
        stream.resume()
        assert await stream.read() == b"cdef"

    run_pair(body, start_paused=True)


@pytest.mark.parametrize("size", [0, READ_SIZE + 1])
def test_read_at_most_rejects_size(size: int) -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with pytest.raises(ValueError):
            await stream.read_at_most(size)

    run_pair(body, start_paused=True)
