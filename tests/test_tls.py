"""The server's TLS profile: Mozilla "intermediate", checked by real handshakes in memory."""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL
from twisted.trial import unittest

from cyrusmail import tls


def pump(source: SSL.Connection, sink: SSL.Connection) -> bool:
    """Move what ``source`` has written to ``sink``; whether anything moved."""
    try:
        data = source.bio_read(65536)
    except SSL.WantReadError:
        return False
    sink.bio_write(data)
    return bool(data)


def handshake(server_context: SSL.Context, client_context: SSL.Context) -> tuple[SSL.Connection, SSL.Connection]:
    """Run a TLS handshake between two in-memory connections; SSL.Error if either side refuses."""
    server, client = SSL.Connection(server_context, None), SSL.Connection(client_context, None)
    server.set_accept_state()
    client.set_connect_state()
    done: set[SSL.Connection] = set()
    for _ in range(50):
        for side in (client, server):
            if side not in done:
                try:
                    side.do_handshake()
                    done.add(side)
                except SSL.WantReadError:
                    pass
        moved = pump(client, server) | pump(server, client)
        if len(done) == 2 and not moved:
            return server, client
    raise AssertionError("the handshake neither finished nor failed")


def client(max_version: int | None = None, ciphers: bytes | None = None, min_version: int | None = None):
    context = SSL.Context(SSL.TLS_METHOD)
    if min_version is not None:
        context.set_min_proto_version(min_version)
    if max_version is not None:
        context.set_max_proto_version(max_version)
    if ciphers is not None:
        context.set_cipher_list(ciphers)
    return context


class ServerProfileTests(unittest.TestCase):
    def setUp(self):
        folder = Path(self.mktemp())
        cert, key = tls.self_signed_paths(folder)
        tls.make_self_signed("mail.example.org", cert, key)
        self.server = tls.context_factory(cert, key).getContext()

    def test_a_default_client_gets_tls_1_3(self):
        server, _ = handshake(self.server, client())
        self.assertEqual(server.get_protocol_version_name(), "TLSv1.3")

    def test_a_tls_1_2_client_gets_an_aead_suite(self):
        server, _ = handshake(self.server, client(max_version=SSL.TLS1_2_VERSION))
        self.assertEqual(server.get_protocol_version_name(), "TLSv1.2")
        self.assertIn(server.get_cipher_name(), tls.INTERMEDIATE_CIPHERS.split(":"))

    def test_a_client_offering_only_cbc_suites_under_tls_1_2_is_refused(self):
        cbc = b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384"
        with self.assertRaises(SSL.Error):
            handshake(self.server, client(max_version=SSL.TLS1_2_VERSION, ciphers=cbc))

    def test_a_tls_1_1_client_is_refused(self):
        old = client(min_version=SSL.TLS1_1_VERSION, max_version=SSL.TLS1_1_VERSION, ciphers=b"DEFAULT:@SECLEVEL=0")
        with self.assertRaises(SSL.Error):
            handshake(self.server, old)

    def test_the_client_chooses_among_the_suites_on_offer(self):
        prefers_chacha = b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
        server, _ = handshake(self.server, client(max_version=SSL.TLS1_2_VERSION, ciphers=prefers_chacha))
        self.assertEqual(server.get_cipher_name(), "ECDHE-ECDSA-CHACHA20-POLY1305")

    def test_the_cipher_list_is_the_profile(self):
        offered = {name.decode() if isinstance(name, bytes) else name
                   for name in SSL.Connection(self.server, None).get_cipher_list()}
        tls_1_2 = {name for name in offered if not name.startswith("TLS_")}
        self.assertEqual(tls_1_2, set(tls.INTERMEDIATE_CIPHERS.split(":")))
        self.assertEqual(offered - tls_1_2, {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                             "TLS_CHACHA20_POLY1305_SHA256"})
