"""The config file: every error refuses the start with one line naming file, section, key and problem."""

from __future__ import annotations

import os
import textwrap

from twisted.trial import unittest

from cyrusmail.config import ConfigError, load

GOOD = """
[server]
data = {data}
hostname = mail.example.org
admins = root, Boss
domains = example.org example.net
"""


class ConfigCase(unittest.TestCase):
    """Writes a config file and loads it, or checks that it is refused having made nothing."""

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as out:
            out.write(textwrap.dedent(text).format(data=self.data))
        return path

    def setUp(self):
        self.data = os.path.abspath(self.mktemp())

    def refused(self, text: str) -> str:
        path = self.write(text)
        with self.assertRaises(ConfigError) as caught:
            load(path)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(path + ": "), message)
        self.assertFalse(os.path.exists(self.data), "nothing may be created before validation")
        return message


class ConfigTests(ConfigCase):
    def test_good_config_has_defaults_for_everything_else(self):
        config = load(self.write(GOOD))
        self.assertEqual(config.admins, ["root", "boss"])
        self.assertEqual(config.domains, ["example.org", "example.net"])
        self.assertEqual(config["imap"]["listen"], ["tcp:1143:interface=127.0.0.1"])
        self.assertEqual(config["lmtp"]["listen"], ["tcp:2003:interface=127.0.0.1"])
        self.assertEqual(config["queue"]["give_up"], 5 * 86400)
        self.assertEqual(config["server"]["max_message_size"], 50 * 1024 * 1024)
        self.assertEqual(config.special_use_folders()["Sent"], "sent")
        self.assertFalse(os.path.exists(self.data))

    def test_sample_config_is_valid_and_loopback_only(self):
        sample = os.path.join(os.path.dirname(__file__), "..", "etc", "cyrusmail.conf")
        config = load(sample)
        ports = {}
        for service in ("imap", "imaps", "pop3", "pop3s", "submission", "submissions", "lmtp"):
            (listen,) = config[service]["listen"]
            self.assertIn("interface=127.0.0.1", listen)
            ports[service] = int(listen.split(":")[1])
        self.assertEqual(ports, {"imap": 1143, "imaps": 1993, "pop3": 1110, "pop3s": 1995,
                                 "submission": 1587, "submissions": 1465, "lmtp": 2003})

    def test_several_endpoints(self):
        config = load(self.write(GOOD + "[lmtp]\nlisten = tcp:2003:interface=127.0.0.1\n  unix:var/lmtp.sock\n"))
        self.assertEqual(config["lmtp"]["listen"], ["tcp:2003:interface=127.0.0.1", "unix:var/lmtp.sock"])

    def test_unknown_section(self):
        self.assertIn("[imap4]: unknown section", self.refused(GOOD + "[imap4]\nenabled = yes\n"))

    def test_unknown_key(self):
        self.assertIn("[server] datadir: unknown key", self.refused(GOOD + "datadir = x\n"))

    def test_missing_required_key(self):
        self.assertIn("[server] data: is required", self.refused("[server]\nhostname = x\n"))

    def test_bad_boolean(self):
        self.assertIn("[imap] enabled: expected yes or no", self.refused(GOOD + "[imap]\nenabled = maybe\n"))

    def test_bad_endpoint_port(self):
        self.assertIn("[pop3] listen: endpoint 'tcp:99999'", self.refused(GOOD + "[pop3]\nlisten = tcp:99999\n"))

    def test_endpoint_port_that_is_not_a_number(self):
        message = self.refused(GOOD + "[imap]\nlisten = tcp:abc\n")
        self.assertIn("[imap] listen: endpoint 'tcp:abc': the port must be a number from 0 to 65535", message)

    def test_bad_endpoint_kind(self):
        self.assertIn("[imaps] listen: endpoint 'ssl:993'", self.refused(GOOD + "[imaps]\nlisten = ssl:993\n"))

    def test_bad_endpoint_option(self):
        self.assertIn("[imap] listen:", self.refused(GOOD + "[imap]\nlisten = tcp:1143:colour=blue\n"))

    def test_bad_size(self):
        self.assertIn("[server] max_message_size: expected a size",
                      self.refused(GOOD + "max_message_size = lots\n"))

    def test_bad_duration(self):
        self.assertIn("[queue] give_up: expected a duration", self.refused(GOOD + "[queue]\ngive_up = 5 weeks\n"))

    def test_bad_smarthost(self):
        self.assertIn("[queue] smarthost: expected host:port", self.refused(GOOD + "[queue]\nsmarthost = relay\n"))

    def test_bad_tls_mode(self):
        self.assertIn("[queue] smarthost_tls:", self.refused(GOOD + "[queue]\nsmarthost_tls = maybe\n"))

    def test_certificate_without_key(self):
        self.assertIn("[tls] key: certificate and key must be named together",
                      self.refused(GOOD + "[tls]\ncertificate = /x.pem\n"))

    def test_same_endpoint_twice(self):
        message = self.refused(GOOD + "[pop3]\nlisten = tcp:1143:interface=127.0.0.1\n")
        self.assertIn("also used by [imap]", message)

    def test_bad_special_use(self):
        self.assertIn("[server] special_use:", self.refused(GOOD + "special_use = Sent:outbox\n"))

    def test_bad_user_in_admins_is_lowercased(self):
        config = load(self.write(GOOD))
        self.assertIn("boss", config.admins)

    def test_unreadable_file(self):
        with self.assertRaises(ConfigError) as caught:
            load("/nonexistent/cyrusmail.conf")
        self.assertIn("/nonexistent/cyrusmail.conf: cannot read", str(caught.exception))

    def test_not_ini(self):
        self.assertIn("File contains no section headers", self.refused("data = x\n"))

    def test_duplicate_key(self):
        self.assertIn("already exists", self.refused(GOOD + "hostname = y\n"))


