"""The upstream-facing SMTP machine: greeting, EHLO, STARTTLS, AUTH.

The proxy acts as an SMTP client here. It reads the greeting, sends EHLO
with the client's own domain (falling back to HELO when EHLO is
rejected), upgrades with STARTTLS when configured so, and authenticates
with AUTH PLAIN or, when only that is offered, AUTH LOGIN. Given the
client's address and a server that offers XCLIENT, it sends the address
before AUTH and repeats EHLO after the server's new greeting. Without the
``mailhost`` method it does not authenticate at all: the upstream then
trusts the proxy by its address. Replies may come split across reads
and in several lines; ``334`` challenges may lack the trailing space.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

from ..errors import MailProxyError
from ..framing import SmtpReply, SmtpReplyParser
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
from ..sasl import encode_base64, login_responses
from ..settings import UpstreamServer, UpstreamTLS

#: Longest AUTH command with an initial response sent in one line: the
#: 512-octet command line of RFC 5321 section 4.5.3.1.4 (RFC 4954 section 4
#: says to leave the initial response out when it would not fit).
MAX_AUTH_LINE: Final = 512

_NO_AUTH_NEEDED: Final = b"235 2.7.0 Authentication successful"


class _Stage(Enum):
    GREETING = auto()
    EHLO = auto()
    HELO = auto()
    STARTTLS = auto()
    HANDSHAKE = auto()
    XCLIENT = auto()
    AUTH = auto()
    DONE = auto()


class SmtpUpstreamMachine(UpstreamMachine):
    """The proxy's client side toward an upstream SMTP server.

    :param server: the upstream being logged in to.
    :param login: the mail credentials, or ``None`` to skip AUTH.
    :param client_name: the domain to send in EHLO, normally the one the
        client gave the proxy.
    :param client_address: the client's address to send with XCLIENT
        before AUTH, when the server offers XCLIENT with ``ADDR``.
    """

    def __init__(
        self,
        server: UpstreamServer,
        login: UpstreamLogin | None,
        *,
        client_name: str = "mailproxy",
        client_address: ClientAddress | None = None,
    ) -> None:
        super().__init__(server, login, client_address=client_address)
        self._parser = SmtpReplyParser()
        self._client_name = client_name.encode("ascii", errors="replace")
        self._stage = _Stage.GREETING
        self._tls_done = server.tls is not UpstreamTLS.STARTTLS
        self._keywords: set[bytes] = set()
        self._mechanisms: set[bytes] = set()
        self._xclient_attributes: set[bytes] = set()
        self._xclient_done = client_address is None
        self._responses: list[bytes] = []
        self._extra: list[SmtpReply] = []

    def receive(self, data: bytes) -> list[UpstreamOutput]:
        try:
            replies = self._parser.feed(data)
        except MailProxyError as error:
            return [Violation(message=str(error), fatal=True)]
        outputs: list[UpstreamOutput] = []
        for index, reply in enumerate(replies):
            outputs.extend(self._handle(reply))
            if self._stage in (_Stage.DONE, _Stage.HANDSHAKE):
                self._extra = replies[index + 1 :]
                break
            if any(isinstance(o, (LoginFailed, Violation)) for o in outputs):
                break
        if self._stage is _Stage.HANDSHAKE and (self._extra or self.take_remaining()):
            return self._refuse_early_bytes(outputs)
        return outputs

    def tls_established(self) -> list[UpstreamOutput]:
        self._tls_done = True
        return self._send_ehlo()

    def take_remaining(self) -> bytes:
        extra, self._extra = self._extra, []
        return b"".join(r.to_bytes() for r in extra) + self._parser.take_all()

    # Replies ---------------------------------------------------------------

    def _handle(self, reply: SmtpReply) -> list[UpstreamOutput]:
        stage = self._stage
        if stage is _Stage.GREETING:
            if reply.code != 220:
                return [_unavailable("upstream refused the connection")]
            return self._send_ehlo()
        if stage is _Stage.EHLO:
            return self._ehlo_reply(reply)
        if stage is _Stage.HELO:
            if reply.code != 250:
                return [_unavailable("upstream rejected EHLO and HELO")]
            return self._after_ehlo()
        if stage is _Stage.STARTTLS:
            if reply.code != 220:
                return [_unavailable("upstream refused STARTTLS")]
            self._stage = _Stage.HANDSHAKE
            return [TlsRequested()]
        if stage is _Stage.XCLIENT:
            return self._xclient_reply(reply)
        return self._auth_reply(reply)

    def _send_ehlo(self) -> list[UpstreamOutput]:
        self._stage = _Stage.EHLO
        self._keywords = set()
        self._mechanisms = set()
        self._xclient_attributes = set()
        return [Reply(data=b"EHLO " + self._client_name + b"\r\n")]

    def _ehlo_reply(self, reply: SmtpReply) -> list[UpstreamOutput]:
        if reply.code != 250:
            # RFC 5321 section 3.2: a server that rejects EHLO may accept HELO.
            self._stage = _Stage.HELO
            return [Reply(data=b"HELO " + self._client_name + b"\r\n")]
        for line in reply.lines[1:]:
            words = line.upper().replace(b"=", b" ", 1).split()
            if not words:
                continue
            self._keywords.add(words[0])
            # "AUTH=PLAIN LOGIN" is the pre-standard form some servers send.
            if words[0] == b"AUTH":
                self._mechanisms.update(words[1:])
            elif words[0] == b"XCLIENT":
                self._xclient_attributes.update(words[1:])
        return self._after_ehlo()

    def _after_ehlo(self) -> list[UpstreamOutput]:
        if not self._tls_done:
            if b"STARTTLS" not in self._keywords:
                return [_unavailable("upstream does not offer STARTTLS")]
            self._stage = _Stage.STARTTLS
            return [Reply(data=b"STARTTLS\r\n")]
        address = self.client_address
        if not self._xclient_done and address is not None:
            self._xclient_done = True
            if b"ADDR" in self._xclient_attributes:
                return self._send_xclient(address)
        login = self.login
        if login is None:
            self._stage = _Stage.DONE
            return [LoginSucceeded(reply=UpstreamReply(text=_NO_AUTH_NEEDED))]
        return self._send_auth(login)

    # XCLIENT ---------------------------------------------------------------

    def _send_xclient(self, address: ClientAddress) -> list[UpstreamOutput]:
        # Sent after STARTTLS, so no one on the path can alter the address.
        # Postfix's XCLIENT_README gives the forms: an IPv6 address with an
        # "IPV6:" prefix and every value in xtext (RFC 3461 section 4).
        host = address.host.encode()
        if address.is_ipv6:
            host = b"IPV6:" + host
        command = b"XCLIENT ADDR=" + _xtext(host)
        if address.port is not None and b"PORT" in self._xclient_attributes:
            command += b" PORT=%d" % address.port
        self._stage = _Stage.XCLIENT
        return [Reply(data=command + b"\r\n")]

    def _xclient_reply(self, reply: SmtpReply) -> list[UpstreamOutput]:
        if reply.code == 220:
            # The server started over as for a new connection (Postfix
            # 2.3 and later), so it expects EHLO again.
            return self._send_ehlo()
        # A rejected XCLIENT leaves the session as it was after EHLO, and
        # only costs the address in the server's log.
        return self._after_ehlo()

    # AUTH ------------------------------------------------------------------

    def _send_auth(self, login: UpstreamLogin) -> list[UpstreamOutput]:
        self._stage = _Stage.AUTH
        mechanisms = self._mechanisms
        if login.is_token or b"PLAIN" in mechanisms:
            mechanism = login.sasl_mechanism().encode()
            message = login.sasl_message()
        elif b"LOGIN" in mechanisms and not login.authzid:
            username, password = login_responses(login.username, login.secret)
            self._responses = [encode_base64(username), encode_base64(password)]
            return [Reply(data=b"AUTH LOGIN\r\n")]
        else:
            return [_unavailable("upstream offers no usable AUTH mechanism")]
        if mechanism not in mechanisms:
            return [_unavailable(f"upstream does not offer AUTH {mechanism.decode()}")]
        response = encode_base64(message) or b"="
        command = b"AUTH " + mechanism
        if len(command) + 1 + len(response) + 2 <= MAX_AUTH_LINE:
            return [Reply(data=command + b" " + response + b"\r\n")]
        self._responses = [response]
        return [Reply(data=command + b"\r\n")]

    def _auth_reply(self, reply: SmtpReply) -> list[UpstreamOutput]:
        if reply.code == 334:
            if self._responses:
                return [Reply(data=self._responses.pop(0) + b"\r\n")]
            if self.login is not None and self.login.is_token:
                # A token exchange ends with an error challenge that the
                # client must answer before the 535 (RFC 7628 section 3.2.2).
                return [ChallengeForClient(data=reply.last.strip())]
            return [Reply(data=b"*\r\n")]
        self._stage = _Stage.DONE
        lines = reply.to_bytes().rstrip(b"\r\n").split(b"\r\n")
        upstream_reply = UpstreamReply(untagged=tuple(lines[:-1]), text=lines[-1])
        if reply.code == 235:
            return [LoginSucceeded(reply=upstream_reply)]
        return [
            LoginFailed(reason="upstream rejected the mail login", reply=upstream_reply)
        ]


def _xtext(value: bytes) -> bytes:
    """Encode ``value`` as xtext (RFC 3461 section 4).

    "+", "=" and every byte outside printable ASCII become "+" and two
    upper-case hex digits.
    """
    return b"".join(
        b"+%02X" % byte if byte in b"+=" or not 0x21 <= byte <= 0x7E else bytes([byte])
        for byte in value
    )


def _unavailable(reason: str) -> LoginFailed:
    return LoginFailed(reason=reason, unavailable=True)
