"""The SORT and THREAD keys made from a header (RFC 5256 2.1, 2.2 and 3; RFC 5957):
base subjects, sent dates, address keys, display names and message ids."""

from __future__ import annotations

import datetime

from twisted.trial.unittest import TestCase

from cyrusmail.mime.sortkeys import (
    MAX_REFERENCES,
    base_subject,
    collation_key,
    message_ids,
    sent_time,
    sort_data,
)
from cyrusmail.store.records import SortData

# (Subject value as sent, base subject, marks a reply or forward)
BASE_SUBJECTS = [
    (b"", "", False),
    (b"a", "a", False),
    (b"Re: hello", "hello", True),
    (b"RE:hello", "hello", True),
    (b"re: Re: RE: rE:  x  ", "x", True),
    (b"Fwd: x", "x", True),
    (b"FW: x", "x", True),
    (b"fw:x", "x", True),
    (b"Re [2]: x", "x", True),
    (b"Re[2]: x", "x", True),
    (b"Fwd[3]:x", "x", True),
    (b"Re:", "", True),
    (b"Re x", "Re x", False),
    (b"Fwdx: y", "Fwdx: y", False),
    (b"Ad: Re: Ad: Re: Ad: x", "Ad: Re: Ad: Re: Ad: x", False),
    # subj-blob: removed only when a subj-base follows it
    (b"[PATCH] x", "x", False),
    (b"[PATCH]", "[PATCH]", False),
    (b"[a][b] c", "c", False),
    (b"[a] [b]", "[b]", False),
    (b"[xyz]", "[xyz]", False),
    (b"[list] Re: [list] Re: topic", "topic", True),
    # "(fwd)" trailers and the [fwd: ...] wrapper
    (b"x (fwd)", "x", True),
    (b"x(fwd)", "x", True),
    (b"x (FWD) (fwd)  ", "x", True),
    (b"Re: (fwd)", "", True),
    (b"[fwd: x]", "x", True),
    (b"[Fwd: Re: x] (fwd)", "x", True),
    (b"Re: [FWD: c]", "c", True),
    (b"Re: [fwd: x] yo", "yo", True),
    (b"re: [fwd: [fwd: re: [fwd: babylon]]]", "babylon", True),
    (b"[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b", True),
    (b"b (a)", "b (a)", False),
    # white space: tabs and folds are spaces, runs are one space
    (b"Re:\tfoo\t \tbar", "foo bar", True),
    (b"  spaced   out  ", "spaced out", False),
    # RFC 2047: decoded before anything else
    (b"=?iso-8859-1?q?_?=", "", False),
    (b"Re: =?utf-8?q?b?=", "b", True),
    (b"=?iso-8859-1?q?RE:_C?=", "C", True),
    (b"=?us-ascii?b?UmU6IGM=?=", "c", True),
    (b"=?utf-8?q?Re=3A_caf=C3=A9?=", "caf\u00e9", True),
    (b"=?utf-8?q?R=C3=A9=3A?= x", "R\u00e9: x", False),
]


class BaseSubjectTests(TestCase):
    def test_table(self) -> None:
        for raw, base, reply in BASE_SUBJECTS:
            self.assertEqual(base_subject(raw), (base, reply), raw)

    def test_collation_is_titlecase(self) -> None:
        """i;unicode-casemap: upper-case letters sort before "[" and "_" (imaptest's sort-subject)."""
        keys = sorted(collation_key(text) for text in ["_", "b", "[x]", "a", "C", ""])
        self.assertEqual(keys, ["", "A", "B", "C", "[X]", "_"])

    def test_collation_decomposes(self) -> None:
        self.assertEqual(collation_key("caf\u00e9"), collation_key("CAFE\u0301"))
        self.assertEqual(collation_key("\u01c6"), "Dz\u030c")  # dz digraph: titlecase (not DZ), decomposed
        self.assertEqual(collation_key("\u00df"), "Ss")


def utc(*args: int, offset: int = 0) -> float:
    zone = datetime.timezone(datetime.timedelta(hours=offset))
    return datetime.datetime(*args, tzinfo=zone).timestamp()


class SentTimeTests(TestCase):
    def test_zone_taken_into_account(self) -> None:
        self.assertEqual(sent_time(b"Fri, 22 Feb 2008 00:00:00 +0200"), utc(2008, 2, 22, offset=2))
        self.assertEqual(sent_time(b"Thu, 21 Feb 2008 16:00:00 -0600"), utc(2008, 2, 21, 22))
        self.assertEqual(sent_time(b"Fri, 22 Feb 2008 00:00:00 +0200"),
                         sent_time(b"Thu, 21 Feb 2008 22:00:00 GMT"))

    def test_no_zone_is_utc(self) -> None:
        self.assertEqual(sent_time(b"22 Feb 2008 10:00:00"), utc(2008, 2, 22, 10))

    def test_unusable(self) -> None:
        for raw in (b"", b"yesterday", b"Fri, 32 Feb 2008 00:00:00 +0000",
                    b"Fri, 22 Foo 2008 00:00:00 +0000", b"Fri, 22 Feb 2008 25:00:00 +0000", b"\xff\xfe"):
            self.assertIsNone(sent_time(raw), raw)


