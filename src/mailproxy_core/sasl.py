"""SASL messages shared by the IMAP4, POP3 and SMTP machines.

The proxy offers only mechanisms that carry the password or bearer token in
clear text: PLAIN (RFC 4616), LOGIN, XOAUTH2 and OAUTHBEARER (RFC 7628).
It needs the clear password because it splits combined credentials such as
``vpnpass:mailpass`` at the configured separator and logs in upstream with
the mail part. CRAM-MD5 (RFC 2195), DIGEST-MD5 (RFC 2831) and POP3 APOP
(RFC 1939 section 7) send only a keyed digest of the password over a
challenge from the server. From a digest the proxy can neither split the
password nor respond to the different challenge of the upstream server, so
these mechanisms are never offered, and :meth:`Mechanism.parse` returns
``None`` for them.

:class:`SaslServer` runs one exchange without knowing the protocol. The
protocol wraps each challenge in ``"+ "`` (IMAP, POP3) or ``"334 "`` (SMTP) and
passes the client's response lines back. Every error for malformed client
input is a :class:`~mailproxy_core.errors.SaslError`, whose message never
contains the input.
"""

from __future__ import annotations

import binascii
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from .errors import LocalProtocolError, SaslError
from .secrets import Secret

# Characters that would end or split a line or a field wherever the proxy
# later writes the value, such as in an IMAP LOGIN command or a log record.
_FORBIDDEN_CHARACTERS: Final = re.compile("[\x00\r\n]")
# RFC 7628 section 3.1 separates key-value pairs with 0x01.
_KVSEP: Final = b"\x01"
# RFC 7628 section 3.1: key = 1*ALPHA, value = *(VCHAR / SP / HTAB / CR / LF).
_KEY: Final = re.compile(rb"[A-Za-z]+")
_VALUE: Final = re.compile(rb"[\x21-\x7e \t\r\n]*")
# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" /
# "~" / "+" / "/" ) *"=".
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 5801 section 4: "," and "=" inside a saslname are written as escapes.
_SASLNAME_ESCAPES: Final = {"2C": ",", "3D": "="}


class Mechanism(enum.Enum):
    """A SASL mechanism that the proxy accepts and uses upstream."""

    PLAIN = "PLAIN"
    LOGIN = "LOGIN"
    XOAUTH2 = "XOAUTH2"
    OAUTHBEARER = "OAUTHBEARER"

    @classmethod
    def parse(cls, name: bytes | str) -> Mechanism | None:
        """Look up a mechanism by name, ignoring ASCII case.

        :param name: the name as the client sent it.
        :returns: the mechanism, or ``None`` for any other name, such as
            ``CRAM-MD5``.
        """
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        # Without this check a name with U+0131 (dotless i) in place of "i"
        # would upper-case to PLAIN.
        if not name.isascii():
            return None
        try:
            return cls(name.upper())
        except ValueError:
            return None

    @property
    def uses_token(self) -> bool:
        """Whether the mechanism carries an OAuth 2.0 bearer token."""
        return self in (Mechanism.XOAUTH2, Mechanism.OAUTHBEARER)


@dataclass(frozen=True, slots=True, kw_only=True)
class SaslCredentials:
    """The identities and secret that a client sent in a SASL exchange.

    :param mechanism: the mechanism that carried them.
    :param authzid: the authorization identity, or ``""`` when absent.
    :param username: the authentication identity. It is ``""`` only for an
        OAUTHBEARER message without ``a=``.
    :param secret: the password, or the bearer token for XOAUTH2 and
        OAUTHBEARER.
    :param is_token: whether ``secret`` is a bearer token.
    """

    mechanism: Mechanism
    authzid: str
    username: str
    secret: Secret
    is_token: bool


def decode_base64(data: bytes) -> bytes:
    """Decode a base64 SASL response strictly (RFC 4648 section 4).

    :param data: the response text without CRLF. ``b"="`` is the empty
        response (RFC 4954 section 4 for SMTP, RFC 9051 for IMAP), and so is
        ``b""``.
    :returns: the decoded bytes.
    :raises SaslError: when the text is not padded base64 of the RFC 4648
        alphabet, for example when it contains whitespace.
    """
    if data == b"=":
        return b""

    decoded: bytes | None
    try:
        decoded = binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        decoded = None
    if decoded is None:
        raise SaslError("SASL response is not valid base64 (RFC 4648)")
    return decoded


