"""TLS contexts of the proxy and the throwaway self-signed certificate.

A listener without a configured ``certificate`` uses a certificate that
:func:`generate_self_signed` makes at start-up: CN ``mailproxy``, subject
alternative names 127.0.0.1, ::1 and localhost, an ECDSA P-256 key. It is
fit for tests and trials only, because no client can verify it.

A listener with ``client_ca`` requests a client certificate and verifies
it against that bundle. :func:`peer_certificate_subject` then returns the
verified subject for method ``certificate``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..authflow import Subject, subject_from_ssl
from .certificateconfig import ClientCertificates

_log = logging.getLogger(__name__)

#: Subject alternative names of the throwaway certificate.
SELF_SIGNED_HOSTS: Final = ("localhost", "127.0.0.1", "::1")

#: Validity of the throwaway certificate, long enough for a proxy that
#: runs for months without a restart.
SELF_SIGNED_DAYS: Final = 365


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificatePair:
    """A PEM certificate and its PEM private key.

    :param certificate: the certificate in PEM.
    :param private_key: the unencrypted PKCS#8 key in PEM.
    """

    certificate: bytes
    private_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTls:
    """The TLS context of one listener.

    :param context: the server-side context.
    :param self_signed: the throwaway certificate, or ``None`` when the
        context uses a configured one; tests trust it through this field.
    """

    context: ssl.SSLContext
    self_signed: CertificatePair | None = None


def generate_self_signed(
    common_name: str = "mailproxy", hosts: tuple[str, ...] = SELF_SIGNED_HOSTS
) -> CertificatePair:
    """Create a self-signed certificate and key for ``common_name``.

    :param hosts: DNS names and IP addresses for the subject alternative
        name extension.
    """
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
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return CertificatePair(
        certificate=certificate.public_bytes(serialization.Encoding.PEM),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _san_entries(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def _new_server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def load_certificate_pair(context: ssl.SSLContext, pair: CertificatePair) -> None:
    """Load ``pair`` into ``context`` through a private temporary folder.

    :mod:`ssl` reads certificates only from files, so the PEM text goes to
    a folder of mode 0700 that is deleted right after loading.
    """
    with tempfile.TemporaryDirectory(prefix="mailproxy-tls-") as folder:
        certificate = Path(folder, "certificate.pem")
        key = Path(folder, "key.pem")
        certificate.write_bytes(pair.certificate)
        descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pair.private_key)
        context.load_cert_chain(certificate, key)


class EncryptedKeyError(ssl.SSLError):
    """The private key is encrypted, and the proxy takes no passphrase."""


def _refuse_passphrase() -> bytes:
    # Without a callback OpenSSL would ask on the terminal and block, which
    # a service must never do.
    raise EncryptedKeyError(
        "the private key is encrypted; decrypt it, for example with "
        "'openssl pkey -in KEY -out KEY.plain', because the proxy takes "
        "no passphrase"
    )


def describe_key_error(error: Exception, private_key: Path | None) -> str:
    """Return an operator's explanation of a failed :func:`load_key_pair`."""
    if isinstance(error, EncryptedKeyError):
        return str(error.args[0])
    if isinstance(error, ssl.SSLError) and "PEM lib" in str(error):
        if private_key is None:
            return "no private key in the certificate file; set private_key"
        return "the files hold no matching PEM certificate and private key"
    return str(error)


def load_key_pair(
    context: ssl.SSLContext, certificate: Path, private_key: Path | None
) -> None:
    """Load a certificate chain and key without ever asking for a passphrase.

    :raises ssl.SSLError: when the files do not form a valid pair, or the key
        is encrypted (:class:`EncryptedKeyError`).
    """
    context.load_cert_chain(certificate, private_key, password=_refuse_passphrase)


def server_tls(
    certificate: Path | None,
    private_key: Path | None,
    *,
    listener: str,
    throwaway: CertificatePair | None = None,
    client_certificates: ClientCertificates | None = None,
) -> ServerTls:
    """Create the server context of ``listener``.

    :param certificate: the PEM chain, or ``None`` for a throwaway
        self-signed certificate, which logs a warning.
    :param private_key: the PEM key, or ``None`` when ``certificate``
        contains it.
    :param throwaway: the self-signed pair to use without ``certificate``,
        so that listeners of one process share it; a new one when ``None``.
    :param client_certificates: the CA bundle and mode for client
        certificates, or ``None`` to request none.
    :raises ssl.SSLError: when the files do not form a valid pair, or the
        CA bundle contains no valid certificate.
    :raises OSError: when a file cannot be read.
    """
    context = _new_server_context()
    if client_certificates is not None:
        request_client_certificates(context, client_certificates)
    if certificate is not None:
        load_key_pair(context, certificate, private_key)
        return ServerTls(context=context)

    pair = throwaway or generate_self_signed()
    load_certificate_pair(context, pair)
    _log.warning(
        "%s: no certificate configured; using a throwaway self-signed "
        "certificate that clients cannot verify",
        listener,
    )
    return ServerTls(context=context, self_signed=pair)


def request_client_certificates(
    context: ssl.SSLContext, client_certificates: ClientCertificates
) -> None:
    """Make the server ``context`` request and verify client certificates.

    OpenSSL fails the handshake when a client sends a certificate that
    does not verify, in both modes. The modes differ only for a client
    that sends none.

    :raises ssl.SSLError: when the CA bundle contains no valid certificate.
    :raises OSError: when the CA bundle cannot be read.
    """
    context.load_verify_locations(cafile=client_certificates.ca_file)
    if client_certificates.required:
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_OPTIONAL


def peer_certificate_subject(ssl_object: object) -> Subject | None:
    """Return the subject of the peer's verified certificate.

    :param ssl_object: the ``ssl_object`` extra of a TLS transport.
    :returns: ``None`` without TLS, or when the peer sent no certificate.
    """
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None

    # getpeercert() returns an empty dict for a certificate that was not
    # verified, which a context with client_ca never accepts.
    certificate = ssl_object.getpeercert()
    if not certificate:
        return None
    return subject_from_ssl(certificate.get("subject", ()))


def upstream_context(*, verify: bool, ca_file: Path | None = None) -> ssl.SSLContext:
    """Create a client context for connections to an upstream server.

    :param verify: check the certificate chain and the host name; without
        it the connection is encrypted but open to an active attacker.
    :param ca_file: a PEM bundle to trust instead of the system store.
    """
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def set_no_delay(transport: asyncio.BaseTransport) -> None:
    """Turn on TCP_NODELAY for the socket of a TCP ``transport``.

    Protocol replies are small writes. With Nagle's algorithm on, a reply
    that follows the last TLS handshake flight can wait for the client's
    delayed ACK, which adds tens of milliseconds to every login.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
