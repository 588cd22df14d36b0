"""The data folder is the server's alone: files 0600, folders 0700, even under a umask of 000.

The server and cyrusmail-admin set the umask to 077 (tests/test_twistd.py and
tests/test_admin.py check that); these check the modes each file is made
with, which hold for any caller.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial import unittest

from cyrusmail.delivery.queue import Queue
from cyrusmail.private_files import make_private_folder
from tests.helpers import add_user, make_context, modes_not_private


class PrivateModeTests(unittest.TestCase):
    def setUp(self):
        previous = os.umask(0)
        self.addCleanup(os.umask, previous)
        self.data = Path(self.mktemp()).resolve()

    def test_store_user_database_certificate_and_queue(self):
        context = make_context(self.data)
        self.addCleanup(context.store.close)
        self.addCleanup(context.users.close)
        add_user(context, "alice")
        context.store.mailboxes("alice").open("INBOX").append(b"Subject: in\r\n\r\nHello.\r\n")
        queue = Queue(context, clock=Clock())
        queue.enqueue(None, ["bob@example.net"], b"Subject: out\r\n\r\nBye.\r\n", sender="alice@example.org")
        self.assertTrue(list(self.data.glob("queue/*.msg")))
        self.assertTrue((self.data / "tls" / "key.pem").exists())
        self.assertEqual(modes_not_private(self.data), {})

    def test_an_open_data_folder_is_closed(self):
        self.data.mkdir(mode=0o755)
        make_private_folder(self.data)
        self.assertEqual(modes_not_private(self.data), {})
