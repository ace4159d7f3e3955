"""The ``radius`` AAA server group: a PAP Access-Request per login.

Each login sends one Access-Request (RFC 2865) from its own UDP socket. It
carries User-Name, the hidden User-Password (RFC 2865 section 5.2),
NAS-Identifier and a Message-Authenticator (RFC 2869 section 5.14). While no
valid reply comes, the same datagram is sent again, up to ``retries`` times.
A reply counts only when its Identifier matches, its Response
Authenticator is correct, it carries a correct Message-Authenticator and it
has no Proxy-State that the request did not carry. Everything else is
dropped, so a forged or corrupted datagram cannot decide a login. Requiring
the Message-Authenticator in replies is the client-side defence against the
BlastRADIUS attack (CVE-2024-3596).

Packets are encoded, decoded and verified with pyrad. pyrad 2.6.0 adds the
Message-Authenticator to requests and checks it in replies
(``VerifyReply(..., enforce_ma=True)``). In pyrad 2.5.4 that flag checks the
request instead of the reply, and pyrad 2.4 has no such flag, so the
``radius`` extra requires pyrad 2.6 or later. The UDP exchange itself runs on
the event loop (:meth:`asyncio.loop.create_datagram_endpoint`) instead of in
pyrad's blocking client. That client would tie up a worker thread for the
whole wait, and it has no public method to close its socket.

An Access-Accept's group is the first Class attribute (RFC 2865 section
5.25) of the form ``OU=NAME;``, which Cisco ASA and many RADIUS servers use
for group policies. Other Class values are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import math
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

from pyrad import packet  # type: ignore[import-untyped]
from pyrad.dictionary import Dictionary, ParseError  # type: ignore[import-untyped]

from ..errors import ConfigurationError
from ..secrets import Secret
from .aaa import AaaResult

_log = logging.getLogger(__name__)

#: The dictionary shipped in this package.
DICTIONARY_RESOURCE: Final = "radius.dictionary"

#: Attributes that a dictionary must define for this client.
REQUIRED_ATTRIBUTES: Final = ("User-Name", "User-Password", "NAS-Identifier", "Class")

#: Limits of RFC 2865 section 5: an attribute value has at most 253 octets,
#: and User-Password hides at most 128 octets.
MAX_ATTRIBUTE_BYTES: Final = 253
MAX_PASSWORD_BYTES: Final = 128

#: RFC 2865 section 3 recommends a shared secret of at least 16 octets.
MIN_SECRET_BYTES: Final = 16

#: Datagrams queued per login before further ones are dropped.
_MAX_QUEUED_REPLIES: Final = 16

_CLASS_GROUP_PREFIX: Final = "ou="

# pyrad raises these for a datagram that is not a well-formed packet.
_DECODE_ERRORS: Final = (packet.PacketError, ValueError, KeyError, struct.error)


def parse_class_group(values: Iterable[bytes]) -> str | None:
    """Return the group policy from the Class attributes of an Access-Accept.

    A value counts when it is UTF-8 text that starts with ``OU=`` (in any
    case). The name runs up to the first ``;``, and white space around it is
    removed, so ``OU=staff;`` gives ``staff``.

    :param values: the Class values in the order of the reply.
    :returns: the first non-empty name, or ``None`` when no value has one.
    """
    for value in values:
        try:
            text = value.decode("utf-8").strip()
        except UnicodeDecodeError:
            continue
        if not text.lower().startswith(_CLASS_GROUP_PREFIX):
            continue
        name = text[len(_CLASS_GROUP_PREFIX) :].split(";", 1)[0].strip()
        if name:
            return name
    return None


def check_credentials(user: str, password: str) -> str | None:
    """Check a user name and password before they go into an Access-Request.

    :param user: the VPN user name.
    :param password: the VPN password.
    :returns: the reason for rejecting them, or ``None`` when they fit.
    """
    if not user:
        return "empty user name"
    if any(character in "\x00\r\n" for character in user):
        return "user name contains NUL, CR or LF"
    if len(user.encode("utf-8")) > MAX_ATTRIBUTE_BYTES:
        return f"user name is longer than {MAX_ATTRIBUTE_BYTES} bytes"
    if not password:
        return "empty password"
    # PAP pads the password with NUL bytes, which the server strips, so a
    # NUL would shorten the password that the server checks.
    if "\x00" in password:
        return "password contains NUL"
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return f"password is longer than {MAX_PASSWORD_BYTES} bytes"
    return None


def load_dictionary(path: str | Path | None = None) -> Any:
    """Read a RADIUS dictionary for pyrad.

    :param path: a dictionary file in FreeRADIUS format, or ``None`` for the
        one shipped in this package.
    :returns: the :class:`pyrad.dictionary.Dictionary`.
    :raises ConfigurationError: when the file cannot be read or parsed, or
        lacks one of :data:`REQUIRED_ATTRIBUTES`.
    """
    where = str(path) if path is not None else DICTIONARY_RESOURCE
    try:
        with _open_dictionary(path) as file:
            dictionary = Dictionary(file)
    except (OSError, ParseError) as error:
        raise ConfigurationError(f"dictionary: cannot read {where}: {error}") from None

    missing = [name for name in REQUIRED_ATTRIBUTES if name not in dictionary]
    if missing:
        raise ConfigurationError(
            f"dictionary: {where} does not define {', '.join(missing)}"
        )
    return dictionary


@contextlib.contextmanager
def _open_dictionary(path: str | Path | None) -> Iterator[IO[str]]:
    if path is None:
        resource = importlib.resources.files(__package__).joinpath(DICTIONARY_RESOURCE)
        with resource.open("r", encoding="utf-8") as file:
            yield file
    else:
        with Path(path).open(encoding="utf-8") as file:
            yield file


class _ReplyReceiver(asyncio.DatagramProtocol):
    """Queues the datagrams that arrive on one login's UDP socket."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue(_MAX_QUEUED_REPLIES)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        # The queue is bounded so that a flood of datagrams cannot grow
        # memory. Each send gets at most one reply from the server, so only
        # a flood that arrives first can push out a valid reply.
        with contextlib.suppress(asyncio.QueueFull):
            self.replies.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error such as port unreachable is unauthenticated, so it
        # does not end the wait; the login fails at its timeout instead.
        _log.debug("RADIUS socket error: %s", exc)


