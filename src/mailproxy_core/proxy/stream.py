"""A byte stream over one asyncio transport with bounded buffers.

:class:`PeerStream` replaces the :mod:`asyncio` stream pair for the proxy
because the proxy must know what it has buffered. Before a STARTTLS
handshake, bytes already received from that peer must go to the session
(which rejects them) instead of being read later as if they had come
through TLS. The stream also bounds both buffers:

* reading pauses once :data:`READ_BUFFER` bytes wait to be consumed;
* :meth:`PeerStream.drain` waits once more than ``WRITE_BUFFER -
  READ_SIZE`` bytes wait to be sent, so a relay that writes chunks of at
  most :data:`READ_SIZE` keeps the write buffer within :data:`WRITE_BUFFER`;
* under a TLS layer that :meth:`PeerStream.start_tls` added, the plain
  transport buffers about :data:`RAW_WRITE_BUFFER` of encrypted records.

A relay that drains the writer before reading again therefore holds at
most 256 KiB per direction, the sum of the three, kernel socket buffers
not counted. A TLS connection that
asyncio opened with ``ssl=`` keeps asyncio's default of 64 KiB for the
plain transport.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable
from typing import Final

from .tls import set_no_delay

#: Bytes read from the socket in one call.
READ_SIZE: Final = 32 * 1024

#: Maximum bytes received but not yet consumed.
READ_BUFFER: Final = 64 * 1024

#: Maximum bytes waiting to be sent, for writes of at most :data:`READ_SIZE`.
WRITE_BUFFER: Final = 176 * 1024

# The write buffer size above which drain() waits.
_HIGH_WATER: Final = WRITE_BUFFER - READ_SIZE

#: Write buffer limit of the plain transport below a TLS layer.
RAW_WRITE_BUFFER: Final = 16 * 1024


class PeerStream(asyncio.BufferedProtocol):
    """The protocol object of one peer connection, used as a stream.

    :param start_paused: do not read until :meth:`start_tls` or
        :meth:`resume`; a server that starts TLS itself must not consume
        the client's first handshake bytes as plain data.
    :param on_connection_made: called with the stream once the transport
        exists; a listener starts the connection's task there.
    """

    def __init__(
        self,
        *,
        start_paused: bool = False,
        on_connection_made: Callable[[PeerStream], None] | None = None,
    ) -> None:
        self._on_connection_made = on_connection_made
        self._transport: asyncio.Transport | None = None
        self._start_paused = start_paused
        # A memoryview, because asyncio's TLS layer fills slices of the
        # buffer, and slicing a bytearray would copy it.
        self._read_buffer = memoryview(bytearray(READ_SIZE))
        # Set during read_at_most, which must take no byte past its size.
        self._read_limit: int | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._eof = False
        self._reading_paused = False
        self._paused_by_caller = start_paused
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Store the transport, set TCP_NODELAY and the write buffer limit."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        set_no_delay(transport)
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        if self._start_paused:
            self._pause_reading()
        if self._on_connection_made is not None:
            self._on_connection_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Return the buffer that the transport reads into.

        Its size bounds one read of the socket, so :meth:`read_at_most`
        returns a shorter slice.
        """
        if self._read_limit is not None:
            return self._read_buffer[: self._read_limit]
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        """Queue ``nbytes`` received bytes and pause reading when full."""
        self._chunks.append(bytes(self._read_buffer[:nbytes]))
        self._buffered += nbytes
        # A bounded read must stop after one chunk, before the transport
        # reads the socket again.
        if self._read_limit is not None or self._buffered + READ_SIZE > READ_BUFFER:
            self._pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        """Mark the end of the stream; the transport then closes itself."""
        self._eof = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the end of the stream and release every waiter."""
        self._eof = True
        self._wake_reader()
        self._release_drain()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        """Make :meth:`drain` wait until the write buffer shrinks."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """Release a waiting :meth:`drain`."""
        self._write_paused = False
        self._release_drain()

    # Stream interface ---------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned by :meth:`read`."""
        return self._buffered

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet sent, TLS records included."""
        if self._transport is None:
            return 0
        return self._transport.get_write_buffer_size()

    @property
    def reading_paused(self) -> bool:
        """Whether reading from the socket is paused."""
        return self._reading_paused

    @property
    def closed(self) -> bool:
        """Whether the connection is closing or lost."""
        return self._transport is None or self._transport.is_closing()

    @property
    def transport(self) -> asyncio.Transport:
        """The current transport, a TLS one after :meth:`start_tls`."""
        assert self._transport is not None
        return self._transport

    def extra(self, name: str) -> object:
        """Return transport information such as ``peername``."""
        return self.transport.get_extra_info(name)

    async def read(self) -> bytes:
        """Return the next received chunk, or ``b""`` at the end of stream."""
        await self._wait_for_data()
        if not self._chunks:
            return b""
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        self._resume_if_room()
        return chunk

    async def read_at_most(self, size: int) -> bytes:
        """Return up to ``size`` bytes, reading no more than that from the socket.

        The bytes after them stay in the socket for the next reader, such
        as the TLS handshake that :meth:`start_tls` runs. Reading is paused
        when this returns, as :meth:`pause` leaves it.

        :param size: 1 to :data:`READ_SIZE`.
        :returns: 1 to ``size`` bytes, or ``b""`` at the end of stream.
        :raises ValueError: when ``size`` is out of range.
        """
        if not 1 <= size <= READ_SIZE:
            raise ValueError(f"size {size} is invalid; use 1 to {READ_SIZE}")
        if not self._chunks and not self._eof:
            self._read_limit = size
            self.resume()
            try:
                await self._wait_for_data()
            finally:
                self._read_limit = None
                self.pause()
        return self._take(size)

    def take_buffered(self) -> bytes:
        """Remove and return everything received but not yet read."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        self._resume_if_room()
        return data

    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending; does nothing once closing."""
        if not self.closed:
            self.transport.write(data)

    def needs_drain(self) -> bool:
        """Return whether the write buffer is above ``WRITE_BUFFER - READ_SIZE``."""
        return self._write_paused and not self.closed

    async def drain(self) -> None:
        """Wait until the write buffer is below its limit or the connection is lost."""
        if not self.needs_drain():
            return
        if self._drain_waiter is None:
            self._drain_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drain_waiter)

    def pause(self) -> None:
        """Stop reading from the socket, whatever the buffer holds."""
        self._paused_by_caller = True
        self._pause_reading()

    def resume(self) -> None:
        """Undo :meth:`pause`; reading restarts unless the buffer is full."""
        self._paused_by_caller = False
        self._resume_if_room()

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        timeout: float,
    ) -> None:
        """Run a TLS handshake on this connection and switch to TLS.

        :param timeout: seconds for the handshake.
        :raises ssl.SSLError: or :class:`OSError` or :class:`TimeoutError`
            when the handshake fails.
        """
        loop = asyncio.get_running_loop()
        self.transport.set_write_buffer_limits(high=RAW_WRITE_BUFFER)

        # loop.start_tls resumes reading on the plain transport itself.
        self._paused_by_caller = False
        self._reading_paused = False
        try:
            transport = await loop.start_tls(
                self.transport,
                self,
                context,
                server_side=server_side,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
            )
            if transport is None:
                # asyncio returns no transport when the peer or the proxy
                # closed the connection during the handshake.
                raise ConnectionResetError("connection closed during the TLS handshake")
        except BaseException:
            # asyncio does not call connection_lost for a failed handshake.
            self.connection_lost(None)
            raise
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)

    def close(self) -> None:
        """Close after sending what is buffered; :meth:`read` then returns ``b""``."""
        self._eof = True
        self._wake_reader()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""
        self._eof = True
        self._wake_reader()
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the close, then abort."""
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout)
        except TimeoutError:
            self.abort()

    # Helpers ------------------------------------------------------------

    async def _wait_for_data(self) -> None:
        while not self._chunks and not self._eof:
            self._data_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._data_waiter
            finally:
                self._data_waiter = None

    def _take(self, size: int) -> bytes:
        if not self._chunks:
            return b""
        chunk = self._chunks.popleft()
        if len(chunk) > size:
            self._chunks.appendleft(chunk[size:])
            chunk = chunk[:size]
        self._buffered -= len(chunk)
        self._resume_if_room()
        return chunk

    def _pause_reading(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._reading_paused = True
            transport.pause_reading()

    def _resume_if_room(self) -> None:
        has_room = self._buffered + READ_SIZE <= READ_BUFFER
        if self._paused_by_caller or not self._reading_paused or not has_room:
            return
        self._reading_paused = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
