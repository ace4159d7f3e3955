"""Splitting combined credentials at the configured separators.

A user types ``vpnuser:mailuser@mailserver`` / ``vpnpass:mailpass``. The
name separator (default ``:``) divides the VPN part from the mail part of
both the user name and the password, at its first occurrence, so VPN names
and passwords may not contain it but mail names and passwords may. The
server separator (default ``@``) divides the mail user name from a server
name at its last occurrence, and only when the text after it names a
configured upstream; otherwise ``alice@example.test`` stays one name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from .errors import ConfigurationError, CredentialsError
from .secrets import Secret

#: The characters that may serve as a name or server separator.
SEPARATORS: Final = frozenset("@|:#,;")

_FORBIDDEN_CHARACTERS: Final = ("\r", "\n", "\x00")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME: Final = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True, slots=True, kw_only=True)
class Delimiters:
    """The two separators of combined credentials.

    :param name_separator: divides the VPN part from the mail part.
    :param server_separator: divides the mail user name from the server.
    :raises ConfigurationError: when a separator is not one of
        ``@ | : # , ;`` or both are the same character.
    """

    name_separator: str = ":"
    server_separator: str = "@"

    def __post_init__(self) -> None:
        allowed = " ".join(sorted(SEPARATORS))
        for key in ("name_separator", "server_separator"):
            value = getattr(self, key)
            # The isinstance check turns an unhashable value, such as a list
            # from a configuration file, into a ConfigurationError.
            if not isinstance(value, str) or value not in SEPARATORS:
                raise ConfigurationError(
                    f"{key} = {value!r} is invalid; use one of: {allowed}"
                )
        if self.name_separator == self.server_separator:
            raise ConfigurationError(
                "name_separator and server_separator must differ; "
                f"both are {self.name_separator!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitCredentials:
    """The parts of typed credentials after splitting.

    :param vpn_user: the VPN user name, or ``None`` when no VPN part is used.
    :param vpn_password: the VPN password, or ``None``.
    :param mail_user: the user name for the upstream mail server.
    :param mail_password: the password or token for the upstream.
    :param server: the configured upstream name that the user typed, or
        ``None`` to use the default server.
    """

    vpn_user: str | None
    vpn_password: Secret | None
    mail_user: str
    mail_password: Secret
    server: str | None


def check_credential_text(value: str, what: str) -> None:
    """Reject text that contains CR, LF or NUL, which could inject a command.

    :raises CredentialsError: naming ``what`` (never the value).
    """
    for character in _FORBIDDEN_CHARACTERS:
        if character in value:
            raise CredentialsError(f"{what} contains a CR, LF or NUL character")


def is_host_name(text: str) -> bool:
    """Whether ``text`` is a DNS host name (RFC 1123 section 2.1) or an
    IPv4 address in dotted-quad form, the forms ``allow_any_server`` accepts.

    Names whose last label is all digits are refused unless they are such
    an address, so short forms that resolvers accept (``127.1``,
    ``2130706433``) cannot hide an address in the logs.
    """
    if _HOST_NAME.fullmatch(text) is None:
        return False
    if not text.rpartition(".")[2].isdigit():
        return True
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def split_server(
    mail_part: str,
    delimiters: Delimiters,
    servers: Collection[str],
    *,
    any_host: bool = False,
) -> tuple[str, str | None]:
    """Split ``mailuser@server`` at the last server separator.

    The split happens only when the text after the separator names one of
    ``servers``, compared without regard to case, or, with ``any_host``,
    when it is any host name.

    :returns: the mail user name and the configured server name (or, with
        ``any_host``, the host name in lower case), or the whole text and
        ``None``.
    """
    user, separator, server = mail_part.rpartition(delimiters.server_separator)
    if not separator:
        return mail_part, None
    by_folded_name = {name.casefold(): name for name in servers}
    configured = by_folded_name.get(server.casefold())
    if configured is not None:
        return user, configured
    if any_host and is_host_name(server):
        return user, server.lower()
    return mail_part, None


def split_credentials(
    username: str,
    password: Secret,
    *,
    delimiters: Delimiters,
    servers: Collection[str],
    vpn_part: bool,
    mail_part: bool = True,
    any_host: bool = False,
) -> SplitCredentials:
    """Split typed credentials into their VPN and mail parts.

    :param vpn_part: whether the credentials carry a VPN part (method
        ``aaa`` is configured).
    :param mail_part: whether they carry a mail part (method ``mailhost``
        is configured). With a VPN part only, the whole text is the VPN
        credential and the mail fields repeat it.
    :param any_host: accept any host name after the server separator, not
        only the configured ``servers`` (``allow_any_server``).
    :raises CredentialsError: when a required part is missing or empty, or
        any text contains CR, LF or NUL. A password is required for each
        part that the credentials carry.
    """
    check_credential_text(username, "user name")
    check_credential_text(password.reveal(), "password")
    if not vpn_part:
        credentials = _mail_only(username, password, delimiters, servers, any_host)
    elif not mail_part:
        credentials = _vpn_only(username, password, delimiters, servers, any_host)
    else:
        credentials = _vpn_and_mail(username, password, delimiters, servers, any_host)
    _check_passwords(credentials, vpn_part=vpn_part, mail_part=mail_part)
    return credentials


def _check_passwords(
    credentials: SplitCredentials, *, vpn_part: bool, mail_part: bool
) -> None:
    """Reject an empty password for a part that the credentials carry.

    An LDAP simple bind with a name and an empty password is the
    unauthenticated mechanism of RFC 4513, section 5.1.2. A server that
    allows it returns success without checking any password, so an empty
    VPN password must never reach the driver's AAA check.
    """
    if vpn_part and not credentials.vpn_password:
        raise CredentialsError("VPN password is empty")
    if mail_part and not credentials.mail_password:
        raise CredentialsError("mail password is empty")


def _vpn_and_mail(
    username: str,
    password: Secret,
    delimiters: Delimiters,
    servers: Collection[str],
    any_host: bool,
) -> SplitCredentials:
    separator = delimiters.name_separator
    vpn_user, found, mail_text = username.partition(separator)
    if not found:
        raise CredentialsError(f"user name has no {separator!r} before the mail user")
    vpn_secret, found, mail_secret = password.reveal().partition(separator)
    if not found:
        raise CredentialsError(f"password has no {separator!r} before the mail part")
    if not vpn_user:
        raise CredentialsError("VPN user name is empty")
    mail_user, server = split_server(mail_text, delimiters, servers, any_host=any_host)
    if not mail_user:
        raise CredentialsError("mail user name is empty")
    return SplitCredentials(
        vpn_user=vpn_user,
        vpn_password=Secret(vpn_secret),
        mail_user=mail_user,
        mail_password=Secret(mail_secret),
        server=server,
    )


def _mail_only(
    username: str,
    password: Secret,
    delimiters: Delimiters,
    servers: Collection[str],
    any_host: bool,
) -> SplitCredentials:
    mail_user, server = split_server(username, delimiters, servers, any_host=any_host)
    if not mail_user:
        raise CredentialsError("mail user name is empty")
    return SplitCredentials(
        vpn_user=None,
        vpn_password=None,
        mail_user=mail_user,
        mail_password=password,
        server=server,
    )


def _vpn_only(
    username: str,
    password: Secret,
    delimiters: Delimiters,
    servers: Collection[str],
    any_host: bool,
) -> SplitCredentials:
    vpn_user, server = split_server(username, delimiters, servers, any_host=any_host)
    if not vpn_user:
        raise CredentialsError("VPN user name is empty")
    return SplitCredentials(
        vpn_user=vpn_user,
        vpn_password=password,
        mail_user=vpn_user,
        mail_password=password,
        server=server,
    )