class RadiusAaaGroup:
    """The ``radius`` AAA server group.

    :param name: the group name in the configuration.
    :param host: the RADIUS server's address or host name.
    :param port: its authentication port.
    :param secret: the shared secret of this client and the server.
    :param timeout: seconds for one login, shared by all sends: each of the
        ``retries + 1`` sends waits ``timeout / (retries + 1)`` seconds.
    :param retries: how often the request is sent again when no valid
        reply comes.
    :param nas_identifier: the NAS-Identifier attribute, which the server
        may use to tell this proxy from other clients.
    :param dictionary: a RADIUS dictionary file, or ``None`` for the one
        shipped in this package.
    :param require_message_authenticator: whether a reply without a
        Message-Authenticator is dropped. Turn it off only for a server that
        cannot send one. FreeRADIUS 3.2.1 sends one only when configured
        with ``update reply { &Message-Authenticator := 0x00 }`` in post-auth.
        A Message-Authenticator that is present is always checked.
    :raises ConfigurationError: when a parameter is invalid; the message
        names it.
    """

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int = 1812,
        secret: Secret | str,
        timeout: float = 5.0,
        retries: int = 2,
        nas_identifier: str = "mailproxy",
        dictionary: str | Path | None = None,
        require_message_authenticator: bool = True,
    ) -> None:
        _check_host(host, port)
        _check_timing(timeout, retries)
        _check_nas_identifier(nas_identifier)
        self._name = name
        self._host = host
        self._port = port
        self._secret = _check_secret(name, secret)
        self._timeout = timeout
        self._retries = retries
        self._nas_identifier = nas_identifier
        self._dictionary = load_dictionary(dictionary)
        self._require_message_authenticator = require_message_authenticator

    @property
    def name(self) -> str:
        """Name of the group in the configuration."""
        return self._name

    async def authenticate(self, user: str, password: str) -> AaaResult:
        """Send an Access-Request for ``user`` and wait for a valid reply.

        :returns: success with the group from the Class attribute on
            Access-Accept. Failure with ``rejected by RADIUS server`` on
            Access-Reject, with ``RADIUS server did not answer`` when no
            valid reply came within ``timeout``, or with the reason why the
            request was not sent.
        """
        problem = check_credentials(user, password)
        if problem is not None:
            return AaaResult(success=False, reason=problem)

        request = self._build_request(user, password)
        try:
            reply = await self._exchange(request)
        except OSError as error:
            reason = f"cannot send to RADIUS server {self._host}:{self._port}: {error}"
            _log.warning("AAA group %s: %s", self._name, reason)
            return AaaResult(success=False, reason=reason)

        if reply is None:
            _log.warning(
                "AAA group %s: no valid reply from %s:%d within %g s; check "
                "that the server runs and that the shared secret matches",
                self._name,
                self._host,
                self._port,
                self._timeout,
            )
            return AaaResult(success=False, reason="RADIUS server did not answer")
        return self._interpret(reply)

    def _build_request(self, user: str, password: str) -> Any:
        request = packet.AuthPacket(
            code=packet.AccessRequest,
            secret=self._secret.reveal().encode("utf-8"),
            dict=self._dictionary,
            message_authenticator=True,
        )
        request["User-Name"] = user
        request["NAS-Identifier"] = self._nas_identifier
        request["User-Password"] = request.PwCrypt(password)
        return request

    async def _exchange(self, request: Any) -> Any | None:
        datagram = request.RequestPacket()
        loop = asyncio.get_running_loop()

        # A connected socket receives datagrams from the server's address
        # and port only.
        transport, receiver = await loop.create_datagram_endpoint(
            _ReplyReceiver, remote_addr=(self._host, self._port)
        )
        try:
            wait = self._timeout / (self._retries + 1)
            for _ in range(self._retries + 1):
                # A resent request keeps its Identifier and Request
                # Authenticator (RFC 2865 section 2.5), so a late reply to an
                # earlier send is valid too.
                transport.sendto(datagram)
                reply = await self._receive_valid(request, receiver, wait)
                if reply is not None:
                    return reply
        finally:
            transport.close()
        return None

    async def _receive_valid(
        self, request: Any, receiver: _ReplyReceiver, wait: float
    ) -> Any | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while True:
                    data = await receiver.replies.get()
                    reply = self._verified_reply(request, data)
                    if reply is not None:
                        return reply
        return None

    def _verified_reply(self, request: Any, data: bytes) -> Any | None:
        try:
            reply = request.CreateReply(packet=data)
            valid = request.VerifyReply(
                reply, data, enforce_ma=self._require_message_authenticator
            )
        except _DECODE_ERRORS as error:
            _log.debug("AAA group %s: dropped malformed reply: %s", self._name, error)
            return None
        if not valid:
            _log.debug(
                "AAA group %s: dropped a reply that failed verification", self._name
            )
            return None
        return reply

    def _interpret(self, reply: Any) -> AaaResult:
        if reply.code == packet.AccessAccept:
            values = reply.get("Class", [])
            return AaaResult(success=True, group=parse_class_group(values))
        if reply.code == packet.AccessReject:
            return AaaResult(success=False, reason="rejected by RADIUS server")
        if reply.code == packet.AccessChallenge:
            return AaaResult(
                success=False,
                reason="RADIUS server sent Access-Challenge, which is not supported",
            )
        return AaaResult(
            success=False, reason=f"unexpected RADIUS reply code {reply.code}"
        )


