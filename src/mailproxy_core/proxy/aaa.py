"""AAA server groups: the back ends that check the VPN part of a login.

Every group type implements :class:`AaaGroup`: ``local``
(:class:`~mailproxy_core.proxy.users.LocalAaaGroup`), ``ldap``
(:class:`~mailproxy_core.proxy.ldapgroup.LdapAaaGroup`) and ``radius``
(:class:`~mailproxy_core.proxy.radiusgroup.RadiusAaaGroup`).
:func:`~mailproxy_core.proxy.aaagroups.build_aaa_group` creates them from
the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class AaaResult:
    """The result of an AAA server group's check of one login.

    :param success: whether the user name and password are valid.
    :param reason: why the login failed, for the log; never a secret.
    :param group: the group policy that the back end assigned, or ``None``.
    """

    success: bool
    reason: str = ""
    group: str | None = None


class AaaGroup(Protocol):
    """An AAA server group that checks a user name and password."""

    @property
    def name(self) -> str:
        """Name of the group in the configuration."""

    async def authenticate(self, user: str, password: str) -> AaaResult:
        """Check ``password`` for ``user`` without blocking the event loop."""
