"""Record one real client's conversation through a core session as a transcript.

A :class:`Recorder` listens on a free port of 127.0.0.1 without TLS, accepts
one client connection and drives an IMAP, POP3 or SMTP session with the
settings of ``tests/test_transcripts.py``, except that the server ``mail``
is a real upstream. It relays between the two sockets and writes every input
it feeds the session and every output the session returns in the format of
:mod:`mailproxy_core.transcript`, so ``tests/test_transcripts.py`` can replay
the conversation against the core alone.

The format appends CRLF to every line, so the recorder feeds the session
only whole CRLF-terminated lines. It keeps a chunk that ends inside a line
back until the line is complete. Traffic that no transcript line can represent,
such as a bare LF or bytes that are not UTF-8, raises :class:`RecordingError`.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType

from mailproxy_core import events as ev
from mailproxy_core.events import Event, Side
from mailproxy_core.session import Session
from mailproxy_core.settings import AuthMethod, SessionSettings, UpstreamServer
from mailproxy_core.transcript import apply_answer

from ..test_transcripts import SESSIONS, make_settings

HOST = "127.0.0.1"

#: The only VPN credentials that the recorder's AAA check accepts.
VPN_USER = "vpnuser"
VPN_PASSWORD = "vpnpass"

#: Seconds that one recorded conversation may take in all.
RECORD_TIMEOUT = 30.0

#: Seconds to wait for the client to connect, or for one socket operation.
SOCKET_TIMEOUT = 10.0

_RECEIVE_SIZE = 65536

# Transcript prefixes of each side's input.
_INPUT_PREFIX = {Side.CLIENT: "C", Side.UPSTREAM: "U"}


class RecordingError(RuntimeError):
    """The conversation could not be recorded as a transcript."""


def recording_settings(
    upstream_port: int, options: Mapping[str, str]
) -> SessionSettings:
    """Build the replay's settings with ``mail`` pointing at a real server.

    :param upstream_port: Port of the real server on 127.0.0.1.
    :param options: The transcript's ``! key=value`` options.
    :returns: The settings of ``make_settings(options)`` in
        ``tests/test_transcripts.py`` with only the port of ``mail`` changed.
    """
    settings = make_settings(dict(options))
    mail = replace(settings.servers["mail"], port=upstream_port)
    return replace(settings, servers={**settings.servers, "mail": mail})


def transcript_lines(data: bytes) -> list[str]:
    """Split bytes into the text of transcript lines, without the CRLF.

    :param data: Bytes that end with CRLF.
    :returns: One string per CRLF-terminated line.
    :raises RecordingError: When the bytes do not end with CRLF, are not
        UTF-8, or contain a line break other than CRLF, which a transcript
        line cannot represent.
    """
    if not data.endswith(b"\r\n"):
        raise RecordingError(f"data does not end with CRLF: {data[-40:]!r}")

    lines = []
    for raw in data[:-2].split(b"\r\n"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RecordingError(f"line is not UTF-8: {raw[:40]!r}") from error
        # str.splitlines() also breaks at a bare CR or LF, at form feeds and
        # at other Unicode line separators, so such a line would not survive.
        if text.splitlines() != ([text] if text else []):
            message = f"line contains a line separator other than CRLF: {raw[:40]!r}"
            raise RecordingError(message)
        lines.append(text)
    return lines


class LineBuffer:
    """Bytes of one side that wait for the CRLF that completes their line."""

    def __init__(self) -> None:
        self.pending = b""

    def push(self, data: bytes) -> bytes:
        """Add received bytes and take every complete line.

        :param data: The bytes just received.
        :returns: All bytes up to and including the last CRLF, or ``b""``
            when no line is complete yet.
        """
        self.pending += data
        end = self.pending.rfind(b"\r\n")
        if end < 0:
            return b""

        complete = self.pending[: end + 2]
        self.pending = self.pending[end + 2 :]
        return complete


class TranscriptWriter:
    """The lines of a transcript, in the order the steps happened."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def data(self, prefix: str, data: bytes) -> None:
        """Add one line per CRLF-terminated line of ``data``.

        :param prefix: ``C``, ``U``, ``S``, ``P``, ``F`` or ``B``.
        :param data: The bytes, which must end with CRLF.
        :raises RecordingError: When a line cannot be represented.
        """
        for text in transcript_lines(data):
            # An empty line gets no space after the colon, so that the file
            # has no trailing whitespace there.
            self.lines.append(f"{prefix}: {text}" if text else f"{prefix}:")

    def answer(self, text: str) -> None:
        """Add a ``=`` line for a driver answer such as ``aaa ok``."""
        self.lines.append(f"= {text}")

    def event(self, text: str) -> None:
        """Add a ``~`` line for an expected event such as ``CloseConnection``."""
        self.lines.append(f"~{text}")

    def render(self, header: Sequence[str], options: Mapping[str, str]) -> str:
        """Return the transcript text.

        :param header: Comment lines, without the leading ``#``.
        :param options: Options for ``!`` lines.
        """
        comments = [f"# {line}" if line else "#" for line in header]
        settings = [f"! {key}={value}" for key, value in options.items()]
        return "\n".join([*comments, *settings, *self.lines]) + "\n"


