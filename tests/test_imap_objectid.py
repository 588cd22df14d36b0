"""OBJECTID (RFC 8474), SAVEDATE (RFC 8514) and PREVIEW (RFC 8970) on the wire.

Ids are random, so these are Python conversations that compare what one
response says with what another does; the store side is in
``tests/test_store_identities.py``.
"""

from __future__ import annotations

import datetime
import re

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.imap_support import Client, session_context

MAILBOXID = re.compile(r"MAILBOXID \(([A-Za-z0-9_-]{1,255})\)")
EMAILID = re.compile(r"EMAILID \(([A-Za-z0-9_-]{1,255})\)")

PLAIN = b"From: carol@example.org\r\nSubject: plain\r\n\r\nHello   there,\r\n\r\n  this is\ta   preview.\r\n"
HTML = (b"From: carol@example.org\r\nSubject: html\r\nContent-Type: text/html\r\n\r\n"
        b"<html><head><title>T</title><style>p{x}</style></head><body><p>Hi &amp; <b>bold</b></p>"
        b"<br>next&nbsp;line</body></html>\r\n")
UTF8 = (b"From: carol@example.org\r\nSubject: utf8\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 na=C3=AFve\r\n")
IMAGE = b"From: carol@example.org\r\nSubject: image\r\nContent-Type: image/png\r\n\r\nAAAA\r\n"


class _Session(TestCase):
    def setUp(self) -> None:
        self.context = session_context(self)
        self.client = Client(self.context, Clock())
        self.client.login()

    def command(self, line: str) -> list[str]:
        return self.client.command(line)

    def append(self, mailbox: str, data: bytes, date: str = "") -> None:
        self.client.send(f"ap APPEND {mailbox} {date}{{{len(data)}+}}\r\n".encode() + data + b"\r\n")
        answer = self.client.lines()
        self.assertTrue(answer[-1].startswith("ap OK"), answer)

    def mailbox_id(self, lines: list[str]) -> str:
        found = [match[1] for line in lines if (match := MAILBOXID.search(line))]
        self.assertEqual(len(found), 1, lines)
        return found[0]


class CapabilityTests(_Session):
    def test_advertised(self) -> None:
        (line,) = self.command("c CAPABILITY")[:1]
        for name in ("OBJECTID", "SAVEDATE", "PREVIEW"):
            self.assertIn(f" {name}", line)


class MailboxIdTests(_Session):
    def test_create_select_examine_status_rename_agree(self) -> None:
        created = self.mailbox_id(self.command("c CREATE Work"))
        self.assertEqual(self.mailbox_id(self.command("s SELECT Work")), created)
        self.assertEqual(self.mailbox_id(self.command("e EXAMINE Work")), created)
        status = self.command("t STATUS Work (MAILBOXID MESSAGES)")
        self.assertEqual(status[0], f'* STATUS "Work" (MAILBOXID ({created}) MESSAGES 0)')
        self.command("u UNSELECT")
        self.assertEqual(self.command("r RENAME Work Play")[-1], "r OK RENAME completed")
        self.assertEqual(self.mailbox_id(self.command("t STATUS Play (MAILBOXID)")), created)
        self.command("d DELETE Play")
        again = self.mailbox_id(self.command("c CREATE Play"))
        self.assertNotEqual(again, created)
        inbox = self.mailbox_id(self.command("t STATUS INBOX (MAILBOXID)"))
        self.assertNotIn(inbox, (created, again))

    def test_select_says_it_as_an_untagged_ok(self) -> None:
        lines = self.command("s SELECT INBOX")
        self.assertTrue(any(re.fullmatch(r"\* OK \[MAILBOXID \(F[0-9a-f]{24}\)\] Ok", line) for line in lines), lines)


class EmailIdTests(_Session):
    def test_copy_and_move_keep_it_search_finds_every_copy(self) -> None:
        self.append("INBOX", PLAIN)
        self.append("INBOX", PLAIN)
        self.command("s SELECT INBOX")
        first, second = (EMAILID.search(line)[1] for line in self.command("f FETCH 1:2 EMAILID")[:2])
        self.assertNotEqual(first, second)
        self.command("c COPY 1 INBOX")
        self.command("m MOVE 1 Trash")
        (copy,) = self.command("f FETCH 2 (EMAILID THREADID)")[:1]
        self.assertEqual(copy, f"* 2 FETCH (EMAILID ({first}) THREADID NIL)")
        self.assertEqual(self.command(f"s UID SEARCH EMAILID {first}")[0], "* SEARCH 3")
        self.assertEqual(self.command(f"s SEARCH EMAILID {second}")[0], "* SEARCH 1")
        self.assertEqual(self.command("s SEARCH THREADID T1")[0], "* SEARCH")  # no threading: none (RFC 8474 5.2)
        self.command("s SELECT Trash")
        self.assertEqual(self.command("f FETCH 1 EMAILID")[0], f"* 1 FETCH (EMAILID ({first}))")


class SaveDateTests(_Session):
    def test_fetch_and_search_use_the_day_it_was_saved(self) -> None:
        self.append("INBOX", PLAIN, '"01-Jan-2001 10:00:00 +0000" ')
        self.command("s SELECT INBOX")
        (line,) = self.command("f FETCH 1 (INTERNALDATE SAVEDATE)")[:1]
        today = datetime.datetime.now(datetime.UTC)
        self.assertRegex(line, r'^\* 1 FETCH \(INTERNALDATE " 1-Jan-2001 10:00:00 \+0000" SAVEDATE "'
                         + today.strftime("%d-%b-%Y").lstrip("0").rjust(11) + r' \d\d:\d\d:\d\d \+0000"\)$')
        self.assertEqual(self.command("s SEARCH SAVEDBEFORE 1-Jan-2002")[0], "* SEARCH")
        self.assertEqual(self.command("s SEARCH BEFORE 1-Jan-2002")[0], "* SEARCH 1")
        self.assertEqual(self.command("s SEARCH SAVEDSINCE 1-Jan-2002 SAVEDATESUPPORTED")[0], "* SEARCH 1")
        self.assertEqual(self.command("s SEARCH NOT SAVEDSINCE 1-Jan-2002")[0], "* SEARCH")


class PreviewTests(_Session):
    def test_previews_of_plain_html_utf8_and_no_text(self) -> None:
        for data in (PLAIN, HTML, UTF8, IMAGE):
            self.append("INBOX", data)
        self.command("s SELECT INBOX")
        self.client.send("f FETCH 1:4 (PREVIEW)\r\n")
        answer = self.client.take()
        self.assertEqual(answer, (
            b'* 1 FETCH (PREVIEW "Hello there, this is a preview.")\r\n'
            b'* 2 FETCH (PREVIEW "Hi & bold next line")\r\n'
            b"* 3 FETCH (PREVIEW {12}\r\ncaf\xc3\xa9 na\xc3\xafve)\r\n"
            b'* 4 FETCH (PREVIEW "")\r\n'
            b"f OK FETCH completed\r\n"
        ))
        lazy = self.command("f UID FETCH 1 (PREVIEW (LAZY) FLAGS)")
        self.assertEqual(lazy[0], '* 1 FETCH (UID 1 PREVIEW "Hello there, this is a preview." FLAGS (\\Recent))')
        self.assertEqual(self.command("f FETCH 1 FLAGS")[0], "* 1 FETCH (FLAGS (\\Recent))")  # PREVIEW sets no \\Seen
