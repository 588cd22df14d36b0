"""When a password may be sent, and where it comes from.

Shared by IMAP, POP3 and submission so that they cannot disagree. How long
an attempt waits is the portal's throttle (:mod:`cyrusmail.auth.throttle`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.interfaces import ISSLTransport


def is_tls(transport) -> bool:
    return ISSLTransport.providedBy(transport)


def is_loopback(transport) -> bool:
    peer = transport.getPeer()
    host = getattr(peer, "host", None)
    if host is None:  # unix socket: local by construction
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_allowed(transport, allow_loopback: bool = True) -> bool:
    """Passwords in the clear only inside TLS, or on loopback when allowed."""
    return is_tls(transport) or (allow_loopback and is_loopback(transport))


def address_of(transport) -> str:
    return str(getattr(transport.getPeer(), "host", "local"))


def tls_connection(transport):
    """The pyOpenSSL ``Connection`` under ``transport`` (implicit TLS or after STARTTLS), or None."""
    from OpenSSL.SSL import Connection

    get_handle = getattr(transport, "getHandle", None) if is_tls(transport) else None
    handle = get_handle() if get_handle is not None else None
    return handle if isinstance(handle, Connection) else None


#: RFC 9266 section 2: the label and length of the tls-exporter channel binding.
EXPORTER_LABEL, EXPORTER_LENGTH = b"EXPORTER-Channel-Binding", 32


def channel_bindings(transport) -> Callable[[str], bytes | None]:
    """A function giving the TLS channel binding of a kind for ``transport``, or None.

    * ``tls-server-end-point`` (RFC 5929 4.1): a hash of our certificate,
      with the hash of its signature (SHA-256 for MD5 or SHA-1), in any TLS
      version;
    * ``tls-exporter`` (RFC 9266): 32 octets exported with the label
      ``EXPORTER-Channel-Binding`` and no context, only in TLS 1.3 (in TLS
      1.2 it is safe only with the extended master secret, which pyOpenSSL
      cannot tell).

    ``tls-unique`` is not offered: RFC 9266 retires it for TLS 1.3, and
    TLS 1.2 clients can use ``tls-server-end-point``.
    """

    def binding(kind: str) -> bytes | None:
        connection = tls_connection(transport)
        if connection is None:
            return None
        if kind == "tls-exporter":
            from OpenSSL.SSL import Error

            if connection.get_protocol_version_name() != "TLSv1.3":
                return None
            try:
                return connection.export_keying_material(EXPORTER_LABEL, EXPORTER_LENGTH)
            except Error:  # the handshake is not done yet (an implicit-TLS greeting)
                return None
        if kind == "tls-server-end-point":
            return server_end_point(connection.get_certificate())
        return None

    return binding


def server_end_point(certificate) -> bytes | None:
    """RFC 5929 4.1's hash of a pyOpenSSL certificate, or None without one."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    if certificate is None:
        return None
    certificate = certificate.to_cryptography()
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate.public_bytes(Encoding.DER))
    return digest.finalize()


def sasl_channel(transport, portal, allow_loopback: bool = True, secure: bool | None = None, service: str = ""):
    """What a SASL mechanism may know of this connection (:class:`cyrusmail.sasl.Channel`).

    ``secure`` overrides the TLS test for a session that has just started
    TLS and knows it.
    """
    from cyrusmail.sasl import Channel

    secure = is_tls(transport) if secure is None else secure
    local = is_loopback(transport)
    return Channel(client=address_of(transport), service=service, secure=secure, local=local,
                   plaintext=secure or (allow_loopback and local), checks=dict(getattr(portal, "checkers", {})),
                   bindings=channel_bindings(transport))
