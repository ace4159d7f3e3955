"""Creation of the configured AAA server groups."""

from __future__ import annotations

from collections.abc import Mapping

from .aaa import AaaGroup
from .config import AaaGroupConfig, ProxyConfig
from .users import LocalAaaGroup


def build_aaa_group(config: AaaGroupConfig) -> AaaGroup:
    """Create the AAA server group that ``config`` describes.

    :raises ValueError: for a group type that has no implementation; the
        configuration loader rejects those first.
    """
    if config.type == "local":
        return LocalAaaGroup(config.name, config.users_file)
    raise ValueError(f"AAA server group type {config.type!r} is not implemented")


def build_aaa_groups(config: ProxyConfig) -> Mapping[str, AaaGroup]:
    """Create every AAA server group of ``config``, by name."""
    return {name: build_aaa_group(group) for name, group in config.aaa_groups.items()}
