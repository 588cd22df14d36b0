"""``cyrusmail-admin queue list|flush|delete`` over a real spool."""

from __future__ import annotations

import io
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from cyrusmail.admin.main import main
from cyrusmail.config import SERVICES
from cyrusmail.delivery.queue import Queue, QueueRunner
from cyrusmail.smtp import wire
from tests.test_smtp_session_support import make_server


class QueueAdminTests(unittest.TestCase):
    def setUp(self) -> None:
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        data = folder / "data"
        self.context, _ = make_server(data)
        self.queue = Queue(self.context, clock=reactor)
        self.config = folder / "cyrusmail.conf"
        sections = "".join(f"[{name}]\nenabled = no\n" for name in SERVICES)
        self.config.write_text(f"[server]\ndata = {data}\nhostname = mail.example.org\n"
                               f"domains = example.org\n{sections}")
        sender = wire.Mail(wire.parse_path("<alice@example.org>"))
        self.entry = self.queue.enqueue(sender, ["carol@remote.example", "dave@remote.example"], b"Subject: x\r\n\r\n")
        self.entry.recipients[0].state = "delivered"
        self.entry.last_error = "mx.remote.example: 451 4.3.0 later"
        self.queue.save(self.entry)

    def admin(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = main(["--config", str(self.config), "queue", *argv], out, err)
        return status, out.getvalue(), err.getvalue()

    def test_list(self) -> None:
        status, out, _ = self.admin("list")
        self.assertEqual(status, 0)
        self.assertIn(self.entry.id, out)
        self.assertIn("<alice@example.org>", out)
        self.assertIn("delivered <carol@remote.example>", out)
        self.assertIn("pending   <dave@remote.example>", out)
        self.assertIn("last error: mx.remote.example: 451 4.3.0 later", out)
        self.assertIn("next attempt", out)
        self.assertIn("1 messages in the queue", out)

    def test_delete(self) -> None:
        self.assertEqual(self.admin("delete", self.entry.id)[0], 0)
        self.assertEqual(list(self.queue.spool.iterdir()), [])
        status, _, err = self.admin("delete", self.entry.id)
        self.assertEqual(status, 1)
        self.assertIn("no queued message", err)
        self.assertEqual(self.admin("delete", "../../users")[0], 1)

    def test_delete_is_noticed_by_the_runner(self) -> None:
        runner = QueueRunner(self.queue)
        self.admin("delete", self.entry.id)
        runner.poll()  # not running: only the spool is read again
        self.assertEqual(self.queue.entries, {})

    def test_flush_leaves_a_file_for_the_runner(self) -> None:
        status, out, _ = self.admin("flush")
        self.assertIn("flush requested", out)
        self.assertEqual(status, 0)
        self.assertTrue((self.queue.spool / "flush").exists())
        self.entry.next_attempt += 10_000
        self.queue.save(self.entry)
        runner = QueueRunner(self.queue)
        runner.poll()
        self.assertFalse((self.queue.spool / "flush").exists())
        self.assertLessEqual(self.entry.next_attempt, reactor.seconds())
