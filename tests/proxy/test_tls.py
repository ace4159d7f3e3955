"""Tests of the proxy's TLS contexts and throwaway certificate."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from mailproxy_core.proxy.tls import (
    CertificatePair,
    generate_self_signed,
    server_tls,
    upstream_context,
)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """Run a TLS handshake between two contexts over memory buffers.

    :raises ssl.SSLError: when the client rejects the server.
    """
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    client_side = client.wrap_bio(to_client, to_server, server_hostname=hostname)
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def trusting(pair: CertificatePair) -> ssl.SSLContext:
    """Return a client context that trusts only ``pair``'s certificate."""
    return ssl.create_default_context(cadata=pair.certificate.decode("ascii"))


def test_self_signed_names() -> None:
    pair = generate_self_signed()
    certificate = x509.load_pem_x509_certificate(pair.certificate)
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert common_name[0].value == "mailproxy"
    names = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_self_signed_key_matches() -> None:
    pair = generate_self_signed()
    certificate = x509.load_pem_x509_certificate(pair.certificate)
    key = serialization.load_pem_private_key(pair.private_key, password=None)
    assert certificate.public_key() == key.public_key()


def test_private_key_hidden_in_repr() -> None:
    pair = generate_self_signed()
    assert "PRIVATE" not in repr(pair)


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost", "::1"])
def test_throwaway_context_verifies(hostname: str) -> None:
    tls = server_tls(None, None, listener="imap4s")
    assert tls.self_signed is not None
    handshake(tls.context, trusting(tls.self_signed), hostname)


def test_throwaway_certificate_logs_warning(caplog: pytest.LogCaptureFixture) -> None:
    server_tls(None, None, listener="imap4s")
    assert "imap4s: no certificate configured" in caplog.text


def test_wrong_hostname_rejected() -> None:
    tls = server_tls(None, None, listener="imap4s")
    assert tls.self_signed is not None
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tls.context, trusting(tls.self_signed), "mail.example.org")


def test_configured_certificate_loaded(tmp_path: Path) -> None:
    pair = generate_self_signed()
    certificate, key = tmp_path / "proxy.pem", tmp_path / "proxy.key"
    certificate.write_bytes(pair.certificate)
    key.write_bytes(pair.private_key)

    tls = server_tls(certificate, key, listener="imap4s")
    assert tls.self_signed is None
    handshake(tls.context, trusting(pair), "127.0.0.1")


def test_certificate_file_with_key(tmp_path: Path) -> None:
    pair = generate_self_signed()
    combined = tmp_path / "proxy.pem"
    combined.write_bytes(pair.certificate + pair.private_key)
    handshake(server_tls(combined, None, listener="x").context, trusting(pair), "::1")


def test_mismatched_key_rejected(tmp_path: Path) -> None:
    certificate, key = tmp_path / "proxy.pem", tmp_path / "proxy.key"
    certificate.write_bytes(generate_self_signed().certificate)
    key.write_bytes(generate_self_signed().private_key)
    with pytest.raises(ssl.SSLError):
        server_tls(certificate, key, listener="imap4s")


def test_upstream_context_verification(tmp_path: Path) -> None:
    pair = generate_self_signed()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pair.certificate)
    server = server_tls(None, None, listener="x")
    own = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    own.load_cert_chain(*_write_pair(tmp_path, pair))

    handshake(own, upstream_context(verify=True, ca_file=ca_file), "127.0.0.1")
    handshake(server.context, upstream_context(verify=False), "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server.context, upstream_context(verify=True, ca_file=ca_file), "::1")


def test_upstream_context_defaults() -> None:
    verified = upstream_context(verify=True)
    assert verified.verify_mode is ssl.CERT_REQUIRED
    assert verified.check_hostname is True
    unverified = upstream_context(verify=False)
    assert unverified.verify_mode is ssl.CERT_NONE
    assert unverified.check_hostname is False
    assert verified.minimum_version is ssl.TLSVersion.TLSv1_2


def _write_pair(folder: Path, pair: CertificatePair) -> tuple[Path, Path]:
    certificate, key = folder / "own.pem", folder / "own.key"
    certificate.write_bytes(pair.certificate)
    key.write_bytes(pair.private_key)
    return certificate, key
