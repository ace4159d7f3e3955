"""Tests of :class:`PeerStream` over real loopback sockets."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from mailproxy_core.proxy.stream import READ_BUFFER, PeerStream
from mailproxy_core.proxy.tls import server_tls

TIMEOUT = 10.0

Body = Callable[
    [PeerStream, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
]


def run_pair(body: Body, *, start_paused: bool = False) -> None:
    """Accept one connection as a PeerStream and run ``body`` with a client."""

    async def main() -> None:
        accepted: asyncio.Future[PeerStream] = (
            asyncio.get_running_loop().create_future()
        )

        def make() -> PeerStream:
            return PeerStream(
                start_paused=start_paused, on_connection_made=accepted.set_result
            )

        server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        stream = await asyncio.wait_for(accepted, TIMEOUT)
        try:
            await asyncio.wait_for(body(stream, reader, writer), TIMEOUT)
        finally:
            writer.close()
            stream.abort()
            server.close()

    asyncio.run(main())


async def read_exactly(stream: PeerStream, size: int) -> bytes:
    """Read chunks until ``size`` bytes arrived."""
    data = b""
    while len(data) < size:
        chunk = await stream.read()
        assert chunk, "stream ended early"
        data += chunk
    return data


def test_read_returns_data_then_eof() -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"hello")
        await writer.drain()
        assert await read_exactly(stream, 5) == b"hello"
        writer.close()
        assert await stream.read() == b""

    run_pair(body)


def test_reading_pauses_when_buffer_full() -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"x" * (4 * READ_BUFFER))
        while not stream.reading_paused:
            await asyncio.sleep(0.01)
        assert stream.buffered <= READ_BUFFER

        data = await read_exactly(stream, 4 * READ_BUFFER)
        assert data == b"x" * (4 * READ_BUFFER)

    run_pair(body)


def test_take_buffered_empties_stream() -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"early bytes")
        await writer.drain()
        while stream.buffered < len(b"early bytes"):
            await asyncio.sleep(0.01)
        assert stream.take_buffered() == b"early bytes"
        assert stream.buffered == 0

    run_pair(body)


def test_start_paused_reads_nothing_until_resumed() -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"data")
        await writer.drain()
        await asyncio.sleep(0.1)
        assert stream.buffered == 0
        stream.resume()
        assert await read_exactly(stream, 4) == b"data"

    run_pair(body, start_paused=True)


def test_close_wakes_reader() -> None:
    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        waiting = asyncio.create_task(stream.read())
        await asyncio.sleep(0.05)
        stream.close()
        assert await waiting == b""
        await stream.wait_closed(TIMEOUT)

    run_pair(body)


def test_tls_transfer_intact() -> None:
    """A large transfer through TLS arrives unchanged.

    asyncio's TLS layer fills slices of the read buffer; with a bytearray
    instead of a memoryview those slices were copies and data got lost.
    """
    tls = server_tls(None, None, listener="test")
    assert tls.self_signed is not None
    client_context = ssl.create_default_context(
        cadata=tls.self_signed.certificate.decode("ascii")
    )
    payload = bytes(range(256)) * 8192

    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        handshake = asyncio.create_task(
            stream.start_tls(tls.context, server_side=True, timeout=TIMEOUT)
        )
        await writer.start_tls(client_context, server_hostname="127.0.0.1")
        await handshake
        writer.write(payload)
        await writer.drain()
        assert await read_exactly(stream, len(payload)) == payload

        stream.write(payload)
        assert await reader.readexactly(len(payload)) == payload

    run_pair(body, start_paused=True)


def test_failed_handshake_marks_stream_lost() -> None:
    tls = server_tls(None, None, listener="test")

    async def body(
        stream: PeerStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"not a TLS client hello\r\n")
        await writer.drain()
        try:
            await stream.start_tls(tls.context, server_side=True, timeout=TIMEOUT)
        except (OSError, ssl.SSLError):
            pass
        else:
            raise AssertionError("handshake with garbage succeeded")
        await stream.wait_closed(0.5)
        assert await stream.read() == b""

    run_pair(body, start_paused=True)
