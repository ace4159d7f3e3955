"""Fixtures that run the reference proxy in-process in front of Dovecot.

:func:`start_proxy` runs a :class:`~mailproxy_core.proxy.server.ProxyServer`
on its own event loop in a background thread, bound to a free port of
127.0.0.1, with a throwaway certificate and a users file that contains
``vpnuser`` / ``vpnpass``. Tests talk to it with blocking clients such as
:mod:`imaplib` and inspect its listener through :meth:`RunningProxy.call`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import imaplib
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailproxy_core.proxy.config import ProxyConfig, parse_config
from mailproxy_core.proxy.server import Listener, ProxyServer
from mailproxy_core.proxy.users import UsersFile, hash_password

from .dovecot import DovecotServer

VPN_USER = "vpnuser"
VPN_PASSWORD = "vpnpass"
MAIL_USER = "mailuser"

#: Seconds that any blocking client of these tests waits for the proxy.
CLIENT_TIMEOUT = 10.0

#: Seconds to start or stop the proxy thread.
THREAD_TIMEOUT = 15.0

_T = TypeVar("_T")


def base_document(dovecot: DovecotServer) -> dict[str, Any]:
    """Return a configuration with one IMAP4S listener in front of ``dovecot``."""
    return {
        "drain_timeout": 5,
        "aaa": {"LOCAL": {"type": "local", "users_file": "users.db"}},
        "imap4s": {
            "listen": "127.0.0.1:0",
            "authentication": ["aaa", "mailhost"],
            "authentication_server_group": "LOCAL",
            "default_server": "mail",
            "servers": {
                "mail": {"host": dovecot.host, "port": dovecot.imap_port, "tls": "none"}
            },
        },
    }


def merge(document: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``document`` with ``changes`` merged in, table by table."""
    merged = copy.deepcopy(document)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_users(folder: Path) -> None:
    """Create ``users.db`` in ``folder`` with ``vpnuser`` / ``vpnpass``."""
    UsersFile(folder / "users.db").add(hash_password(VPN_USER, VPN_PASSWORD))


