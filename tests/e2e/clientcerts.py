"""A test CA and client certificates for method ``certificate``.

:func:`make_client_pki` writes, into one folder, a CA certificate and
three client certificates with their keys: ``full`` (CN=vpnuser,
OU=staff, signed by the CA), ``ou_only`` (OU=staff only, signed by the
CA) and ``foreign`` (CN=vpnuser, OU=staff, signed by another CA that the
proxy does not trust). Every key is ECDSA P-256, valid for one day.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .proxyfixtures import VPN_USER

#: The organizational unit of the client certificates.
CLIENT_OU = "staff"

_VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True, kw_only=True)
class ClientCertificate:
    """A client certificate and its key, as PEM files.

    :ivar certificate: the certificate file.
    :ivar key: the unencrypted private key file.
    """

    certificate: Path
    key: Path

    def load_into(self, context: ssl.SSLContext) -> ssl.SSLContext:
        """Make ``context`` present this certificate and return it."""
        context.load_cert_chain(self.certificate, self.key)
        return context


@dataclass(frozen=True, kw_only=True)
class ClientPki:
    """The files of :func:`make_client_pki`.

    :ivar ca_file: the CA certificate that the proxy trusts.
    :ivar full: CN=vpnuser, OU=staff.
    :ivar ou_only: OU=staff without a CN.
    :ivar foreign: CN=vpnuser, OU=staff from an untrusted CA.
    """

    ca_file: Path
    full: ClientCertificate
    ou_only: ClientCertificate
    foreign: ClientCertificate


@dataclass(frozen=True, kw_only=True)
class _Authority:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def _new_authority(common_name: str) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return _Authority(name=name, key=key, certificate=certificate)


def _issue(
    authority: _Authority, subject: x509.Name, folder: Path, stem: str
) -> ClientCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                authority.key.public_key()
            ),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    paths = ClientCertificate(
        certificate=folder / f"{stem}.pem", key=folder / f"{stem}.key"
    )
    paths.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _subject(*, common_name: str | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, CLIENT_OU)]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def make_client_pki(folder: Path) -> ClientPki:
    """Write the test CA and the client certificates into ``folder``."""
    trusted = _new_authority("mailproxy test client CA")
    other = _new_authority("untrusted test CA")
    ca_file = folder / "client-ca.pem"
    ca_file.write_bytes(trusted.certificate.public_bytes(serialization.Encoding.PEM))
    full = _subject(common_name=VPN_USER)
    return ClientPki(
        ca_file=ca_file,
        full=_issue(trusted, full, folder, "full"),
        ou_only=_issue(trusted, _subject(common_name=None), folder, "ou-only"),
        foreign=_issue(other, full, folder, "foreign"),
    )
