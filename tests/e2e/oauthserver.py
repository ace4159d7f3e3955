"""Run an OAuth 2.0 token introspection endpoint (RFC 7662) on 127.0.0.1.

Dovecot's oauth2 passdb posts each bearer token that a client sends to this
endpoint and reads the JSON reply. The server stores a fixed table of good
tokens with the user of each, reports every other token as inactive, and
records every request, so tests can check which tokens reached it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

HOST = "127.0.0.1"

#: The path that serves introspection requests. Every other path returns 404.
INTROSPECTION_PATH = "/introspect"

#: Largest request body read, in bytes. A form with one token is far smaller.
MAX_BODY = 65536

#: Seconds to wait for the server thread to stop.
SHUTDOWN_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class IntrospectionRequest:
    """One HTTP request that reached the server.

    :ivar method: The HTTP method, such as ``POST``.
    :ivar path: The request target, query included.
    :ivar content_type: The ``Content-Type`` header, or ``""`` when absent.
    :ivar form: The fields of an ``application/x-www-form-urlencoded``
        body, each with every value it was given.
    """

    method: str
    path: str
    content_type: str
    form: Mapping[str, tuple[str, ...]]

    @property
    def token(self) -> str | None:
        """The single ``token`` field of the form, or ``None`` without one."""
        values = self.form.get("token", ())
        return values[0] if len(values) == 1 else None


class IntrospectionServer:
    """An RFC 7662 introspection endpoint in a background thread.

    :param tokens: The user name of each active token, keyed by token.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self.tokens = dict(tokens)
        self._requests: list[IntrospectionRequest] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer((HOST, 0), _handler_class(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="introspection", daemon=True
        )

    @property
    def port(self) -> int:
        """The TCP port that the server listens on."""
        port: int = self._http.server_address[1]
        return port

    @property
    def url(self) -> str:
        """The introspection URL, for Dovecot's ``introspection_url``."""
        return f"http://{HOST}:{self.port}{INTROSPECTION_PATH}"

    def start(self) -> None:
        """Start serving requests in the background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the thread to end."""
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(SHUTDOWN_TIMEOUT)

    def record(self, request: IntrospectionRequest) -> None:
        """Store one request, called from the handler threads.

        :param request: The request as received.
        """
        with self._lock:
            self._requests.append(request)

    def take_requests(self) -> list[IntrospectionRequest]:
        """Return the requests recorded so far and forget them.

        :returns: The requests in arrival order.
        """
        with self._lock:
            taken, self._requests = self._requests, []
        return taken

    def introspect(self, token: str | None) -> dict[str, Any]:
        """Build the introspection response for ``token`` (RFC 7662 section 2.2).

        :param token: The token from the request, or ``None`` when missing.
        :returns: ``active`` and ``username`` for a known token, else only
            ``active`` set to false, which is all that RFC 7662 lets an
            endpoint reveal about an unknown token.
        """
        username = self.tokens.get(token or "")
        if username is None:
            return {"active": False}
        return {"active": True, "username": username}


def _handler_class(server: IntrospectionServer) -> type[BaseHTTPRequestHandler]:
    """Create a request handler class bound to ``server``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = self._read_request()
            server.record(request)
            if request.path != INTROSPECTION_PATH:
                self._send_json(404, {"error": "not_found"})
                return
            self._send_json(200, server.introspect(request.token))

        def do_GET(self) -> None:
            # RFC 7662 section 2.1 defines POST only.
            server.record(self._read_request())
            self._send_json(405, {"error": "method_not_allowed"})

        def log_message(self, format: str, *args: Any) -> None:
            # The tests read the recorded requests, so stderr stays quiet.
            return

        def _read_request(self) -> IntrospectionRequest:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            length = max(0, min(length, MAX_BODY))
            body = self.rfile.read(length).decode("utf-8", errors="replace")
            content_type = self.headers.get("Content-Type", "")
            form: dict[str, tuple[str, ...]] = {}
            if content_type.startswith("application/x-www-form-urlencoded"):
                parsed = parse_qs(body, keep_blank_values=True)
                form = {key: tuple(values) for key, values in parsed.items()}
            return IntrospectionRequest(
                method=self.command,
                path=self.path,
                content_type=content_type,
                form=form,
            )

        def _send_json(self, status: int, document: Mapping[str, Any]) -> None:
            payload = json.dumps(document).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@contextmanager
def running_introspection_server(
    tokens: Mapping[str, str],
) -> Iterator[IntrospectionServer]:
    """Run an :class:`IntrospectionServer` until the block ends.

    :param tokens: The user name of each active token, keyed by token.
    :returns: A context manager that yields the running server.
    """
    server = IntrospectionServer(tokens)
    server.start()
    try:
        yield server
    finally:
        server.stop()