def encode_base64(data: bytes) -> bytes:
    """Encode bytes as base64 without a line break.

    :param data: the bytes to encode.
    :returns: the base64 text, ``b""`` for empty data. Callers write ``=``
        where the protocol needs a visible empty response.
    """
    return binascii.b2a_base64(data, newline=False)


def _check_text(text: str, field: str, *, allow_empty: bool) -> str:
    if _FORBIDDEN_CHARACTERS.search(text) is not None:
        raise SaslError(f"{field} contains NUL, CR or LF")
    if not text and not allow_empty:
        raise SaslError(f"{field} is empty")
    return text


def _decode_text(raw: bytes, field: str, *, allow_empty: bool) -> str:
    text: str | None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    # Raised outside the except block, so that the error does not keep the
    # UnicodeDecodeError, which references the secret bytes, as context.
    if text is None:
        raise SaslError(f"{field} is not valid UTF-8")
    return _check_text(text, field, allow_empty=allow_empty)


def parse_plain(message: bytes) -> SaslCredentials:
    """Parse a decoded PLAIN message (RFC 4616 section 2).

    The message is ``[authzid] NUL authcid NUL passwd``. RFC 4616 requires
    a non-empty authcid and passwd.

    :param message: the decoded message.
    :returns: the credentials.
    :raises SaslError: when the message does not contain exactly two NUL
        bytes, a part is not valid UTF-8 or contains CR or LF, or the
        authentication identity or password is empty.
    """
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise SaslError(
            f"PLAIN message contains {len(parts) - 1} NUL bytes; expected 2"
        )

    authzid = _decode_text(parts[0], "PLAIN authzid", allow_empty=True)
    username = _decode_text(parts[1], "PLAIN authcid", allow_empty=False)
    password = _decode_text(parts[2], "PLAIN password", allow_empty=False)
    return SaslCredentials(
        mechanism=Mechanism.PLAIN,
        authzid=authzid,
        username=username,
        secret=Secret(password),
        is_token=False,
    )


def encode_plain(authzid: str, username: str, password: Secret) -> bytes:
    """Build a PLAIN message (RFC 4616 section 2) for an upstream login.

    :param authzid: the authorization identity, or ``""`` for none.
    :param username: the authentication identity.
    :param password: the password.
    :returns: the raw message, not yet base64-encoded.
    :raises SaslError: when a part contains NUL, CR or LF, or the user name
        or password is empty, which :func:`parse_plain` would reject too.
    """
    parts = (
        _check_text(authzid, "PLAIN authzid", allow_empty=True),
        _check_text(username, "PLAIN authcid", allow_empty=False),
        _check_text(password.reveal(), "PLAIN password", allow_empty=False),
    )
    return b"\x00".join(part.encode("utf-8") for part in parts)


def parse_login_value(message: bytes) -> str:
    """Decode one value of the LOGIN mechanism, the user name or password.

    :param message: the decoded response.
    :returns: the value, possibly empty.
    :raises SaslError: when the value is not valid UTF-8 or contains NUL,
        CR or LF.
    """
    return _decode_text(message, "LOGIN value", allow_empty=True)


def login_responses(username: str, password: Secret) -> tuple[bytes, bytes]:
    """Build the two client responses of the LOGIN mechanism for upstream.

    :param username: the user name, sent after the ``Username:`` challenge.
    :param password: the password, sent after the ``Password:`` challenge.
    :returns: the raw user name and password, not yet base64-encoded.
    :raises SaslError: when a value is empty or contains NUL, CR or LF.
    """
    name = _check_text(username, "LOGIN user name", allow_empty=False)
    secret = _check_text(password.reveal(), "LOGIN password", allow_empty=False)
    return name.encode("utf-8"), secret.encode("utf-8")


