"""TLS: the server certificate (named in the config, or made on first start).

When the config names no certificate, a self-signed one for the hostname is
made in ``<data>/tls/`` on first start and its SHA-256 fingerprint logged,
so that users can check it in their client's warning.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer


def self_signed_paths(data: Path) -> tuple[Path, Path]:
    return data / "tls" / "cert.pem", data / "tls" / "key.pem"


def make_self_signed(hostname: str, cert_path: Path, key_path: Path) -> None:
    """Write a self-signed certificate for ``hostname`` (and localhost), valid ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.IPAddress(ipaddress.ip_address("::1"))]
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def fingerprint(cert_path: Path) -> str:
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    digest = certificate.fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


def context_factory(cert_path: Path, key_path: Path) -> ssl.CertificateOptions:
    """Server TLS options: TLS 1.2 or later, the certificate and its key."""
    return ssl.CertificateOptions(
        privateKey=serialization.load_pem_private_key(key_path.read_bytes(), password=None),
        certificate=x509.load_pem_x509_certificate(cert_path.read_bytes()),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


@implementer(IOpenSSLContextFactory)
class ReloadableTLS:
    """The server's TLS settings, re-read from the certificate and key files on request (SIGHUP).

    Implicit-TLS listeners and STARTTLS ask :meth:`getContext` at each new
    connection, so a renewed certificate serves the next handshake on; open
    connections keep the one they began with.
    """

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path, self.key_path = cert_path, key_path
        self._options = context_factory(cert_path, key_path)

    def getContext(self):
        return self._options.getContext()

    def reload(self) -> str:
        """Read the files again; the new certificate's fingerprint.

        A missing or bad file, or a key that does not match the certificate,
        raises (OSError, ValueError, OpenSSL's Error) and the old settings stay.
        """
        options = context_factory(self.cert_path, self.key_path)
        options.getContext()  # a key that does not match the certificate fails here, not at a handshake
        self._options = options
        return fingerprint(self.cert_path)
