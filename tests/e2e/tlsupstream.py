"""A TLS front for the plain-text Dovecot, so tests can reach an upstream
over implicit TLS or STARTTLS.

:func:`tls_front` listens on a free port of 127.0.0.1 with a self-signed
certificate for 127.0.0.1. In ``implicit`` mode TLS starts at once; in
``starttls`` mode it greets with ``STARTTLS`` in its capabilities, accepts
one ``STARTTLS`` command and then starts TLS. Either way it then relays to
Dovecot, and in ``starttls`` mode it drops Dovecot's greeting, which the
client already had from the front.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailproxy_core.proxy.tls import generate_self_signed, load_certificate_pair

from .dovecot import DovecotServer

THREAD_TIMEOUT = 10.0
GREETING = b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] TLS front ready\r\n"


@dataclass(frozen=True, kw_only=True)
class TlsFront:
    """A running TLS front.

    :ivar port: its port on 127.0.0.1.
    :ivar ca_file: the PEM certificate that clients must trust.
    """

    port: int
    ca_file: Path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    dovecot: DovecotServer,
    *,
    drop_greeting: bool,
) -> None:
    up_reader, up_writer = await asyncio.open_connection(
        dovecot.host, dovecot.imap_port
    )
    if drop_greeting:
        await up_reader.readline()
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def _handler(dovecot: DovecotServer, mode: str, context: ssl.SSLContext) -> object:
    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if mode == "starttls":
            writer.write(GREETING)
            line = await reader.readline()
            tag = line.split(b" ", 1)[0]
            if b"STARTTLS" not in line.upper():
                writer.close()
                return
            writer.write(tag + b" OK Begin TLS negotiation now\r\n")
            await writer.drain()
            await writer.start_tls(context)
        await _relay(reader, writer, dovecot, drop_greeting=mode == "starttls")

    return handle


@contextlib.contextmanager
def tls_front(dovecot: DovecotServer, mode: str) -> Iterator[TlsFront]:
    """Run a TLS front in ``mode`` (``implicit`` or ``starttls``)."""
    pair = generate_self_signed(hosts=("127.0.0.1",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_certificate_pair(context, pair)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="tls-front", daemon=True)
    thread.start()
    handler = _handler(dovecot, mode, context)

    async def start() -> asyncio.Server:
        implicit = context if mode == "implicit" else None
        return await asyncio.start_server(handler, "127.0.0.1", 0, ssl=implicit)  # type: ignore[arg-type]

    with tempfile.TemporaryDirectory() as folder:
        ca_file = Path(folder, "front.pem")
        ca_file.write_bytes(pair.certificate)
        server = asyncio.run_coroutine_threadsafe(start(), loop).result(THREAD_TIMEOUT)
        try:
            yield TlsFront(port=server.sockets[0].getsockname()[1], ca_file=ca_file)
        finally:
            future = asyncio.run_coroutine_threadsafe(_stop(server), loop)
            future.result(THREAD_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(THREAD_TIMEOUT)
            loop.close()


async def _stop(server: asyncio.Server) -> None:
    server.close()
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
