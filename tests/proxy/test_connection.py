"""Tests of the connection driver against a fake IMAP upstream.

These need no Dovecot: :mod:`tests.proxy.harness` supplies a scripted
upstream and an AAA group that can be made slow or broken.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mailproxy_core.proxy.accounting import Accounting
from mailproxy_core.proxy.server import Listener
from mailproxy_core.states import ConnectionState

from .harness import (
    REPLY_TIMEOUT,
    FakeImapServer,
    StaticAaaGroup,
    client_context,
    connect,
    login_line,
    running_listener,
)

TestBody = Callable[[Listener, FakeImapServer], Awaitable[None]]


def run(
    tmp_path: Path,
    body: TestBody,
    *,
    aaa: StaticAaaGroup | None = None,
    behaviour: str = "normal",
    accounting: Accounting | None = None,
    **imap4s: object,
) -> None:
    """Run ``body`` with a fake upstream and a listener in front of it."""

    async def main() -> None:
        upstream = FakeImapServer(behaviour=behaviour)
        await upstream.start()
        try:
            async with running_listener(
                tmp_path, upstream.port, aaa or StaticAaaGroup(), accounting, **imap4s
            ) as listener:
                await asyncio.wait_for(body(listener, upstream), 4 * REPLY_TIMEOUT)
        finally:
            await upstream.stop()

    asyncio.run(main())


async def wait_until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` is true, at most :data:`REPLY_TIMEOUT` seconds."""
    async with asyncio.timeout(REPLY_TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


def test_login_then_relay(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        assert (await client.line()).startswith(b"* OK")
        await client.send(login_line())
        assert b"a OK" in await client.until(b"a ")

        await client.send(b"b NOOP\r\n")
        assert await client.line() == b"b OK NOOP done\r\n"
        assert b"b NOOP\r\n" in upstream.received

        await client.send(b"c LOGOUT\r\n")
        assert await client.at_eof() == b"* BYE bye\r\nc OK LOGOUT done\r\n"
        await wait_until(lambda: not listener.connections)

    run(tmp_path, body)


def test_states_reported_to_limit(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        await client.line()
        (connection_id,) = listener.connections
        assert listener.limit.state(connection_id) is ConnectionState.UNAUTHENTICATED

        await client.send(login_line())
        await wait_until(
            lambda: (
                listener.limit.state(connection_id) is ConnectionState.AUTHENTICATING
            )
        )
        await client.until(b"a ")
        assert listener.limit.state(connection_id) is ConnectionState.AUTHENTICATED
        assert listener.limit.counted == 0

    run(tmp_path, body, aaa=StaticAaaGroup(delay=0.2))


def test_aaa_timeout_fails_login(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        await client.line()
        await client.send(login_line())
        assert (await client.until(b"a ")).startswith(b"a NO")

    run(tmp_path, body, aaa=StaticAaaGroup(delay=3), timeouts={"aaa": 0.2})
    assert "AAA server group STATIC timed out after 0.2 s" in caplog.text


def test_aaa_error_fails_login(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        await client.line()
        await client.send(login_line())
        assert (await client.until(b"a ")).startswith(b"a NO")
        await client.send(b"n NOOP\r\n")
        assert (await client.line()).startswith(b"n OK")

    run(tmp_path, body, aaa=StaticAaaGroup(error=OSError("server down")))
    assert "AAA server group STATIC failed: server down" in caplog.text


def test_wrong_vpn_password_skips_upstream(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        await client.line()
        await client.send(login_line(vpn_password="wrong"))
        assert (await client.until(b"a ")).startswith(b"a NO")
        assert upstream.received == []

    run(tmp_path, body)


def test_upstream_closes_during_login(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        await client.line()
        await client.send(login_line())
        assert (await client.until(b"a ")).startswith(b"a NO")
        (connection,) = listener.connections.values()
        await wait_until(lambda: connection.upstream is None)
        assert connection.state is ConnectionState.UNAUTHENTICATED

    run(tmp_path, body, behaviour="close")


def test_upstream_silent_login_times_out(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        await client.line()
        await client.send(login_line())
        assert (await client.until(b"a ")).startswith(b"a NO")

    run(tmp_path, body, behaviour="silent", timeouts={"upstream": 0.2})


def test_idle_timeout_after_login(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        await client.line()
        await client.send(login_line())
        await client.until(b"a ")
        assert await client.at_eof() == b""
        await wait_until(lambda: not listener.connections)

    run(tmp_path, body, timeouts={"idle_authenticated": 0.2})


def test_client_closes_during_aaa(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    aaa = StaticAaaGroup(delay=0.3)

    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        await client.line()
        await client.send(login_line())
        await wait_until(lambda: aaa.calls == 1)
        client.close()
        await wait_until(lambda: not listener.connections)
        assert upstream.received == []

    run(tmp_path, body, aaa=aaa)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_evicts_authenticating_when_none_idle(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        first = await connect(listener)
        await first.line()
        await first.send(login_line())
        await wait_until(
            lambda: any(
                c.state is ConnectionState.AUTHENTICATING
                for c in listener.connections.values()
            )
        )
        second = await connect(listener)
        assert (await second.line()).startswith(b"* OK")
        assert (await first.at_eof()).startswith(b"* BYE")

    run(tmp_path, body, aaa=StaticAaaGroup(delay=1), outstanding=1)


def test_shutdown_says_bye_before_login_only(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        waiting = await connect(listener)
        await waiting.line()
        working = await connect(listener)
        await working.line()
        await working.send(login_line())
        await working.until(b"a ")

        listener.shutdown_sessions()
        assert await waiting.at_eof() == b"* BYE Server shutting down\r\n"
        await working.send(b"b NOOP\r\n")
        assert await working.line() == b"b OK NOOP done\r\n"

    run(tmp_path, body)


def test_accounting_file_gets_record(tmp_path: Path) -> None:
    path = tmp_path / "accounting.jsonl"
    accounting = Accounting(path)

    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener)
        await client.line()
        await client.send(login_line())
        await client.until(b"a ")
        await client.send(b"b LOGOUT\r\n")
        await client.at_eof()
        await wait_until(lambda: not listener.connections)

    run(tmp_path, body, accounting=accounting)
    accounting.close()
    (line,) = path.read_text().splitlines()
    record = json.loads(line)
    assert record["connection"] == "imap4s-1"
    assert record["vpn_user"] == "vpnuser"
    assert record["mail_user"] == "mailuser"
    assert record["upstream"] == "fake"
    assert record["authenticated"] is True
    assert record["end_reason"] == "upstream closed the connection"
    assert "vpnpass" not in line
    assert "mailpass" not in line


def test_plain_text_client_fails_handshake(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener, tls=False)
        await client.send(b"a LOGIN x y\r\n")
        assert await client.at_eof() == b""
        await wait_until(lambda: not listener.connections)

    run(tmp_path, body)


def test_connection_ids_count_up(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        clients = [await connect(listener) for _ in range(3)]
        for client in clients:
            await client.line()
        assert sorted(listener.connections) == ["imap4s-1", "imap4s-2", "imap4s-3"]

    run(tmp_path, body)


def test_policy_limits_sessions_per_user(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        first, second, third = [await connect(listener) for _ in range(3)]
        for client in (first, second, third):
            await client.line()
        await first.send(login_line())
        assert b"a OK" in await first.until(b"a ")
        await second.send(login_line())
        assert b"a OK" in await second.until(b"a ")

        await third.send(login_line())
        assert (await third.until(b"a ")).startswith(b"a NO")

        await first.send(b"b LOGOUT\r\n")
        await first.at_eof()
        await wait_until(lambda: len(listener.connections) == 2)
        await third.send(login_line("c"))
        assert b"c OK" in await third.until(b"c ")

    run(tmp_path, body)
    assert "user 'vpnuser' already holds the 2 session(s)" in caplog.text


def test_bytes_pipelined_after_starttls_dropped(tmp_path: Path) -> None:
    async def body(listener: Listener, upstream: FakeImapServer) -> None:
        client = await connect(listener, tls=False)
        assert b"LOGINDISABLED" in await client.line()
        await client.send(b"a STARTTLS\r\n")
        await client.send(b"b NOOP\r\n")
        assert (await client.line()).startswith(b"a OK")

        await client.writer.start_tls(
            client_context(listener), server_hostname="127.0.0.1"
        )
        await client.send(b"c NOOP\r\n")
        assert (await client.line()).startswith(b"c OK")
        await client.send(login_line("d"))
        assert b"d OK" in await client.until(b"d ")
        assert not any(line.startswith(b"b NOOP") for line in upstream.received)

    run(tmp_path, body, starttls="required")
