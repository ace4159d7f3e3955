"""The ``ldap`` AAA server group: find the user's entry, then bind as it.

A login runs in two steps, each on its own connection:

1. Search below ``base_dn`` with ``user_filter``, in which ``{user}`` is
   replaced by the user name escaped as an RFC 4515 assertion value. The
   search runs as the service account ``bind_dn`` when one is configured,
   else anonymously. It must find exactly one entry.
2. Simple bind (RFC 4513 section 5.1.3) as that entry's DN with the password.
   The LDAP server checks the password, so the proxy never reads password
   hashes.

An empty password is rejected before any connection. A simple bind with a DN
and an empty password is an unauthenticated bind (RFC 4513 section 5.1.2),
which many servers accept, so it would let anybody in.

The client library is python-ldap, a wrapper of OpenLDAP's libldap. It is
maintained, and it builds here against Debian's libldap2-dev and
libsasl2-dev. TLS certificate checking comes from libldap itself. The
pure-Python alternative ldap3 has had no release since 2021. python-ldap
blocks, so every login runs in a thread of the group's own
(:class:`~mailproxy_core.proxy.blocking.BlockingRunner`), and libldap gets
``timeout`` as its connect and operation timeout. libldap has no timeout
for the TLS handshake of ``ldaps://``, so a server that accepts and then
stays silent keeps that thread until the server closes; at most
:data:`LDAP_WORKERS` such threads exist per group, and they never delay
other groups or the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import ldap  # type: ignore[import-untyped]
import ldap.dn  # type: ignore[import-untyped]
import ldap.filter  # type: ignore[import-untyped]

from ..errors import ConfigurationError
from ..secrets import Secret
from .aaa import AaaResult
from .blocking import BlockingRunner

_log = logging.getLogger(__name__)

#: Characters rejected in user names. NUL ends a C string in libldap, and
#: CR or LF could split a line in a log record.
FORBIDDEN_NAME_CHARACTERS: Final = frozenset("\x00\r\n")

#: Logins of one LDAP group that may run at once; more wait their turn.
LDAP_WORKERS: Final = 8

_PLACEHOLDER: Final = "{user}"
_NO_DIAGNOSTIC: Final = "(unknown error code)"

# The special attribute list that requests no attributes (RFC 4511
# section 4.5.1.8).
_NO_ATTRIBUTES: Final = ["1.1"]


class _LoginFailed(Exception):
    """A login step failed; the message is the reason, never a secret."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _UserEntry:
    dn: str
    group: str | None


def escape_filter_value(value: str) -> str:
    """Escape ``value`` for use as an assertion value in an LDAP filter.

    ``*``, ``(``, ``)``, ``\\`` and NUL become ``\\2a``, ``\\28``, ``\\29``,
    ``\\5c`` and ``\\00`` (RFC 4515 section 3), so a user name such as
    ``*`` matches only an entry whose value is ``*``.

    :param value: the raw value, for example a user name.
    :returns: the escaped value.
    """
    return str(ldap.filter.escape_filter_chars(value))


def check_credentials(user: str, password: str) -> str | None:
    """Check a user name and password before any LDAP traffic.

    :param user: the VPN user name.
    :param password: the VPN password.
    :returns: the reason for rejecting them, or ``None`` when they may be
        sent to the server.
    """
    if not user:
        return "empty user name"
    if any(character in FORBIDDEN_NAME_CHARACTERS for character in user):
        return "user name contains NUL, CR or LF"
    if not password:
        return "empty password"
    return None


