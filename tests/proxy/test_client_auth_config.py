"""Tests of the configuration of methods ``certificate`` and ``piggyback``."""

from __future__ import annotations

import copy
import ssl
from pathlib import Path
from typing import Any

import pytest

from mailproxy_core.errors import ConfigurationError
from mailproxy_core.proxy import cli
from mailproxy_core.proxy.certificateconfig import ClientCertificates
from mailproxy_core.proxy.config import ProxyConfig, parse_config
from mailproxy_core.proxy.tls import generate_self_signed, server_tls
from mailproxy_core.settings import AuthMethod

BASE: dict[str, Any] = {
    "imap4s": {
        "listen": "127.0.0.1:9993",
        "authentication": ["certificate", "mailhost"],
        "client_ca": "ca.pem",
        "default_server": "mail",
        "servers": {"mail": {"host": "127.0.0.1", "port": 143}},
    },
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Return a folder with a CA bundle ``ca.pem``."""
    (tmp_path / "ca.pem").write_bytes(generate_self_signed().certificate)
    return tmp_path


def parse(
    folder: Path, top: dict[str, Any] | None = None, **imap4s: Any
) -> ProxyConfig:
    """Parse :data:`BASE` with ``imap4s`` keys replaced; ``None`` removes one."""
    document = copy.deepcopy(BASE)
    document.update(top or {})
    for key, value in imap4s.items():
        if value is None:
            del document["imap4s"][key]
        else:
            document["imap4s"][key] = value
    return parse_config(document, folder / "proxy.toml")


def error_of(folder: Path, top: dict[str, Any] | None = None, **imap4s: Any) -> str:
    """Return the message of the ConfigurationError that the changes cause."""
    with pytest.raises(ConfigurationError) as caught:
        parse(folder, top, **imap4s)
    return str(caught.value)


# Valid configurations


def test_client_ca_defaults_to_optional(folder: Path) -> None:
    listener = parse(folder).listeners["imap4s"]
    assert listener.client_certificates == ClientCertificates(
        ca_file=folder / "ca.pem", required=False
    )
    assert listener.session.methods == {AuthMethod.CERTIFICATE, AuthMethod.MAILHOST}
    assert listener.session.certificate_username == ("CN", "OU")


def test_client_certificate_required(folder: Path) -> None:
    listener = parse(folder, client_certificate="required").listeners["imap4s"]
    assert listener.client_certificates is not None
    assert listener.client_certificates.required is True


def test_client_ca_without_certificate_method(folder: Path) -> None:
    config = parse(folder, authentication=["mailhost"], client_certificate="required")
    listener = config.listeners["imap4s"]
    assert listener.client_certificates is not None
    assert AuthMethod.CERTIFICATE not in listener.session.methods


def test_no_client_ca_requests_nothing(folder: Path) -> None:
    config = parse(folder, authentication=["mailhost"], client_ca=None)
    assert config.listeners["imap4s"].client_certificates is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["uid", "cn"], ("UID", "CN")),
        ("CN", ("CN",)),
        (["emailAddress"], ("EMAILADDRESS",)),
        ("entire-dn", None),
    ],
)
def test_certificate_username(
    folder: Path, value: object, expected: tuple[str, ...] | None
) -> None:
    config = parse(folder, certificate_username=value)
    assert config.listeners["imap4s"].session.certificate_username == expected


def test_piggyback_database_relative_to_config(folder: Path) -> None:
    top = {"piggyback": {"database": "web/sessions.db", "timeout": 1.5}}
    config = parse(folder, top, authentication=["piggyback", "mailhost"])
    assert config.piggyback is not None
    assert config.piggyback.database == folder / "web/sessions.db"
    assert config.piggyback.timeout == 1.5
    methods = config.listeners["imap4s"].session.methods
    assert methods == {AuthMethod.PIGGYBACK, AuthMethod.MAILHOST}


def test_piggyback_timeout_default(folder: Path) -> None:
    config = parse(folder, {"piggyback": {"database": "web.db"}})
    assert config.piggyback is not None
    assert config.piggyback.timeout == 5.0


# Invalid configurations


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"client_ca": None},
            "imap4s.client_ca: missing; authentication includes certificate, so "
            "name the PEM bundle of the CAs that sign client certificates",
        ),
        (
            {
                "client_ca": None,
                "authentication": ["mailhost"],
                "client_certificate": "required",
            },
            "imap4s.client_certificate: set client_ca too, or remove it",
        ),
        (
            {"client_certificate": "always"},
            "imap4s.client_certificate: 'always' is invalid; "
            "use one of: optional, required",
        ),
        ({"client_ca": "nosuch.pem"}, "imap4s.client_ca: file "),
        (
            {"certificate_username": ["CN", "SN"]},
            "imap4s.certificate_username[1]: 'SN' is invalid; use one of: C, CN, "
            "DC, EMAILADDRESS, GIVENNAME, L, O, OU, SERIALNUMBER, ST, SURNAME, "
            'TITLE, UID, or "entire-dn" alone instead of the list',
        ),
        (
            {"certificate_username": []},
            'imap4s.certificate_username: must name at least one attribute, or be "'
            'entire-dn"',
        ),
        (
            {"certificate_username": ["entire-dn"]},
            "imap4s.certificate_username[0]: 'entire-dn' is invalid",
        ),
        (
            {"certificate_username": 3},
            "imap4s.certificate_username: expected a string or a list, got 3",
        ),
        (
            {"authentication": ["mailhost"], "certificate_username": ["CN"]},
            "imap4s.certificate_username: authentication does not include "
            "certificate, so this key has no effect",
        ),
        (
            {"authentication": ["piggyback", "mailhost"]},
            "piggyback.database: missing; imap4s.authentication includes "
            'piggyback, so add a [piggyback] table with database = "FILE"',
        ),
    ],
)
def test_invalid_listener_key(
    folder: Path, changes: dict[str, Any], expected: str
) -> None:
    assert error_of(folder, **changes).startswith(expected)


@pytest.mark.parametrize(
    ("piggyback", "expected"),
    [
        ({}, "piggyback.database: missing; this key is required"),
        ({"database": ""}, "piggyback.database: must not be empty"),
        ({"database": "web.db", "path": "x"}, "piggyback.path: unknown key"),
        ({"database": "web.db", "timeout": 0}, "piggyback.timeout: 0 is invalid"),
    ],
)
def test_invalid_piggyback_table(
    folder: Path, piggyback: dict[str, Any], expected: str
) -> None:
    assert error_of(folder, {"piggyback": piggyback}).startswith(expected)


# TLS contexts and check-config


def test_server_tls_optional_client_certificates(folder: Path) -> None:
    settings = ClientCertificates(ca_file=folder / "ca.pem")
    tls = server_tls(None, None, listener="imap4s", client_certificates=settings)
    assert tls.context.verify_mode is ssl.CERT_OPTIONAL
    assert tls.context.cert_store_stats()["x509"] == 1


def test_server_tls_required_client_certificates(folder: Path) -> None:
    settings = ClientCertificates(ca_file=folder / "ca.pem", required=True)
    tls = server_tls(None, None, listener="imap4s", client_certificates=settings)
    assert tls.context.verify_mode is ssl.CERT_REQUIRED


def test_server_tls_without_client_certificates() -> None:
    tls = server_tls(None, None, listener="imap4s")
    assert tls.context.verify_mode is ssl.CERT_NONE


CONFIG = """\
[piggyback]
database = "web.db"

[imap4s]
listen = "127.0.0.1:9993"
authentication = ["certificate", "piggyback", "mailhost"]
client_ca = "ca.pem"
client_certificate = "required"
default_server = "mail"

[imap4s.servers.mail]
host = "127.0.0.1"
"""


def test_check_config_describes_client_auth(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = folder / "proxy.toml"
    path.write_text(CONFIG)
    assert cli.main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    ca_file = folder / "ca.pem"
    assert f"client certificates required from {ca_file}" in out
    assert "authentication certificate, piggyback, mailhost" in out
    assert f"piggyback: web sessions in {folder / 'web.db'} (not found yet)" in out


def test_check_config_rejects_bad_ca_bundle(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "ca.pem").write_text("not a certificate\n")
    path = folder / "proxy.toml"
    path.write_text(CONFIG)
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mailproxy: imap4s.client_ca: cannot load the CA bundle")
