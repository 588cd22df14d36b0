"""TLS: the server certificate (named in the config, or made on first start).

When the config names no certificate, a self-signed one for the hostname is
made in ``<data>/tls/`` on first start and its SHA-256 fingerprint logged,
so that users can check it in their client's warning.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from cyrusmail.private_files import PRIVATE_FOLDER, create_private


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
    cert_path.parent.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with create_private(key_path) as out:
        out.write(key_bytes)
    with create_private(cert_path) as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))


class TLSFileError(ValueError):
    """A certificate or key that cannot serve; ``which`` is ``certificate`` or ``key``."""

    def __init__(self, which: str, problem: str):
        super().__init__(problem)
        self.which = which


def _read(which: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TLSFileError(which, f"cannot read {path}: {error.strerror}") from None


def load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """The certificate and its key, checked: readable, PEM, unencrypted, and one the other's."""
    return parse_pair(_read("certificate", cert_path), _read("key", key_path), cert_path, key_path)


def parse_pair(cert_pem: bytes, key_pem: bytes, cert_path: Path,
               key_path: Path) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """:func:`load_pair` of PEM already read (the paths name them in errors)."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise TLSFileError("certificate", f"{cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):  # TypeError: the key is encrypted
        raise TLSFileError("key", f"{key_path} is not an unencrypted PEM private key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise TLSFileError("key", f"{key_path} is not the key of the certificate {cert_path}")
    return certificate, key


def fingerprint(options: ssl.CertificateOptions | ReloadableTLS) -> str:
    """The SHA-256 fingerprint of the certificate ``options`` serves, as clients show it."""
    certificate = options.certificate
    if not isinstance(certificate, x509.Certificate):  # older Twisted keeps pyOpenSSL's X509
        certificate = certificate.to_cryptography()
    digest = certificate.fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


#: TLS 1.2 suites of Mozilla's "intermediate" profile (version 5.7): forward
#: secret key exchange and AEAD only, no CBC, no RSA key exchange. Its
#: DHE-RSA suites are left out: they need DH parameters, and every client
#: with these AEAD suites has ECDHE. TLS 1.3 keeps OpenSSL's suites, the
#: profile's three.
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


class ServerTLSOptions(ssl.CertificateOptions):
    """Twisted's options with the client's cipher order honoured, as the profile says.

    Every suite on offer is strong, so the client picks: one without AES in
    hardware asks for ChaCha20 first.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._options &= ~SSL.OP_CIPHER_SERVER_PREFERENCE


def context_factory(cert_path: Path, key_path: Path) -> ssl.CertificateOptions:
    """Server TLS options: Mozilla "intermediate" (TLS 1.2 or later), the certificate and its key.

    TLSFileError when either file cannot serve (see :func:`load_pair`).
    """
    return _options(*load_pair(cert_path, key_path))


def _options(certificate: x509.Certificate, key: PrivateKeyTypes) -> ssl.CertificateOptions:
    return ServerTLSOptions(
        privateKey=key,
        certificate=certificate,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(INTERMEDIATE_CIPHERS),
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
        self.pem = (_read("certificate", cert_path), _read("key", key_path))
        self._options = _options(*parse_pair(*self.pem, cert_path, key_path))

    @classmethod
    def from_pem(cls, cert_path: Path, key_path: Path, cert_pem: bytes, key_pem: bytes) -> ReloadableTLS:
        """Settings from PEM another process read (a worker's, from its supervisor: see ``twistd -u``)."""
        self = cls.__new__(cls)
        self.cert_path, self.key_path = cert_path, key_path
        self.use_pem(cert_pem, key_pem)
        return self

    def use_pem(self, cert_pem: bytes, key_pem: bytes) -> str:
        """Serve this certificate and key from now on; its fingerprint (TLSFileError if unusable)."""
        options = _options(*parse_pair(cert_pem, key_pem, self.cert_path, self.key_path))
        options.getContext()  # a key that does not match the certificate fails here, not at a handshake
        self._options, self.pem = options, (cert_pem, key_pem)
        return fingerprint(options)

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate now served (for :func:`fingerprint`)."""
        return self._options.certificate

    def getContext(self):
        return self._options.getContext()

    def reload(self) -> str:
        """Read the files again; the new certificate's fingerprint.

        A missing or bad file, or a key that does not match the certificate,
        raises (OSError, ValueError, OpenSSL's Error) and the old settings stay.
        """
        return self.use_pem(_read("certificate", self.cert_path), _read("key", self.key_path))