class LMTPReachTests(ConfigCase):
    """LMTP has no AUTH: only this machine may reach it, unless ``[lmtp] allow_remote`` says otherwise."""

    def test_every_interface_is_refused(self):
        message = self.refused(GOOD + "[lmtp]\nlisten = tcp:2003\n")
        self.assertIn("[lmtp] listen: 'tcp:2003' can be reached from other machines, and LMTP has no AUTH", message)
        self.assertIn("allow_remote = yes", message)

    def test_public_and_wildcard_addresses_are_refused(self):
        for listen in ("tcp:2003:interface=192.0.2.7", "tcp:2003:interface=0.0.0.0", "tcp6:2003",
                       "tcp:2003:interface=mail.example.org"):
            self.assertIn("LMTP has no AUTH", self.refused(GOOD + f"[lmtp]\nlisten = {listen}\n"))

    def test_one_public_endpoint_among_loopback_ones_is_refused(self):
        text = GOOD + "[lmtp]\nlisten = unix:lmtp.sock\n  tcp:2003:interface=192.0.2.7\n"
        self.assertIn("'tcp:2003:interface=192.0.2.7'", self.refused(text))

    def test_loopback_and_unix_sockets_are_accepted(self):
        listen = "tcp:2003:interface=127.0.0.1\n  tcp6:2003:interface=\\:\\:1\n  unix:lmtp.sock"
        config = load(self.write(GOOD + f"[lmtp]\nlisten = {listen}\n"))
        self.assertEqual(len(config["lmtp"]["listen"]), 3)
        self.assertFalse(config["lmtp"]["allow_remote"])

    def test_allow_remote_lets_lmtp_listen_anywhere(self):
        config = load(self.write(GOOD + "[lmtp]\nlisten = tcp:2003\nallow_remote = yes\n"))
        self.assertEqual(config["lmtp"]["listen"], ["tcp:2003"])

    def test_a_disabled_lmtp_is_not_checked(self):
        config = load(self.write(GOOD + "[lmtp]\nenabled = no\nlisten = tcp:2003\n"))
        self.assertEqual(config.enabled_services().count("lmtp"), 0)

    def test_only_lmtp_is_held_to_loopback(self):
        config = load(self.write(GOOD + "[submission]\nlisten = tcp:1587\n"))
        self.assertEqual(config["submission"]["listen"], ["tcp:1587"])


class MetricsReachTests(ConfigCase):
    """The metrics endpoint has no password: loopback only, unless ``[metrics] allow_remote`` says otherwise."""

    def test_a_public_endpoint_is_refused_once_enabled(self):
        text = GOOD + "[metrics]\nenabled = yes\nlisten = tcp:9143\n"
        self.assertIn("[metrics] listen: 'tcp:9143' can be reached from other machines", self.refused(text))
        self.assertEqual(load(self.write(text + "allow_remote = yes\n"))["metrics"]["listen"], ["tcp:9143"])
        self.assertFalse(load(self.write(GOOD + "[metrics]\nlisten = tcp:9143\n"))["metrics"]["enabled"])

    def test_an_endpoint_of_a_service_is_refused(self):
        text = GOOD + "[metrics]\nenabled = yes\nlisten = tcp:1143:interface=127.0.0.1\n"
        self.assertIn("[metrics] listen: 'tcp:1143:interface=127.0.0.1' is also used by [imap]", self.refused(text))