def _parse_kvpairs(data: bytes, mechanism: str) -> dict[bytes, bytes]:
    """Parse ``*(key "=" value 0x01) 0x01``, the end of an OAuth message."""
    if not data.endswith(_KVSEP):
        raise SaslError(f"{mechanism} message does not end with 0x01 0x01")
    body = data[: -len(_KVSEP)]
    if not body:
        return {}
    if not body.endswith(_KVSEP):
        raise SaslError(f"{mechanism} message does not end with 0x01 0x01")

    pairs: dict[bytes, bytes] = {}
    for item in body[: -len(_KVSEP)].split(_KVSEP):
        key, equals, value = item.partition(b"=")
        if not equals or _KEY.fullmatch(key) is None:
            raise SaslError(f"{mechanism} message contains an invalid key-value pair")
        if key in pairs:
            raise SaslError(f"{mechanism} message repeats the key {key.decode()}")
        pairs[key] = value
    return pairs


def _parse_bearer(pairs: dict[bytes, bytes], mechanism: str) -> Secret:
    """Return the token of the required ``auth=Bearer <token>`` pair."""
    value = pairs.get(b"auth")
    if value is None:
        raise SaslError(f"{mechanism} message has no auth key")

    # The scheme name is case-insensitive, as in HTTP authentication.
    scheme, _, token = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or _B64TOKEN.fullmatch(token) is None:
        raise SaslError(
            f"{mechanism} auth value is invalid; expected 'Bearer' and an "
            "RFC 6750 b64token"
        )
    return Secret(token)


def parse_xoauth2(message: bytes) -> SaslCredentials:
    """Parse a decoded XOAUTH2 message.

    Google's "OAuth 2.0 Mechanism" page for Gmail defines the format.

    The message is ``user=<name> 0x01 auth=Bearer <token> 0x01 0x01``.
    Other keys are ignored.

    :param message: the decoded message.
    :returns: the credentials, with the token as secret.
    :raises SaslError: when the framing is invalid, a key repeats, the user
        name is missing, empty, not valid UTF-8 or contains CR or LF, or the
        auth value is not ``Bearer`` and a token.
    """
    pairs = _parse_kvpairs(message, "XOAUTH2")
    user = pairs.get(b"user")
    if user is None:
        raise SaslError("XOAUTH2 message has no user key")

    username = _decode_text(user, "XOAUTH2 user", allow_empty=False)
    return SaslCredentials(
        mechanism=Mechanism.XOAUTH2,
        authzid="",
        username=username,
        secret=_parse_bearer(pairs, "XOAUTH2"),
        is_token=True,
    )


def encode_xoauth2(username: str, token: Secret) -> bytes:
    """Build an XOAUTH2 message for an upstream login.

    :param username: the user name.
    :param token: the bearer token.
    :returns: the raw message, not yet base64-encoded.
    :raises SaslError: when the user name is empty or contains NUL, CR, LF
        or 0x01, or the token is not an RFC 6750 b64token.
    """
    user = _check_oauth_name(username, "XOAUTH2 user", allow_empty=False)
    bearer = _check_token(token)
    return b"user=%s\x01auth=Bearer %s\x01\x01" % (user, bearer)


def _check_oauth_name(name: str, field: str, *, allow_empty: bool) -> bytes:
    _check_text(name, field, allow_empty=allow_empty)
    if "\x01" in name:
        raise SaslError(f"{field} contains 0x01")
    return name.encode("utf-8")


def _check_token(token: Secret) -> bytes:
    if _B64TOKEN.fullmatch(token.reveal()) is None:
        raise SaslError("bearer token is not an RFC 6750 b64token")
    return token.reveal().encode("ascii")


def parse_oauthbearer(message: bytes) -> SaslCredentials:
    """Parse a decoded OAUTHBEARER client response (RFC 7628 section 3.1).

    The message is a GS2 header such as ``n,a=user@example.com,``, then
    0x01, key-value pairs that each end with 0x01, and a final 0x01. The
    ``auth`` pair is required, and other pairs such as ``host`` and
    ``port`` are ignored. Channel binding (``p=``) and the non-standard
    flag ``F`` are rejected, because the proxy offers neither.

    :param message: the decoded message.
    :returns: the credentials, with the ``a=`` name as user name (``""``
        when absent, for the caller to decide) and the token as secret.
    :raises SaslError: when the message is only the 0x01 that a client sends
        after an error challenge, or when the GS2 header, the key-value pairs
        or the auth value are invalid.
    """
    if message == _KVSEP:
        raise SaslError(
            "OAUTHBEARER message is the 0x01 reply to an error challenge, not a login"
        )
    header, separator, rest = message.partition(_KVSEP)
    if not separator:
        raise SaslError("OAUTHBEARER message has no 0x01 after the GS2 header")

    username = _parse_gs2_header(header)
    pairs = _parse_kvpairs(rest, "OAUTHBEARER")
    if any(_VALUE.fullmatch(value) is None for value in pairs.values()):
        raise SaslError("OAUTHBEARER message contains an invalid character")
    return SaslCredentials(
        mechanism=Mechanism.OAUTHBEARER,
        authzid="",
        username=username,
        secret=_parse_bearer(pairs, "OAUTHBEARER"),
        is_token=True,
    )