class LdapAaaGroup:
    """The ``ldap`` AAA server group.

    :param name: the group name in the configuration.
    :param url: the server, as ``ldap://HOST[:PORT]`` or
        ``ldaps://HOST[:PORT]``.
    :param base_dn: the subtree that the user search starts at.
    :param user_filter: the search filter; ``{user}`` is replaced by the
        escaped user name.
    :param bind_dn: the DN of the service account that searches, or
        ``None`` to search anonymously.
    :param bind_password: the password of ``bind_dn``.
    :param group_attribute: the attribute of the user's entry whose first
        value is the group policy of the login, or ``None`` for no group.
    :param timeout: seconds for one login, and for each connect and LDAP
        operation.
    :param ca_file: PEM file of the CA certificates that the server's
        certificate must chain to, or ``None`` for libldap's default
        (``TLS_CACERT`` in ``/etc/ldap/ldap.conf``).
    :param start_tls: whether to send StartTLS (RFC 4511 section 4.14)
        after connecting to an ``ldap://`` URL.
    :raises ConfigurationError: when a parameter is invalid; the message
        names it.
    """

    def __init__(
        self,
        name: str,
        *,
        url: str,
        base_dn: str,
        user_filter: str = "(uid={user})",
        bind_dn: str | None = None,
        bind_password: Secret | str | None = None,
        group_attribute: str | None = None,
        timeout: float = 5.0,
        ca_file: str | Path | None = None,
        start_tls: bool = False,
    ) -> None:
        _check_url(url, start_tls)
        _check_base_dn(base_dn)
        _check_user_filter(user_filter)
        _check_timeout(timeout)
        self._name = name
        self._url = url
        self._base_dn = base_dn
        self._user_filter = user_filter
        self._bind_dn = bind_dn
        self._bind_password = _check_service_account(bind_dn, bind_password)
        self._group_attribute = group_attribute or None
        self._timeout = timeout
        self._runner = BlockingRunner(f"ldap-{name}", LDAP_WORKERS)
        self._ca_file = _check_ca_file(ca_file)
        self._start_tls = start_tls

        if urlsplit(url).scheme == "ldap" and not start_tls:
            _log.warning(
                "AAA group %s: %s sends passwords in clear text; use ldaps:// "
                "or start_tls",
                name,
                url,
            )

    @property
    def name(self) -> str:
        """Name of the group in the configuration."""
        return self._name

    async def authenticate(self, user: str, password: str) -> AaaResult:
        """Check ``password`` for ``user`` against the LDAP server.

        :returns: success with the value of ``group_attribute`` as the
            group, or failure with the reason. An empty password fails
            without any connection to the server.
        """
        problem = check_credentials(user, password)
        if problem is not None:
            return AaaResult(success=False, reason=problem)

        try:
            async with asyncio.timeout(self._timeout):
                return await self._runner.run(self._verify, user, password)
        except TimeoutError:
            return self._failure(self._timeout_reason())

    def _verify(self, user: str, password: str) -> AaaResult:
        try:
            entry = self._find_user(user)
            self._bind_as_user(entry.dn, password)
        except _LoginFailed as failure:
            return AaaResult(success=False, reason=str(failure))
        return AaaResult(success=True, group=entry.group)

    def _find_user(self, user: str) -> _UserEntry:
        escaped = escape_filter_value(user)
        filter_text = self._user_filter.replace(_PLACEHOLDER, escaped)
        attributes = [self._group_attribute] if self._group_attribute else None

        with self._connection("user search") as connection:
            if self._bind_dn is not None and self._bind_password is not None:
                self._bind_service_account(connection)
            entries = self._search(connection, filter_text, attributes)

        if not entries:
            raise _LoginFailed("user not found")
        if len(entries) > 1:
            raise _LoginFailed("user name is ambiguous")
        dn, entry_attributes = entries[0]
        return _UserEntry(dn=dn, group=self._read_group(dn, entry_attributes))

    def _bind_service_account(self, connection: Any) -> None:
        assert self._bind_password is not None
        try:
            connection.simple_bind_s(self._bind_dn, self._bind_password.reveal())
        except ldap.INVALID_CREDENTIALS:
            _log.error(
                "AAA group %s: the LDAP server rejected the service account "
                "%s; check bind_dn and bind_password",
                self._name,
                self._bind_dn,
            )
            raise _LoginFailed("LDAP service account bind failed") from None

    def _search(
        self, connection: Any, filter_text: str, attributes: list[str] | None
    ) -> list[tuple[str, Mapping[str, Sequence[bytes]]]]:
        try:
            results = connection.search_ext_s(
                self._base_dn,
                ldap.SCOPE_SUBTREE,
                filter_text,
                attrlist=attributes or _NO_ATTRIBUTES,
                sizelimit=2,
                timeout=self._timeout,
            )
        except ldap.SIZELIMIT_EXCEEDED:
            # Two entries are enough to know that the name is ambiguous.
            raise _LoginFailed("user name is ambiguous") from None
        except ldap.NO_SUCH_OBJECT:
            _log.error(
                "AAA group %s: base_dn %s does not exist", self._name, self._base_dn
            )
            raise _LoginFailed("LDAP base_dn not found") from None

        # Search result references have no DN. With referrals off they are
        # returned instead of followed, and they name no user.
        return [(dn, attrs) for dn, attrs in results if dn is not None]

    def _read_group(
        self, dn: str, attributes: Mapping[str, Sequence[bytes]]
    ) -> str | None:
        if self._group_attribute is None:
            return None
        key = self._group_attribute.lower()

        # Attribute descriptions are case-insensitive (RFC 4512 section 2.5).
        for description, values in attributes.items():
            if description.lower() == key and values:
                return _decode_group(self._name, dn, values[0])
        return None

    def _bind_as_user(self, dn: str, password: str) -> None:
        with self._connection("user bind") as connection:
            try:
                connection.simple_bind_s(dn, password)
            except ldap.INVALID_CREDENTIALS:
                raise _LoginFailed("wrong password") from None

    @contextlib.contextmanager
    def _connection(self, step: str) -> Iterator[Any]:
        # ldap.initialize only parses the URL; the connection is made by the
        # first operation, inside this error handling.
        connection = ldap.initialize(self._url)
        try:
            self._prepare(connection)
            yield connection
        except ldap.SERVER_DOWN as error:
            raise self._server_error(step, "LDAP server unavailable", error) from None
        except ldap.CONNECT_ERROR as error:
            # libldap raises this when StartTLS fails, for example because
            # the server's certificate does not chain to ca_file.
            raise self._server_error(step, "LDAP StartTLS failed", error) from None
        except ldap.TIMEOUT:
            raise _LoginFailed(self._timeout_reason()) from None
        except ldap.LDAPError as error:
            raise self._server_error(step, "LDAP error", error) from None
        finally:
            with contextlib.suppress(ldap.LDAPError):
                connection.unbind_s()

    def _prepare(self, connection: Any) -> None:
        connection.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
        connection.set_option(ldap.OPT_REFERRALS, 0)
        connection.set_option(ldap.OPT_NETWORK_TIMEOUT, self._timeout)
        connection.set_option(ldap.OPT_TIMEOUT, self._timeout)
        connection.timeout = self._timeout
        self._configure_tls(connection)
        if self._start_tls:
            connection.start_tls_s()

    def _configure_tls(self, connection: Any) -> None:
        connection.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
        if self._ca_file is not None:
            connection.set_option(ldap.OPT_X_TLS_CACERTFILE, str(self._ca_file))

        # libldap applies TLS options that were set on a connection only to
        # a new TLS context, which this option creates; it must come last.
        connection.set_option(ldap.OPT_X_TLS_NEWCTX, 0)

    def _server_error(self, step: str, reason: str, error: Exception) -> _LoginFailed:
        detail = describe_ldap_error(error)
        if self._url.lower().startswith("ldaps:") or self._start_tls:
            # libldap reports a failed certificate check as a connect error.
            detail += " (or the TLS certificate check failed: see ca_file)"
        _log.warning(
            "AAA group %s: %s at %s failed: %s", self._name, step, self._url, detail
        )
        return _LoginFailed(f"{reason}: {detail}")

    def _timeout_reason(self) -> str:
        return f"LDAP server timed out after {self._timeout:g} s"

    def _failure(self, reason: str) -> AaaResult:
        _log.warning("AAA group %s: %s", self._name, reason)
        return AaaResult(success=False, reason=reason)