class MessageIdTests(TestCase):
    def test_valid_ids(self) -> None:
        self.assertEqual(message_ids(b"<a@b>"), ["a@b"])
        self.assertEqual(message_ids(b"< a@b >"), ["a@b"])
        self.assertEqual(message_ids(b'<"x y"@b>'), ["xy@b"])
        self.assertEqual(message_ids(b"<a@b> (comment) <c@d>"), ["a@b", "c@d"])
        self.assertEqual(message_ids(b"<a@b>\r\n <c@d>"), ["a@b", "c@d"])

    def test_invalid_ids_are_skipped(self) -> None:
        self.assertEqual(message_ids(b"a@b"), [])
        self.assertEqual(message_ids(b"<no-at>"), [])
        self.assertEqual(message_ids(b"<@b> <a@> <a@b@c> <ok@x>"), ["ok@x"])
        self.assertEqual(message_ids(None), [])

    def test_ids_are_case_sensitive(self) -> None:
        self.assertEqual(message_ids(b"<A@B>"), ["A@B"])


def keys(header: str) -> SortData:
    return sort_data(header.replace("\n", "\r\n").encode() + b"\r\n")


class SortDataTests(TestCase):
    def test_empty_header(self) -> None:
        self.assertEqual(keys(""), SortData(None, "", False, "", "", "", "", "", None, ()))

    def test_everything(self) -> None:
        data = keys(
            "From: =?iso-8859-1?q?foo_aar?= <e@f.g>\n"
            "To: a: xx@xx.org, yy@yy.org;\n"
            "Cc: user2@domain2.org (foo bar)\n"
            "Date: Fri, 22 Feb 2008 00:00:00 +0200\n"
            "Message-ID: <a@b>\n"
            "References: <x@y>\n <z@w>\n"
            "In-Reply-To: <ignored@when-references>\n"
            "Subject: Re: hello\n"
        )
        self.assertEqual(data, SortData(utc(2008, 2, 22, offset=2), "HELLO", True, "E", "A", "USER2",
                                        "FOO AAR", "A", "a@b", ("x@y", "z@w")))

    def test_address_keys_are_the_local_part(self) -> None:
        """RFC 5256: the addr-mailbox of the first address; the domain does not count."""
        self.assertEqual(keys("From: user2@domain2.org, a@b").from_, "USER2")
        self.assertEqual(keys("From: Foo Bar <user1@domain1.org>").from_, "USER1")
        self.assertEqual(keys("Cc: user2: blah@domain1.org;").cc, "USER2")  # a group: its name
        self.assertEqual(keys("To: ").to, "")

    def test_display_keys(self) -> None:
        """RFC 5957: the display name, else the addr-spec; a group's name."""
        cases = [
            ("foo bar <a@b.c>", "FOO BAR"),
            ("b@c.d", "B@C.D"),
            ("d", "D"),
            ("=?iso-8859-1?q?foo_car?= <f@g.h>", "FOO CAR"),
            ("a: xx@xx.org, yy@yy.org;", "A"),
            ("empty:;", "EMPTY"),
            ('"" <x@y.z>', "X@Y.Z"),
            ("", ""),
        ]
        for value, display in cases:
            self.assertEqual(keys(f"From: {value}").display_from, display, value)
            self.assertEqual(keys(f"To: {value}").display_to, display, value)

    def test_first_field_counts(self) -> None:
        data = keys("Subject: one\nSubject: two\nDate: bad\nDate: Fri, 22 Feb 2008 00:00:00 +0000")
        self.assertEqual((data.subject, data.sent), ("ONE", None))

    def test_in_reply_to_when_no_references(self) -> None:
        self.assertEqual(keys("In-Reply-To: junk <p@q> <r@s>").references, ("p@q",))
        self.assertEqual(keys("References: no ids\nIn-Reply-To: <p@q>").references, ("p@q",))
        self.assertEqual(keys("In-Reply-To: junk").references, ())

    def test_references_bounded(self) -> None:
        chain = " ".join(f"<{n}@x>" for n in range(MAX_REFERENCES + 5))
        refs = keys(f"References: {chain}").references
        self.assertEqual(len(refs), MAX_REFERENCES)
        self.assertEqual(refs[-1], f"{MAX_REFERENCES + 4}@x")  # the parent is kept