def _parse_gs2_header(header: bytes) -> str:
    """Return the decoded ``a=`` name of a GS2 header (RFC 5801 section 4)."""
    # A saslname writes "," as "=2C", so a valid header has exactly 2 commas.
    parts = header.split(b",")
    if len(parts) != 3 or parts[2]:
        raise SaslError("OAUTHBEARER GS2 header is invalid; expected 'n,a=name,'")

    flag, authzid = parts[0], parts[1]
    if flag.startswith(b"p="):
        raise SaslError("OAUTHBEARER channel binding is not supported")
    if flag not in (b"n", b"y"):
        raise SaslError("OAUTHBEARER GS2 header has an invalid channel binding flag")
    if not authzid:
        return ""
    if not authzid.startswith(b"a="):
        raise SaslError("OAUTHBEARER GS2 header is invalid; expected 'n,a=name,'")

    name = _decode_text(authzid[2:], "OAUTHBEARER a= name", allow_empty=False)
    return _unescape_saslname(name)


def _unescape_saslname(name: str) -> str:
    pieces = name.split("=")
    result = [pieces[0]]
    for piece in pieces[1:]:
        # ABNF strings are case-insensitive (RFC 5234), so "=2c" counts too.
        escaped = _SASLNAME_ESCAPES.get(piece[:2].upper())
        if escaped is None:
            raise SaslError("OAUTHBEARER a= name has '=' not followed by 2C or 3D")
        result.append(escaped + piece[2:])
    return "".join(result)


def encode_oauthbearer(username: str, token: Secret) -> bytes:
    """Build an OAUTHBEARER client response (RFC 7628) for an upstream login.

    The message has no ``host`` or ``port`` pair, which RFC 7628 makes
    optional.

    :param username: the user name for ``a=``, or ``""`` to omit it.
    :param token: the bearer token.
    :returns: the raw message, not yet base64-encoded.
    :raises SaslError: when the user name contains NUL, CR, LF or 0x01, or
        the token is not an RFC 6750 b64token.
    """
    name = _check_oauth_name(username, "OAUTHBEARER a= name", allow_empty=True)
    authzid = b""
    if name:
        # "=" first, so that the "=" of "=2C" is not escaped again.
        authzid = b"a=" + name.replace(b"=", b"=3D").replace(b",", b"=2C")
    bearer = _check_token(token)
    return b"n,%s,\x01auth=Bearer %s\x01\x01" % (authzid, bearer)


@dataclass(frozen=True, slots=True)
class Challenge:
    """A server challenge that the protocol sends to the client.

    :param data: the raw challenge, which the protocol base64-encodes.
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class Completed:
    """The end of a successful exchange.

    :param credentials: what the client sent.
    """

    credentials: SaslCredentials


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The end of an exchange that the client cancelled with ``*``."""


#: The result of one step of :class:`SaslServer`.
SaslStep: TypeAlias = Challenge | Completed | Cancelled


class _Stage(enum.Enum):
    NOT_STARTED = enum.auto()
    AWAIT_MESSAGE = enum.auto()
    AWAIT_USERNAME = enum.auto()
    AWAIT_PASSWORD = enum.auto()
    FINISHED = enum.auto()


_CHALLENGES: Final = {
    _Stage.AWAIT_MESSAGE: b"",
    _Stage.AWAIT_USERNAME: b"Username:",
    _Stage.AWAIT_PASSWORD: b"Password:",
}