def _check_host(host: str, port: int) -> None:
    if not host or any(character.isspace() for character in host):
        raise ConfigurationError(f"host: {host!r} is not an address or host name")
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"port: {port!r} is not between 1 and 65535")


def _check_timing(timeout: float, retries: int) -> None:
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError(f"timeout: {timeout!r} must be a positive number")
    if not 0 <= retries <= 10:
        raise ConfigurationError(f"retries: {retries!r} is not between 0 and 10")


def _check_nas_identifier(nas_identifier: str) -> None:
    size = len(nas_identifier.encode("utf-8"))
    if not 1 <= size <= MAX_ATTRIBUTE_BYTES:
        raise ConfigurationError(
            f"nas_identifier: must have 1 to {MAX_ATTRIBUTE_BYTES} bytes"
        )


def _check_secret(name: str, secret: Secret | str) -> Secret:
    value = Secret(secret) if isinstance(secret, str) else secret
    size = len(value.reveal().encode("utf-8"))
    if size == 0:
        raise ConfigurationError("secret: must not be empty")
    if size < MIN_SECRET_BYTES:
        _log.warning(
            "AAA group %s: the RADIUS shared secret has %d bytes; RFC 2865 "
            "recommends at least %d",
            name,
            size,
            MIN_SECRET_BYTES,
        )
    return value
