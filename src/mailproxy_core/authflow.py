"""The login flow shared by every protocol: method order, identity, policy.

After the client's credentials are split, :class:`AuthFlow` decides each
next step: check the client certificate itself, ask the driver for the
``piggyback`` and ``aaa`` checks, apply the group policy, and choose the
upstream server (``mailhost`` is the upstream login that follows). Every
configured method must pass, in the order of
:data:`~mailproxy_core.settings.METHOD_ORDER`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .delimiters import SplitCredentials
from .settings import AuthMethod, GroupPolicy, SessionSettings, UpstreamServer

#: A certificate subject as (attribute, value) pairs in DN order, such as
#: ``(("O", "Example"), ("OU", "staff"), ("CN", "alice"))``.
Subject = tuple[tuple[str, str], ...]


def subject_from_ssl(subject: Sequence[Sequence[Sequence[str]]]) -> Subject:
    """Flatten the ``subject`` of :meth:`ssl.SSLSocket.getpeercert`.

    Python gives long attribute names (``commonName``); they become the
    short ones of RFC 4514 section 3 where one exists.
    """
    short = {
        "commonName": "CN",
        "organizationalUnitName": "OU",
        "organizationName": "O",
        "localityName": "L",
        "stateOrProvinceName": "ST",
        "countryName": "C",
        "emailAddress": "EMAILADDRESS",
        "domainComponent": "DC",
        "userId": "UID",
    }
    return tuple(
        (short.get(name, name), value) for rdn in subject for name, value in rdn
    )


def certificate_identity(
    subject: Subject, attributes: tuple[str, ...] | None
) -> str | None:
    """Derive the user name from a certificate subject.

    :param attributes: the attributes to try in order, the first present
        one wins (primary, then secondary); ``None`` for the entire DN,
        written most specific attribute first as in RFC 4514.
    :returns: the identity, or ``None`` when no listed attribute is present.
    """
    if attributes is None:
        if not subject:
            return None
        return ",".join(f"{name}={value}" for name, value in reversed(subject))
    for wanted in attributes:
        for name, value in reversed(subject):
            if name.upper() == wanted.upper() and value:
                return value
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """The driver must check ``method`` and report the result."""

    method: AuthMethod


@dataclass(frozen=True, slots=True, kw_only=True)
class Passed:
    """The flow checked ``method`` itself, and it passed."""

    method: AuthMethod


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """The login fails; ``method`` is ``None`` for failures of no method."""

    method: AuthMethod | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Select:
    """Every check passed: connect to ``server`` for the upstream login."""

    server: UpstreamServer
    policy: GroupPolicy | None
    user: str


FlowStep = Check | Passed | Refused | Select


class AuthFlow:
    """The checks of one login attempt, in order.

    :param settings: the listener's settings.
    :param protocol: the listener's protocol name, as group policies list it.
    :param credentials: the split credentials of this attempt.
    :param certificate_subject: the verified client certificate's subject,
        or ``None`` when the client sent none.
    """

    def __init__(
        self,
        settings: SessionSettings,
        protocol: str,
        credentials: SplitCredentials,
        certificate_subject: Subject | None,
    ) -> None:
        self._settings = settings
        self._protocol = protocol
        self.credentials = credentials
        self._subject = certificate_subject
        self._pending = deque(
            m for m in settings.ordered_methods() if m is not AuthMethod.MAILHOST
        )
        #: The method the driver is checking now.
        self.awaiting: AuthMethod | None = None
        #: The VPN identity: the certificate's user name or the AAA user.
        self.identity: str | None = credentials.vpn_user
        #: The group the AAA server returned.
        self.group: str | None = None

    def next_step(self) -> FlowStep:
        """Return what happens next."""
        if not self._pending:
            return self._select()
        method = self._pending.popleft()
        if method is AuthMethod.CERTIFICATE:
            return self._check_certificate()
        if method is AuthMethod.AAA and not self._matches_certificate():
            reason = "VPN user name differs from the certificate's user name"
            return Refused(method=method, reason=reason)
        self.awaiting = method
        return Check(method=method)

    def record_success(self, group: str | None) -> None:
        """Note that the awaited check passed, with the group it returned."""
        if self.awaiting is AuthMethod.AAA and group is not None:
            self.group = group
        self.awaiting = None

    def _check_certificate(self) -> FlowStep:
        method = AuthMethod.CERTIFICATE
        if self._subject is None:
            return Refused(method=method, reason="client sent no certificate")
        identity = certificate_identity(
            self._subject, self._settings.certificate_username
        )
        if identity is None:
            wanted = ", ".join(self._settings.certificate_username or ())
            return Refused(method=method, reason=f"certificate subject has no {wanted}")
        self.identity = identity
        return Passed(method=method)

    def _matches_certificate(self) -> bool:
        if AuthMethod.CERTIFICATE not in self._settings.methods:
            return True
        vpn_user = self.credentials.vpn_user or ""
        return vpn_user.casefold() == (self.identity or "").casefold()

    def _select(self) -> FlowStep:
        policy = self._policy()
        if isinstance(policy, Refused):
            return policy
        name = self.credentials.server or self._settings.default_server
        if name is None:
            return Refused(
                method=None, reason="no server was named and none is the default"
            )
        if policy is not None and not policy.allows_server(name):
            return Refused(
                method=None,
                reason=f"group policy {policy.name!r} does not allow server {name!r}",
            )
        user = self.identity or self.credentials.mail_user
        return Select(server=self._server(name), policy=policy, user=user)

    def _server(self, name: str) -> UpstreamServer:
        configured = self._settings.servers.get(name)
        if configured is not None:
            return configured
        template = self._settings.any_server
        assert template is not None, "split_credentials returned an unknown server"
        return dataclasses.replace(template, name=name, host=name)

    def _policy(self) -> GroupPolicy | Refused | None:
        settings = self._settings
        if self.group is not None:
            policy = settings.group_policies.get(self.group)
            if policy is None:
                return Refused(
                    method=None, reason=f"group policy {self.group!r} is not configured"
                )
        else:
            policy = settings.default_group_policy
            if policy is None:
                return Refused(
                    method=None, reason="no group and no default group policy"
                )
        if not policy.allows_protocol(self._protocol):
            return Refused(
                method=None,
                reason=f"group policy {policy.name!r} does not allow {self._protocol}",
            )
        return policy