_MESSAGE_PARSERS: Final[dict[Mechanism, Callable[[bytes], SaslCredentials]]] = {
    Mechanism.PLAIN: parse_plain,
    Mechanism.XOAUTH2: parse_xoauth2,
    Mechanism.OAUTHBEARER: parse_oauthbearer,
}


class SaslServer:
    """One server-side SASL exchange, independent of the protocol.

    Call :meth:`start` once, then :meth:`respond` with each client response
    until a :class:`Completed` or :class:`Cancelled` step. The exchange also
    ends when a call raises :class:`~mailproxy_core.errors.SaslError`.

    * PLAIN: without an initial response the server sends an empty
      challenge, then reads the message.
    * LOGIN: the server sends ``Username:`` and ``Password:`` challenges.
      An initial response is the user name.
    * XOAUTH2, OAUTHBEARER: without an initial response, or with an empty
      one, the server sends an empty challenge, then reads the message.

    PLAIN and LOGIN reject an empty user name or password, which RFC 4616
    forbids for PLAIN.

    :param mechanism: the mechanism that the client chose.
    """

    def __init__(self, mechanism: Mechanism) -> None:
        self._mechanism = mechanism
        self._stage = _Stage.NOT_STARTED
        self._username = ""

    @property
    def mechanism(self) -> Mechanism:
        """The mechanism of this exchange."""
        return self._mechanism

    @property
    def finished(self) -> bool:
        """Whether the exchange has completed, been cancelled or failed."""
        return self._stage is _Stage.FINISHED

    def start(self, initial_response: bytes | None) -> SaslStep:
        """Begin the exchange.

        :param initial_response: the base64 text from the command line,
            ``b"="`` for an empty response, or ``None`` when absent.
        :returns: the first challenge, or :class:`Completed` when the
            initial response carried everything.
        :raises LocalProtocolError: when the exchange has already started.
        :raises SaslError: when the initial response is malformed.
        """
        if self._stage is not _Stage.NOT_STARTED:
            raise LocalProtocolError("the SASL exchange has already started")

        login = self._mechanism is Mechanism.LOGIN
        self._stage = _Stage.AWAIT_USERNAME if login else _Stage.AWAIT_MESSAGE
        if initial_response is None:
            return self._challenge()
        if self._mechanism.uses_token and initial_response in (b"", b"="):
            return self._challenge()
        return self._advance(initial_response)

    def respond(self, line: bytes) -> SaslStep:
        """Process one client response.

        :param line: the response line without CRLF. ``b"*"`` cancels
            (RFC 4954, RFC 9051, RFC 5034).
        :returns: the next challenge, :class:`Completed` or
            :class:`Cancelled`.
        :raises LocalProtocolError: before :meth:`start` or after the
            exchange has finished.
        :raises SaslError: when the response is malformed.
        """
        if self._stage is _Stage.NOT_STARTED:
            raise LocalProtocolError("the SASL exchange has not started")
        if self._stage is _Stage.FINISHED:
            raise LocalProtocolError("the SASL exchange has already finished")

        if line == b"*":
            self._stage = _Stage.FINISHED
            return Cancelled()
        return self._advance(line)

    def _challenge(self) -> Challenge:
        return Challenge(_CHALLENGES[self._stage])

    def _advance(self, encoded: bytes) -> SaslStep:
        try:
            return self._process(decode_base64(encoded))
        except SaslError:
            self._stage = _Stage.FINISHED
            raise

    def _process(self, data: bytes) -> SaslStep:
        if self._stage is _Stage.AWAIT_USERNAME:
            self._username = _parse_login_field(data, "LOGIN user name")
            self._stage = _Stage.AWAIT_PASSWORD
            return self._challenge()

        if self._stage is _Stage.AWAIT_PASSWORD:
            password = _parse_login_field(data, "LOGIN password")
            return self._complete(
                SaslCredentials(
                    mechanism=Mechanism.LOGIN,
                    authzid="",
                    username=self._username,
                    secret=Secret(password),
                    is_token=False,
                )
            )

        return self._complete(_MESSAGE_PARSERS[self._mechanism](data))

    def _complete(self, credentials: SaslCredentials) -> Completed:
        self._stage = _Stage.FINISHED
        return Completed(credentials)


def _parse_login_field(data: bytes, field: str) -> str:
    return _decode_text(data, field, allow_empty=False)