def describe_ldap_error(error: Exception) -> str:
    """Return the description and diagnostic message of a python-ldap error.

    python-ldap passes a dictionary with the keys ``desc`` and ``info`` as
    the first argument of its exceptions.

    :param error: the exception.
    :returns: ``desc: info``, or the exception's text for other arguments.
    """
    details = error.args[0] if error.args else None
    if not isinstance(details, dict):
        return str(error) or type(error).__name__
    description = str(details.get("desc", type(error).__name__))
    info = details.get("info")

    # libldap fills in "(unknown error code)" when it has no diagnostic
    # message, for example after most TLS failures.
    if not info or info == _NO_DIAGNOSTIC:
        return description
    return f"{description}: {info}"


def _decode_group(group_name: str, dn: str, value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        _log.warning(
            "AAA group %s: ignoring the group of %s, which is not UTF-8",
            group_name,
            dn,
        )
        return None


def _check_url(url: str, start_tls: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ConfigurationError(
            f"url: {url!r} is invalid; use ldap://HOST[:PORT] or ldaps://HOST[:PORT]"
        )
    if parts.scheme == "ldaps" and start_tls:
        raise ConfigurationError(
            "start_tls: an ldaps:// URL already uses TLS; use ldap:// with "
            "start_tls, or turn start_tls off"
        )


def _check_base_dn(base_dn: str) -> None:
    if not base_dn or not ldap.dn.is_dn(base_dn):
        raise ConfigurationError(
            f"base_dn: {base_dn!r} is not a DN such as 'dc=example,dc=org'"
        )


def _check_user_filter(user_filter: str) -> None:
    if _PLACEHOLDER not in user_filter:
        raise ConfigurationError(
            f"user_filter: {user_filter!r} must contain {_PLACEHOLDER}, which is "
            "replaced by the user name"
        )
    if not (user_filter.startswith("(") and user_filter.endswith(")")):
        raise ConfigurationError(
            f"user_filter: {user_filter!r} must be enclosed in parentheses, "
            "such as '(uid={user})'"
        )


def _check_timeout(timeout: float) -> None:
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError(f"timeout: {timeout!r} must be a positive number")


def _check_service_account(
    bind_dn: str | None, bind_password: Secret | str | None
) -> Secret | None:
    if bind_dn is None and bind_password is None:
        return None
    if not bind_dn or not ldap.dn.is_dn(bind_dn):
        raise ConfigurationError(
            f"bind_dn: {bind_dn!r} must be the DN of the service account that "
            "bind_password belongs to"
        )
    secret = Secret(bind_password) if isinstance(bind_password, str) else bind_password
    if not secret:
        # An empty password would make an unauthenticated bind, which
        # searches anonymously without saying so.
        raise ConfigurationError(
            "bind_password: must be set and not empty with bind_dn"
        )
    return secret


def _check_ca_file(ca_file: str | Path | None) -> Path | None:
    if ca_file is None:
        return None
    path = Path(ca_file)
    if not path.is_file():
        raise ConfigurationError(f"ca_file: {str(path)!r} is not a file")
    return path
