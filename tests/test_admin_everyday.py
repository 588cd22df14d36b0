"""Everyday administration through the real command line: ``config check|show``."""

from __future__ import annotations

from twisted.trial import unittest

from cyrusmail import config as schema
from tests.test_admin import AdminCommands


class ConfigCommandTests(AdminCommands, unittest.TestCase):
    def test_check_says_ok_and_makes_nothing(self):
        said = self.ok("config", "check")
        self.assertIn(f"{self.config}: OK (services: ", said)
        self.assertFalse(self.data.exists(), "a check makes no data folder")

    def test_check_refuses_what_the_server_would_with_its_one_line(self):
        cert = self.folder / "missing.pem"
        with self.config.open("a") as config:
            config.write(f"[tls]\ncertificate = {cert}\nkey = {cert}\n")
        code, out, err = self.admin("config", "check")
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("[tls]", err)
        self.assertIn("missing.pem", err)

    def test_show_prints_every_key_and_reads_back_the_same(self):
        with self.config.open("a") as config:
            config.write("[queue]\nsmarthost = relay.example.net:587\nsmarthost_user = me\n"
                         "smarthost_password = hunter2\nretry_max = 2d\n")
        shown = self.ok("config", "show")
        self.assertNotIn("hunter2", shown)
        self.assertIn("smarthost_password = ********", shown)
        self.assertIn("retry_max = 2d", shown)
        for section, keys in schema.SCHEMA.items():
            self.assertIn(f"[{section}]", shown)
            for key in keys:
                self.assertRegex(shown, rf"(?m)^{key} =", (section, key))
        again = self.folder / "shown.conf"
        again.write_text(shown)
        original, reread = schema.load(self.config), schema.load(again)
        original.values["queue"]["smarthost_password"] = "********"
        self.assertEqual(reread.values, original.values)
