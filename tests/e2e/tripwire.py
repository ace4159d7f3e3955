"""A TCP listener that counts the connections it accepts and closes each one.

Tests configure it as an upstream server that the proxy must never contact,
then assert that :meth:`Tripwire.count` is still 0.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

HOST = "127.0.0.1"

#: Seconds that the accept loop waits before it checks for the stop request.
POLL_INTERVAL = 0.05

#: Seconds that :meth:`Tripwire.count` waits for the accept loop to catch up
#: with a connection that the kernel has already completed.
SETTLE_TIME = 0.2

THREAD_TIMEOUT = 5.0


class Tripwire:
    """A listener on a free port of 127.0.0.1, run by a background thread.

    :ivar host: The address that it listens on.
    :ivar port: The port that it listens on.
    """

    def __init__(self) -> None:
        self._server = socket.create_server((HOST, 0))
        self._server.settimeout(POLL_INTERVAL)
        self.host = HOST
        self.port: int = self._server.getsockname()[1]
        self._accepted = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._accept_loop, name="tripwire", daemon=True
        )
        self._thread.start()

    def server_table(self) -> dict[str, object]:
        """Return a ``[NAME.servers.NAME]`` table that points at this listener.

        :returns: The ``host``, ``port`` and ``tls`` keys.
        """
        return {"host": self.host, "port": self.port, "tls": "none"}

    def count(self) -> int:
        """Wait :data:`SETTLE_TIME` seconds, then count the accepted connections.

        The kernel completes a connection before the accept loop takes it,
        so the wait lets the loop catch up with a proxy that connected just
        before the call. A connection opened after the wait is not counted.

        :returns: The number of accepted connections.
        """
        time.sleep(SETTLE_TIME)
        with self._lock:
            return self._accepted

    def close(self) -> None:
        """Stop the accept loop and close the listening socket."""
        self._stopping.set()
        self._thread.join(THREAD_TIMEOUT)
        self._server.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _address = self._server.accept()
            except TimeoutError:
                continue
            # Closing at once makes a connecting proxy see end of stream
            # instead of waiting for a greeting until its upstream timeout.
            connection.close()
            with self._lock:
                self._accepted += 1


@contextlib.contextmanager
def running_tripwire() -> Iterator[Tripwire]:
    """Run a :class:`Tripwire` until the block ends.

    :returns: A context manager that yields the running listener.
    """
    wire = Tripwire()
    try:
        yield wire
    finally:
        wire.close()


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    """Run a :class:`Tripwire` for one test.

    :returns: A generator that yields the running listener.
    """
    with running_tripwire() as wire:
        yield wire
