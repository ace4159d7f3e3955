"""The upstream-facing IMAP4 machine: greeting, STARTTLS, capabilities, login.

The proxy acts as an IMAP client here. It reads the greeting, upgrades
with STARTTLS when the server is configured so, learns the capabilities,
and logs in with the mail credentials using ``LOGIN`` or, when the server
disables it or an authorization identity must pass, ``AUTHENTICATE
PLAIN``. Values go out as quoted strings or literals, so no credential
can inject a command. The tagged result goes back to the session, which
gives it to the client under the client's own tag.
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import Final

from ..errors import MailProxyError
from ..framing import LineBuffer, LineTooLongError, parse_literal_suffix
from ..machine import (
    ChallengeForClient,
    ClientAddress,
    LoginFailed,
    LoginSucceeded,
    Reply,
    TlsRequested,
    UpstreamLogin,
    UpstreamMachine,
    UpstreamOutput,
    UpstreamReply,
    Violation,
)
from ..sasl import encode_base64
from ..settings import UpstreamServer, UpstreamTLS
from .syntax import can_quote, quote

#: Longest response line accepted from an upstream before the login ends.
MAX_UPSTREAM_LINE: Final = 65536

_CAPABILITY_CODE: Final = re.compile(rb"^\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


class _Stage(Enum):
    GREETING = auto()
    STARTTLS = auto()
    HANDSHAKE = auto()
    CAPABILITY = auto()
    ID = auto()
    LOGIN = auto()
    CAPABILITY_AFTER_LOGIN = auto()
    DONE = auto()


class ImapUpstreamMachine(UpstreamMachine):
    """The proxy's client side toward an upstream IMAP server.

    :param server: the upstream being logged in to.
    :param login: the mail credentials; IMAP always logs in upstream.
    :param client_address: the client's address to send in an ``ID``
        command before the login, when the server offers ``ID``.
    """

    def __init__(
        self,
        server: UpstreamServer,
        login: UpstreamLogin | None,
        *,
        client_address: ClientAddress | None = None,
    ) -> None:
        super().__init__(server, login, client_address=client_address)
        self._buffer = LineBuffer(max_line=MAX_UPSTREAM_LINE)
        self._stage = _Stage.GREETING
        self._capabilities: list[bytes] | None = None
        self._tls_done = server.tls is not UpstreamTLS.STARTTLS
        self._counter = 0
        self._tag = b""
        self._continuations: list[bytes] = []
        self._untagged: list[bytes] = []
        self._login_text = b""
        self._parts: list[bytes] = []
        self._literal_size: int | None = None
        self._response_size = 0
        self._id_done = client_address is None

    def receive(self, data: bytes) -> list[UpstreamOutput]:
        self._buffer.feed(data)
        outputs: list[UpstreamOutput] = []
        while self._stage not in (_Stage.DONE, _Stage.HANDSHAKE):
            try:
                line = self._read_response()
            except (LineTooLongError, MailProxyError) as error:
                return [*outputs, Violation(message=str(error), fatal=True)]
            if line is None:
                break
            outputs.extend(self._handle(line))
            if any(isinstance(o, (LoginFailed, Violation)) for o in outputs):
                break
        if self._stage is _Stage.HANDSHAKE and len(self._buffer):
            return self._refuse_early_bytes(outputs)
        return outputs

    def tls_established(self) -> list[UpstreamOutput]:
        self._tls_done = True
        self._capabilities = None
        return self._request_capabilities()

    def take_remaining(self) -> bytes:
        return self._buffer.take_all()

    # Reading ---------------------------------------------------------------

    def _read_response(self) -> bytes | None:
        # A response line may end in a literal announcement (RFC 9051
        # section 4.3); the literal and the rest of the line belong to it.
        # The parts stay buffered across reads until the response is whole.
        buffer = self._buffer
        while True:
            if self._literal_size is not None:
                literal = buffer.read_exact(self._literal_size)
                if literal is None:
                    return None
                self._parts.append(literal)
                self._literal_size = None
            line = buffer.next_line()
            if line is None:
                return None
            announced = parse_literal_suffix(line, strict=False)
            if announced is None:
                parts, self._parts = [*self._parts, line], []
                self._response_size = 0
                return b"".join(parts)
            self._parts.append(line + b"\r\n")
            self._response_size += len(line) + announced[0]
            if self._response_size > MAX_UPSTREAM_LINE:
                raise MailProxyError("upstream response with literals is too long")
            self._literal_size = announced[0]

    def _handle(self, line: bytes) -> list[UpstreamOutput]:
        if self._stage is _Stage.GREETING:
            return self._greeting(line)
        if line.startswith(b"+"):
            return self._continuation(line[2:])
        if line.startswith(b"* "):
            return self._untagged_response(line[2:])
        tag, _, rest = line.partition(b" ")
        if tag != self._tag:
            return [
                Violation(
                    message="upstream sent a reply with an unknown tag", fatal=True
                )
            ]
        return self._tagged(rest)

    def _greeting(self, line: bytes) -> list[UpstreamOutput]:
        upper = line[:10].upper()
        if upper.startswith(b"* PREAUTH"):
            reason = (
                "upstream greeted with PREAUTH, so the mail login cannot be checked"
            )
            return [LoginFailed(reason=reason, unavailable=True)]
        if upper.startswith(b"* BYE"):
            return [
                LoginFailed(reason="upstream refused the connection", unavailable=True)
            ]
        if not upper.startswith(b"* OK"):
            return [Violation(message="upstream greeting is not * OK", fatal=True)]
        self._note_capability_code(line[5:])
        if not self._tls_done:
            self._stage = _Stage.STARTTLS
            return [self._command(b"STARTTLS")]
        if self._capabilities is None:
            return self._request_capabilities()
        return self._send_login()

    def _untagged_response(self, text: bytes) -> list[UpstreamOutput]:
        if text[:11].upper() == b"CAPABILITY ":
            self._capabilities = text[11:].split()
            if self._stage is not _Stage.LOGIN:
                return []
        if self._stage is _Stage.LOGIN:
            self._untagged.append(b"* " + text)
        return []

    def _continuation(self, data: bytes) -> list[UpstreamOutput]:
        if self._stage is _Stage.LOGIN and self._continuations:
            return [Reply(data=self._continuations.pop(0))]
        login = self.login
        if self._stage is _Stage.LOGIN and login is not None and login.is_token:
            # A token exchange ends with an error challenge that the client
            # must answer before the server's NO (RFC 7628 section 3.2.2).
            return [ChallengeForClient(data=data)]
        # An unexpected challenge: cancel the exchange (RFC 9051 6.2.2).
        return [Reply(data=b"*\r\n")]

    def _tagged(self, rest: bytes) -> list[UpstreamOutput]:
        status, _, text = rest.partition(b" ")
        ok = status.upper() == b"OK"
        if self._stage is _Stage.STARTTLS:
            if not ok:
                return [
                    LoginFailed(reason="upstream refused STARTTLS", unavailable=True)
                ]
            self._stage = _Stage.HANDSHAKE
            return [TlsRequested()]
        if self._stage is _Stage.CAPABILITY:
            if not ok or self._capabilities is None:
                return [
                    LoginFailed(reason="upstream CAPABILITY failed", unavailable=True)
                ]
            return self._send_login()
        if self._stage is _Stage.ID:
            # A rejected ID only loses the address in the server's log, so
            # the login goes ahead whatever the status.
            return self._send_login()
        if self._stage is _Stage.LOGIN:
            return self._login_result(ok, rest, text)
        return self._capability_after_login(ok)

    # Login -----------------------------------------------------------------

    def _request_capabilities(self) -> list[UpstreamOutput]:
        self._stage = _Stage.CAPABILITY
        return [self._command(b"CAPABILITY")]

    def _send_login(self) -> list[UpstreamOutput]:
        address = self.client_address
        if not self._id_done and address is not None:
            self._id_done = True
            if b"ID" in {c.upper() for c in self._capabilities or []}:
                return self._send_id(address)
        login = self.login
        if login is None:
            self._stage = _Stage.DONE
            return [LoginSucceeded(reply=UpstreamReply(text=b"OK Logged in"))]
        capabilities = {c.upper() for c in self._capabilities or []}
        self._stage = _Stage.LOGIN
        if login.is_token or login.authzid or b"LOGINDISABLED" in capabilities:
            return self._authenticate(login, capabilities)
        return self._login_command(login, capabilities)

    def _send_id(self, address: ClientAddress) -> list[UpstreamOutput]:
        # Dovecot takes these fields from proxies in login_trusted_networks
        # and logs the client as rip= (Dovecot 2.3 "Forwarding parameters").
        fields = [b'"x-originating-ip"', quote(address.host.encode())]
        if address.port is not None:
            fields += [b'"x-originating-port"', quote(b"%d" % address.port)]
        self._stage = _Stage.ID
        command = self._next_tag() + b" ID (" + b" ".join(fields) + b")\r\n"
        return [Reply(data=command)]

    def _login_command(
        self, login: UpstreamLogin, capabilities: set[bytes]
    ) -> list[UpstreamOutput]:
        # Each write but the first waits for a continuation request when a
        # synchronizing literal is announced (RFC 9051 section 4.3).
        literal_plus = b"LITERAL+" in capabilities
        writes: list[bytes] = []
        current = self._next_tag() + b" LOGIN"
        for value in (login.username.encode(), login.secret.reveal().encode()):
            if can_quote(value):
                current += b" " + quote(value)
            elif literal_plus:
                current += b" {%d+}\r\n" % len(value) + value
            else:
                writes.append(current + b" {%d}\r\n" % len(value))
                current = value
        writes.append(current + b"\r\n")
        self._continuations = writes[1:]
        return [Reply(data=writes[0])]

    def _authenticate(
        self, login: UpstreamLogin, capabilities: set[bytes]
    ) -> list[UpstreamOutput]:
        mechanism = login.sasl_mechanism()
        if b"AUTH=" + mechanism.encode() not in capabilities:
            reason = f"upstream does not offer AUTHENTICATE {mechanism}"
            return [LoginFailed(reason=reason, unavailable=True)]
        message = login.sasl_message()
        response = encode_base64(message) or b"="
        command = self._next_tag() + b" AUTHENTICATE " + mechanism.encode()
        if b"SASL-IR" in capabilities:
            return [Reply(data=command + b" " + response + b"\r\n")]
        self._continuations = [response + b"\r\n"]
        return [Reply(data=command + b"\r\n")]

    def _login_result(self, ok: bool, rest: bytes, text: bytes) -> list[UpstreamOutput]:
        self._continuations = []
        if not ok:
            self._stage = _Stage.DONE
            reply = UpstreamReply(text=rest)
            return [LoginFailed(reason="upstream rejected the mail login", reply=reply)]
        if _CAPABILITY_CODE.match(text):
            self._stage = _Stage.DONE
            return [self._success(rest)]
        self._login_text = text
        self._stage = _Stage.CAPABILITY_AFTER_LOGIN
        self._capabilities = None
        return [self._command(b"CAPABILITY")]

    def _capability_after_login(self, ok: bool) -> list[UpstreamOutput]:
        self._stage = _Stage.DONE
        text = b"OK " + self._login_text
        if ok and self._capabilities:
            code = b"[CAPABILITY " + b" ".join(self._capabilities) + b"] "
            text = b"OK " + code + self._login_text
        return [self._success(text)]

    def _success(self, text: bytes) -> LoginSucceeded:
        return LoginSucceeded(
            reply=UpstreamReply(untagged=tuple(self._untagged), text=text)
        )

    # Helpers ---------------------------------------------------------------

    def _next_tag(self) -> bytes:
        self._counter += 1
        self._tag = b"mp%d" % self._counter
        return self._tag

    def _command(self, name: bytes) -> Reply:
        return Reply(data=self._next_tag() + b" " + name + b"\r\n")

    def _note_capability_code(self, text: bytes) -> None:
        match = _CAPABILITY_CODE.match(text)
        if match:
            self._capabilities = match.group(1).split()