@dataclass(kw_only=True)
class RunningProxy:
    """A proxy serving on a background event loop.

    :ivar config: the configuration it runs.
    :ivar server: the server object, to be touched only through :meth:`call`.
    :ivar loop: the event loop of the background thread.
    :ivar host: the address of the IMAP4S listener.
    :ivar port: the port of the IMAP4S listener.
    """

    config: ProxyConfig
    server: ProxyServer
    loop: asyncio.AbstractEventLoop
    host: str
    port: int

    @property
    def listener(self) -> Listener:
        """The first listener; read it only inside :meth:`call`."""
        return self.server.listeners[0]

    def port_of(self, protocol: str) -> int:
        """Return the bound port of the listener of ``protocol``."""

        def find() -> int:
            for listener in self.server.listeners:
                if listener.config.protocol == protocol:
                    return listener.bound_addresses()[0].port
            raise LookupError(f"no {protocol} listener")

        return self.call(find)

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` on the proxy's loop and return its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(THREAD_TIMEOUT)

    def call(self, function: Callable[[], _T]) -> _T:
        """Run ``function`` on the proxy's loop, so it reads a consistent state."""

        async def wrapper() -> _T:
            return function()

        return self.run(wrapper())

    def client_context(self) -> ssl.SSLContext:
        """Return a client context that trusts the throwaway certificate."""
        pair = self.listener.tls.self_signed
        assert pair is not None
        return ssl.create_default_context(cadata=pair.certificate.decode("ascii"))

    def tls_client(self) -> RawClient:
        """Open a raw TLS connection to the proxy, certificate verified."""
        sock = socket.create_connection((self.host, self.port), CLIENT_TIMEOUT)
        wrapped = self.client_context().wrap_socket(sock, server_hostname=self.host)
        return RawClient(wrapped)

    def tcp_client(self) -> RawClient:
        """Open a plain TCP connection to the proxy."""
        sock = socket.create_connection((self.host, self.port), CLIENT_TIMEOUT)
        return RawClient(sock)

    def imap(self) -> imaplib.IMAP4_SSL:
        """Open an IMAP client connection to the proxy, TLS verified."""
        return imaplib.IMAP4_SSL(
            self.host,
            self.port,
            ssl_context=self.client_context(),
            timeout=CLIENT_TIMEOUT,
        )


class RawClient:
    """A blocking socket client that reads until a marker or end of stream.

    :param sock: a connected socket, TLS or plain.
    :param timeout: seconds that each read may wait.
    """

    def __init__(self, sock: socket.socket, timeout: float = CLIENT_TIMEOUT) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.received = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Send all of ``data``."""
        self.sock.sendall(data)

    def read_until(self, marker: bytes) -> bytes:
        """Read until ``marker`` arrives and return everything up to and with it.

        :raises AssertionError: when the stream ends first.
        :raises TimeoutError: when nothing arrives within the timeout.
        """
        while marker not in self.received:
            chunk = self.sock.recv(65536)
            assert chunk, f"stream ended before {marker!r}; got {self.received!r}"
            self.received += chunk
        end = self.received.index(marker) + len(marker)
        text, self.received = self.received[:end], self.received[end:]
        return text

    def read_to_end(self) -> bytes:
        """Read until the peer closes and return what arrived.

        :raises TimeoutError: when the peer does not close in time.
        """
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                text, self.received = self.received, b""
                return text
            self.received += chunk


@dataclass(kw_only=True)
class _ProxyThread:
    config: ProxyConfig
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    server: ProxyServer | None = None

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self._stop(), self.loop)
        future.result(THREAD_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(THREAD_TIMEOUT)
        self.loop.close()

    async def _stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

        # Whatever still runs now would be destroyed with the loop.
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _start_thread(config: ProxyConfig) -> _ProxyThread:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="proxy", daemon=True)
    thread.start()
    state = _ProxyThread(config=config, loop=loop, thread=thread)

    async def start() -> ProxyServer:
        server = ProxyServer(config)
        await server.start()
        return server

    try:
        future = asyncio.run_coroutine_threadsafe(start(), loop)
        state.server = future.result(THREAD_TIMEOUT)
    except (concurrent.futures.TimeoutError, Exception):
        state.stop()
        raise
    return state


@contextlib.contextmanager
def running_proxy(config: ProxyConfig) -> Iterator[RunningProxy]:
    """Run ``config`` in a background thread until the block ends."""
    state = _start_thread(config)
    assert state.server is not None
    try:
        server = state.server
        bound = asyncio.run_coroutine_threadsafe(
            _bound_address(server), state.loop
        ).result(THREAD_TIMEOUT)
        yield RunningProxy(
            config=config,
            server=server,
            loop=state.loop,
            host=bound[0],
            port=bound[1],
        )
    finally:
        state.stop()


async def _bound_address(server: ProxyServer) -> tuple[str, int]:
    address = server.listeners[0].bound_addresses()[0]
    return address.host, address.port


#: Starts a proxy; keyword arguments are merged into the base configuration.
StartProxy = Callable[..., RunningProxy]


@pytest.fixture
def start_proxy(dovecot: DovecotServer) -> Iterator[StartProxy]:
    """Return a function that starts proxies in front of ``dovecot``.

    Call it with a mapping of configuration changes, such as
    ``start_proxy({"imap4s": {"outstanding": 2}})``. Every proxy it started
    stops when the test ends.
    """
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        write_users(folder)

        def start(changes: Mapping[str, Any] | None = None) -> RunningProxy:
            document = merge(base_document(dovecot), changes or {})
            config = parse_config(document, folder / "proxy.toml")
            return stack.enter_context(running_proxy(config))

        yield start


@pytest.fixture
def imap_proxy(start_proxy: StartProxy) -> RunningProxy:
    """Return a proxy with the base configuration in front of Dovecot."""
    return start_proxy()
