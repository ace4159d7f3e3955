"""Creation of the configured AAA server groups."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ConfigurationError
from .aaa import AaaGroup
from .config import AaaGroupConfig, ProxyConfig
from .users import LocalAaaGroup


def build_aaa_group(config: AaaGroupConfig) -> AaaGroup:
    """Create the AAA server group that ``config`` describes.

    The LDAP and RADIUS modules are imported only here, because their
    client libraries come with the ``ldap`` and ``radius`` extras.

    :raises ConfigurationError: when a setting is invalid or the group's
        client library is not installed.
    """
    if config.type == "local":
        assert config.users_file is not None
        return LocalAaaGroup(config.name, config.users_file)
    extra = config.type
    try:
        if config.type == "ldap":
            from .ldapgroup import LdapAaaGroup

            return LdapAaaGroup(config.name, **config.options)  # type: ignore[arg-type]
        from .radiusgroup import RadiusAaaGroup

        return RadiusAaaGroup(config.name, **config.options)  # type: ignore[arg-type]
    except ImportError as error:
        raise ConfigurationError(
            f"aaa.{config.name}: type {extra!r} needs the {error.name} package; "
            f"install it with: pip install 'mailproxy-core[{extra}]'"
        ) from None
    except ConfigurationError as error:
        raise ConfigurationError(f"aaa.{config.name}.{error}") from None


def build_aaa_groups(config: ProxyConfig) -> Mapping[str, AaaGroup]:
    """Create every AAA server group of ``config``, by name."""
    return {name: build_aaa_group(group) for name, group in config.aaa_groups.items()}
