"""The client certificate keys of a listener table.

``client_ca``, ``client_certificate`` and ``certificate_username`` are
described with the other listener keys in
:mod:`mailproxy_core.proxy.listenerconfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..settings import AuthMethod
from .configtable import ConfigTable, describe_choices

#: The ``certificate_username`` value that selects the entire subject DN.
ENTIRE_DN: Final = "entire-dn"

#: The attributes tried when ``certificate_username`` is absent: the
#: common name, then the organizational unit.
DEFAULT_CERTIFICATE_USERNAME: Final = ("CN", "OU")

#: Attribute names that ``certificate_username`` accepts. The first nine are
#: the short names that :func:`~mailproxy_core.authflow.subject_from_ssl`
#: writes. The others are attributes that Python's :mod:`ssl` reports under
#: their long name, which the core compares with these without case.
CERTIFICATE_ATTRIBUTES: Final = frozenset(
    {
        "C",
        "CN",
        "DC",
        "EMAILADDRESS",
        "L",
        "O",
        "OU",
        "ST",
        "UID",
        "GIVENNAME",
        "SERIALNUMBER",
        "SURNAME",
        "TITLE",
    }
)

#: Values of ``client_certificate``.
CLIENT_CERTIFICATE_MODES: Final = frozenset({"optional", "required"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCertificates:
    """The client certificate settings of one listener.

    :param ca_file: the PEM bundle of the CAs that sign client certificates.
    :param required: whether the TLS handshake fails without a client
        certificate; otherwise a client may connect without one.
    """

    ca_file: Path
    required: bool = False


def read_client_certificates(
    table: ConfigTable, ca_file: Path | None, methods: frozenset[AuthMethod]
) -> ClientCertificates | None:
    """Validate ``client_certificate`` against ``client_ca`` and ``methods``.

    :param ca_file: the ``client_ca`` file, already checked to exist.
    :returns: ``None`` when ``client_ca`` is absent.
    :raises ConfigurationError: when method ``certificate`` or
        ``client_certificate`` is set without ``client_ca``, or the mode
        is invalid.
    """
    if ca_file is None:
        if "client_certificate" in table:
            raise table.error("client_certificate", "set client_ca too, or remove it")
        if AuthMethod.CERTIFICATE in methods:
            raise table.error(
                "client_ca",
                "missing; authentication includes certificate, so name the PEM "
                "bundle of the CAs that sign client certificates",
            )
        return None
    mode = table.choice("client_certificate", CLIENT_CERTIFICATE_MODES, "optional")
    return ClientCertificates(ca_file=ca_file, required=mode == "required")


def read_certificate_username(
    table: ConfigTable, methods: frozenset[AuthMethod]
) -> tuple[str, ...] | None:
    """Validate ``certificate_username``.

    :returns: the attribute names in upper case, first one tried first, or
        ``None`` for ``"entire-dn"``.
    :raises ConfigurationError: for an unknown attribute, an empty list, or
        the key without method ``certificate``.
    """
    if "certificate_username" not in table:
        return DEFAULT_CERTIFICATE_USERNAME
    if AuthMethod.CERTIFICATE not in methods:
        raise table.error(
            "certificate_username",
            "authentication does not include certificate, so this key has no "
            "effect; add certificate or remove the key",
        )
    if table.raw("certificate_username") == ENTIRE_DN:
        return None
    names = table.string_list("certificate_username") or []
    if not names:
        raise table.error(
            "certificate_username",
            f'must name at least one attribute, or be "{ENTIRE_DN}"',
        )
    for index, name in enumerate(names):
        if name.upper() not in CERTIFICATE_ATTRIBUTES:
            raise table.error(
                f"certificate_username[{index}]",
                f"{name!r} is invalid; use one of: "
                f'{describe_choices(CERTIFICATE_ATTRIBUTES)}, or "{ENTIRE_DN}" '
                "alone instead of the list",
            )
    return tuple(name.upper() for name in names)