def describe_event(event: Event) -> str | None:
    """Return the ``~`` line text of the events that transcripts show.

    :param event: Any session event.
    :returns: ``StateChanged NEW``, ``AuthenticationFailed METHOD`` or
        ``CloseConnection``, or ``None`` for every other event.
    """
    if isinstance(event, ev.StateChanged):
        return f"StateChanged {event.new.value}"
    if isinstance(event, ev.AuthenticationFailed):
        method = event.method.value if event.method else "none"
        return f"AuthenticationFailed {method}"
    if isinstance(event, ev.CloseConnection):
        return "CloseConnection"
    return None


def check_vpn_credentials(event: ev.AuthenticationRequired) -> str:
    """Check an ``aaa`` request against :data:`VPN_USER` and :data:`VPN_PASSWORD`.

    :param event: The session's request.
    :returns: The driver answer, ``aaa ok`` or ``aaa fail``.
    :raises RecordingError: For a method other than ``aaa``.
    """
    if event.method is not AuthMethod.AAA:
        raise RecordingError(f"the recorder checks aaa only, not {event.method.value}")

    credentials = event.credentials
    password = credentials.vpn_password
    accepted = (
        credentials.vpn_user == VPN_USER
        and password is not None
        and password.reveal() == VPN_PASSWORD
    )
    return "aaa ok" if accepted else "aaa fail"


class Recorder:
    """Relay one client connection through a core session and record it.

    Use it as a context manager: the block runs the client against
    :attr:`port`, and the exit waits for the conversation to end and raises
    whatever went wrong while recording.

    :param protocol: ``imap``, ``pop3`` or ``smtp``, the folder name of the
        transcripts.
    :param upstream_port: Port of the real server on 127.0.0.1.
    :param options: The transcript's ``! key=value`` options, passed to
        ``make_settings``.
    """

    def __init__(
        self,
        protocol: str,
        upstream_port: int,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.options = dict(options or {})
        self._session: Session = SESSIONS[protocol](
            recording_settings(upstream_port, self.options)
        )
        self._writer = TranscriptWriter()
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(SOCKET_TIMEOUT)
        #: The port that the client must connect to.
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[Side, socket.socket] = {}
        self._buffers = {Side.CLIENT: LineBuffer(), Side.UPSTREAM: LineBuffer()}
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._thread.join(RECORD_TIMEOUT + SOCKET_TIMEOUT)
        if self._thread.is_alive():
            raise RecordingError("the recorder thread did not finish")
        if self._error is None:
            return
        # The client usually fails only because the recorder closed on it,
        # so the recorder's error is the one to show.
        message = f"recording failed: {self._error}"
        if value is not None:
            message += f"; the client raised {value!r}"
        raise RecordingError(message) from self._error

    def transcript(self, header: Sequence[str]) -> str:
        """Return the recorded transcript.

        :param header: Comment lines for the top of the file, without ``#``.
        """
        return self._writer.render(header, self.options)

    # Relay loop ----------------------------------------------------------

    def _record(self) -> None:
        try:
            self._accept()
            self._relay()
        except Exception as error:
            # __exit__ raises it in the thread that runs the client.
            self._error = error
        finally:
            self._close_all()

    def _accept(self) -> None:
        client, _address = self._listener.accept()
        self._listener.close()
        client.settimeout(SOCKET_TIMEOUT)
        self._register(Side.CLIENT, client)
        self._answer("start")

    def _relay(self) -> None:
        deadline = time.monotonic() + RECORD_TIMEOUT
        while not self._session.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RecordingError(
                    f"the session was still open after {RECORD_TIMEOUT} s"
                )
            for key, _mask in self._selector.select(remaining):
                self._receive(key.data, key.fileobj)
                if self._session.closed:
                    break

    def _receive(self, side: Side, sock: object) -> None:
        # A closed upstream leaves the selector in _close_upstream, but a
        # ready key from the same select() call may still name it.
        if self._sockets.get(side) is not sock:
            return
        assert isinstance(sock, socket.socket)
        try:
            data = sock.recv(_RECEIVE_SIZE)
        except ConnectionResetError:
            data = b""

        if not data:
            self._end_of_stream(side)
            return
        complete = self._buffers[side].push(data)
        if complete:
            self._feed(side, complete)

    def _feed(self, side: Side, data: bytes) -> None:
        self._writer.data(_INPUT_PREFIX[side], data)
        if side is Side.CLIENT:
            self._handle(self._session.receive_client(data))
        else:
            self._handle(self._session.receive_upstream(data))

    def _end_of_stream(self, side: Side) -> None:
        pending = self._buffers[side].pending
        if pending:
            raise RecordingError(
                f"the {side.value} closed after an incomplete line: {pending[:40]!r}"
            )
        self._answer(f"{side.value}-eof")

    # Events --------------------------------------------------------------

    def _answer(self, text: str) -> None:
        # apply_answer is what the replay calls, so both make the same call.
        self._writer.answer(text)
        self._handle(apply_answer(self._session, text))

    def _handle(self, events: list[Event]) -> None:
        # Requests are answered after the whole list, because the session
        # expects the driver to act on every event before it calls back.
        requests: list[Callable[[], None]] = []
        for event in events:
            request = self._act(event)
            if request is not None:
                requests.append(request)
        for request in requests:
            request()

    def _act(self, event: Event) -> Callable[[], None] | None:
        description = describe_event(event)
        if description is not None:
            self._writer.event(description)

        if isinstance(event, ev.SendToClient):
            self._send("S", Side.CLIENT, event.data)
        elif isinstance(event, ev.SendToUpstream):
            self._send("P", Side.UPSTREAM, event.data)
        elif isinstance(event, ev.ForwardData):
            self._forward(event)
        elif isinstance(event, ev.CloseUpstream):
            self._close_upstream()
        elif isinstance(event, ev.StartTLS):
            raise RecordingError("TLS is not supported: the recorder speaks plain TCP")
        elif isinstance(event, ev.AuthenticationRequired):
            answer = check_vpn_credentials(event)
            return lambda: self._answer(answer)
        elif isinstance(event, ev.UpstreamSelected):
            server = event.server
            return lambda: self._connect(server)
        return None

    def _forward(self, event: ev.ForwardData) -> None:
        if event.direction is ev.Direction.TO_UPSTREAM:
            self._send("F", Side.UPSTREAM, event.data)
        else:
            self._send("B", Side.CLIENT, event.data)

    def _send(self, prefix: str, side: Side, data: bytes) -> None:
        self._writer.data(prefix, data)
        self._sockets[side].sendall(data)

    # Sockets -------------------------------------------------------------

    def _connect(self, server: UpstreamServer) -> None:
        try:
            upstream = socket.create_connection(
                (server.host, server.port), timeout=SOCKET_TIMEOUT
            )
        except OSError:
            self._answer("connect-failed")
            return
        self._register(Side.UPSTREAM, upstream)
        self._answer("connected")

    def _register(self, side: Side, sock: socket.socket) -> None:
        self._sockets[side] = sock
        self._selector.register(sock, selectors.EVENT_READ, side)

    def _close_upstream(self) -> None:
        upstream = self._sockets.pop(Side.UPSTREAM, None)
        self._buffers[Side.UPSTREAM] = LineBuffer()
        if upstream is not None:
            self._selector.unregister(upstream)
            upstream.close()

    def _close_all(self) -> None:
        self._listener.close()
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._selector.close()
