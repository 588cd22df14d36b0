"""SEARCH over a real MaildirStore: a table of criteria (as a client writes
them, parsed by the wire layer) and the UIDs they find, then what each
search reads."""

from __future__ import annotations

import datetime
import sys
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from cyrusmail.imap import commands as c
from cyrusmail.imap.search import BadCharset, check_charset, header_candidates, search
from cyrusmail.imap.sequence import SequenceSet
from cyrusmail.imap.wire import CommandParser
from cyrusmail.slices import run_all
from cyrusmail.store.maildir import MaildirStore
from cyrusmail.store.records import Flag, FlagChange, MessageRecord

try:
    import cyrusmail.mime  # noqa: F401
except ImportError:
    HAVE_MIME = False
else:
    HAVE_MIME = True

needs_mime = unittest.skipUnless(
    HAVE_MIME,
    "cyrusmail.mime (branch mime) is not merged here: header, SENT* and body keys need it",
)


def day(year: int, month: int, date: int, hour: int = 12) -> float:
    return datetime.datetime(year, month, date, hour, tzinfo=datetime.UTC).timestamp()


# (message, system flags, keywords, internal date).  UIDs 2..6 once UID 1,
# a placeholder, is expunged: so sequence numbers are UID - 1.
MESSAGES = [
    (
        (
            b"From: Alice Example <alice@example.org>\r\n"
            b"To: bob@example.org\r\n"
            b"Subject: Hello world\r\n"
            b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
            b"Message-ID: <one@example.org>\r\n"
            b"\r\n"
            b"The quick brown fox\r\njumps over the lazy dog.\r\n"
        ),
        Flag.SEEN,
        (),
        day(2024, 1, 1),
    ),
    (
        (
            b"From: =?UTF-8?Q?Ren=C3=A9e?= <renee@example.net>\r\n"
            b"To: Bob <bob@example.org>\r\n"
            b"Subject: =?UTF-8?B?w6l0w6k=?= plans\r\n"
            b"Date: Mon, 15 Jan 2024 23:30:00 -0800\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n"
            b"\r\n"
            b"Un caf=C3=A9 cr=C3=A8me, s'il vous pla=C3=AEt. A soft=\r\nbreak.\r\n"
        ),
        Flag.FLAGGED,
        ("$Work",),
        day(2024, 1, 16, 7),
    ),
    (
        b"From: carol@example.com\r\n"
        b"To: bob@example.org\r\n"
        b"Cc: Carol Two <carol2@example.com>\r\n"
        b"Subject: =?ISO-8859-1?Q?caf=E9?= report\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n'
        b"\r\n"
        b"preamble\r\n"
        b"--XX\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"U2VjcmV0IGF0dGFjaG1lbnQgdGV4dCwgdHLDqHMgc2VjcmV0\r\n"
        b"--XX\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        + b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n" * 40
        + b"--XX--\r\n",
        Flag(0),
        (),
        day(2024, 2, 1),
    ),
    (
        (
            b"From: dave@example.org\r\n"
            b"Bcc: dave-archive@example.org\r\n"
            b"Subject: Gruss\r\n"
            b"Date: not a date at all\r\n"
            b"X-Custom: Foo Bar\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n"
            b"\r\n"
            b"<p>Gr\xfc\xdfe aus K\xf6ln</p>\r\n"
        ),
        Flag.DELETED | Flag.ANSWERED,
        ("Junk",),
        day(2024, 2, 15),
    ),
    (
        (
            b"From: Alice Example <alice@example.org>\r\n"
            b"Subject: Re: Hello\r\n"
            b"Date: Thu, 29 Feb 2024 08:00:00 +0100\r\n"
            b"\r\n"
            b"nothing to see\r\n"
        ),
        Flag.DRAFT,
        (),
        day(2024, 2, 29),
    ),
]

RECENT = {5, 6}


def criteria(text: bytes) -> c.SearchKey:
    """The criteria of ``a SEARCH <text>`` as the wire layer parses them."""
    events = CommandParser().feed(b"a SEARCH " + text + b"\r\n")
    (command,) = events
    assert isinstance(command, c.Search), command
    return command.criteria


# (criteria as sent, UIDs found)
INDEX_TABLE: list[tuple[bytes, list[int]]] = [
    (b"ALL", [2, 3, 4, 5, 6]),
    (b"SEEN", [2]),
    (b"UNSEEN", [3, 4, 5, 6]),
    (b"FLAGGED", [3]),
    (b"UNFLAGGED", [2, 4, 5, 6]),
    (b"DELETED", [5]),
    (b"UNDELETED", [2, 3, 4, 6]),
    (b"ANSWERED", [5]),
    (b"UNANSWERED", [2, 3, 4, 6]),
    (b"DRAFT", [6]),
    (b"UNDRAFT", [2, 3, 4, 5]),
    (b"RECENT", [5, 6]),
    (b"NEW", [5, 6]),
    (b"OLD", [2, 3, 4]),
    (b"NEW UNDELETED", [6]),
    (b"KEYWORD $Work", [3]),
    (b"KEYWORD $WORK", [3]),
    (b"keyword junk", [5]),
    (b"UNKEYWORD $work", [2, 4, 5, 6]),
    (b"KEYWORD $Nothing", []),
    (b"1", [2]),
    (b"2:3", [3, 4]),
    (b"*", [6]),
    (b"4:*", [5, 6]),
    (b"9:*", [6]),
    (b"1,5", [2, 6]),
    (b"9", []),
    (b"UID 2", [2]),
    (b"UID 1:3", [2, 3]),
    (b"UID *", [6]),
    (b"UID 5:*", [5, 6]),
    (b"UID 100:*", [6]),
    (b"UID 1", []),
    (b"UID 7:10", []),
    (b"LARGER 1000", [4]),
    (b"SMALLER 200", [6]),
    (b"NOT LARGER 1000", [2, 3, 5, 6]),
    (b"BEFORE 16-Jan-2024", [2]),
    (b"ON 16-Jan-2024", [3]),
    (b"SINCE 16-Jan-2024", [3, 4, 5, 6]),
    (b'SINCE "1-Feb-2024" BEFORE 29-Feb-2024', [4, 5]),
    (b"ON 29-Feb-2024", [6]),
    (b"OR SEEN FLAGGED", [2, 3]),
    (b"OR SEEN OR FLAGGED DRAFT", [2, 3, 6]),
    (b"NOT (SEEN FLAGGED)", [2, 3, 4, 5, 6]),
    (b"NOT (OR SEEN FLAGGED)", [4, 5, 6]),
    (b"(UNSEEN) (RECENT)", [5, 6]),
    (b"NOT NOT SEEN", [2]),
    (b"MODSEQ 1", [2, 3, 4, 5, 6]),
    (b"UID 2:4 NOT 2", [2, 4]),
]

MIME_TABLE: list[tuple[bytes, list[int]]] = [
    (b"SUBJECT hello", [2, 6]),
    (b'SUBJECT "HELLO WORLD"', [2]),
    (b"SUBJECT plans", [3]),
    (b"SUBJECT =?UTF-8?B?w6l0w6k=?=", [3]),  # the raw text matches too
    (b"SUBJECT caf", [4]),
    (b"FROM alice", [2, 6]),
    (b"FROM Ren", [3]),
    (b"FROM example.org", [2, 5, 6]),
    (b"TO bob", [2, 3, 4]),
    (b'TO "Bob <"', [3]),
    (b"CC carol2", [4]),
    (b"CC carol", [4]),
    (b"BCC archive", [5]),
    (b'HEADER X-Custom "foo b"', [5]),
    (b'HEADER x-custom ""', [5]),
    (b'HEADER Message-ID ""', [2]),
    (b'HEADER Cc ""', [4]),
    (b'HEADER X-Missing ""', []),
    (b"HEADER MIME-Version 1.0", [3, 4, 5]),
    (b'FROM ""', [2, 3, 4, 5, 6]),
    (b"SENTON 15-Jan-2024", [3]),
    (b"SENTON 16-Jan-2024", []),
    (b"SENTBEFORE 2-Jan-2024", [2]),
    (b"SENTSINCE 1-Feb-2024", [6]),
    (b"NOT SENTSINCE 1-Jan-1970", [4, 5]),
    (b"BODY fox", [2]),
    (b"BODY FOX", [2]),
    (b'BODY "lazy dog"', [2]),
    (b'BODY "soft"', [3]),
    (b'BODY "softbreak"', [3]),
    (b"BODY Secret", [4]),
    (b"BODY QUFBQUFB", []),  # an attachment that is not text/* is not searched
    (b"BODY preamble", []),
    (b"BODY hello", []),
    (b"TEXT hello", [2, 6]),
    (b"TEXT fox", [2]),
    (b"TEXT example.net", [3]),
    (b"TEXT secret", [4]),
    (b"TEXT nothing", [6]),
    (b"UNSEEN BODY secret", [4]),
    (b"OR BODY fox SUBJECT gruss", [2, 5]),
    (b"DELETED TEXT gruss", [5]),
]


class SearchTests(TestCase):
    """Criteria tables over five varied messages in a real store."""

    def setUp(self) -> None:
        self.store = MaildirStore(self.mktemp())
        self.addCleanup(self.store.close)
        self.store.provision("alice", {})
        self.mailbox = self.store.mailboxes("alice").open("INBOX")
        placeholder = self.mailbox.append(b"Subject: placeholder\r\n\r\n", Flag.DELETED)
        for message, flags, keywords, internal_date in MESSAGES:
            self.mailbox.append(message, flags, keywords, internal_date)
        self.mailbox.expunge([placeholder])
        self.records = self.mailbox.messages()
        self.seqs = {record.uid: seq for seq, record in enumerate(self.records, 1)}

    def found(self, key: c.SearchKey, mailbox=None) -> list[int]:
        result = run_all(search(key, mailbox or self.mailbox, self.records, self.seqs, RECENT))
        return [record.uid for record in result]

    def check_table(self, table: list[tuple[bytes, list[int]]]) -> None:
        for text, expected in table:
            with self.subTest(criteria=text):
                self.assertEqual(self.found(criteria(text)), expected)

    def test_index_keys(self) -> None:
        self.check_table(INDEX_TABLE)

    def test_layout(self) -> None:
        self.assertEqual([record.uid for record in self.records], [2, 3, 4, 5, 6])
        self.assertEqual(self.seqs[2], 1)

    @needs_mime
    def test_mime_keys(self) -> None:
        self.check_table(MIME_TABLE)

    @needs_mime
    def test_decoded_strings(self) -> None:
        """Non-ASCII needles (sent as UTF-8 literals) match decoded text."""
        cases = [
            (c.SearchHeader("SUBJECT", "été".encode()), [3]),
            (c.SearchHeader("SUBJECT", "ÉTÉ PLANS".encode()), [3]),
            (c.SearchHeader("SUBJECT", "café".encode()), [4]),
            (c.SearchAddress("FROM", "renée".encode()), [3]),
            (c.SearchBody("café crème".encode()), [3]),
            (c.SearchBody("très secret".encode()), [4]),
            (c.SearchBody("grüße aus köln".encode()), [5]),
            (c.SearchText("ÉTÉ".encode()), [3]),
        ]
        for key, expected in cases:
            with self.subTest(key=key):
                self.assertEqual(self.found(key), expected)

    def test_modseq(self) -> None:
        self.mailbox.set_flags([4], FlagChange.ADD, Flag.SEEN)
        self.records = self.mailbox.messages()
        highest = max(record.modseq for record in self.records)
        self.assertEqual(self.found(c.SearchModSeq(highest)), [4])
        self.assertEqual(
            self.found(c.SearchModSeq(highest, ("/flags/\\seen", "all"))), [4]
        )
        self.assertEqual(self.found(c.SearchModSeq(highest + 1)), [])

    def test_within(self) -> None:
        """RFC 5032 OLDER/YOUNGER: seconds back from the time of the search."""
        now = day(2024, 2, 15, 12)
        for text, expected in (
            (b"OLDER 1", [2, 3, 4]),  # 5 was delivered just now, 6 is dated later
            (b"OLDER 86400", [2, 3, 4]),
            (b"YOUNGER 86400", [5, 6]),
            (b"YOUNGER 2592000", [4, 5, 6]),  # thirty days: 3 is five hours older
            (b"OLDER 86400 YOUNGER 2592000", [4]),
            (b"OLDER 1209600", [2, 3, 4]),  # exactly fourteen days old: both OLDER and YOUNGER
            (b"YOUNGER 1209600", [4, 5, 6]),
        ):
            with self.subTest(criteria=text):
                found = run_all(search(criteria(text), self.mailbox, self.records, self.seqs, RECENT, now=now))
                self.assertEqual([record.uid for record in found], expected)

    def test_saved_result(self) -> None:
        """``$`` (RFC 5182) matches the saved UIDs, as a plain or a UID key."""
        for text in (b"$", b"UID $", b"NOT NOT $"):
            with self.subTest(criteria=text):
                found = run_all(search(criteria(text), self.mailbox, self.records, self.seqs, RECENT,
                                       saved={3, 5, 99}))
                self.assertEqual([record.uid for record in found], [3, 5])
        self.assertEqual(self.found(criteria(b"$")), [])

    def test_empty_view(self) -> None:
        self.records, self.seqs = [], {}
        self.assertEqual(self.found(criteria(b"ALL")), [])
        self.assertEqual(self.found(criteria(b"UID *")), [])
        self.assertEqual(self.found(criteria(b"*")), [])

    def test_deep_tree(self) -> None:
        """Nesting far beyond the parser's cap is walked without recursion."""
        key: c.SearchKey = c.SearchFlag("\\Seen")
        for _ in range(sys.getrecursionlimit() + 500):
            key = c.SearchNot(c.SearchNot(key))
        self.assertEqual(self.found(key), [2])
        wide = c.SearchOr(c.SearchFlag("\\Draft"), c.SearchAll())
        for _ in range(sys.getrecursionlimit() + 500):
            wide = c.SearchAnd((c.SearchAll(), wide))
        self.assertEqual(self.found(wide), [2, 3, 4, 5, 6])

    def test_parser_depth(self) -> None:
        self.assertEqual(self.found(criteria(b"(" * 99 + b"SEEN" + b")" * 99)), [2])
        self.assertEqual(self.found(criteria(b"NOT " * 99 + b"SEEN")), [3, 4, 5, 6])

    def test_sequence_sets_built_directly(self) -> None:
        self.assertEqual(
            self.found(c.SearchSequence(SequenceSet.parse("2,4:5"))), [3, 5, 6]
        )
        self.assertEqual(
            self.found(c.SearchSequence(SequenceSet.parse("3:2"), uid=True)), [2, 3]
        )


class ReadingTests(TestCase):
    """What a search reads: cheap keys first, each file at most once."""

    def setUp(self) -> None:
        self.store = MaildirStore(self.mktemp())
        self.addCleanup(self.store.close)
        self.store.provision("alice", {})
        self.mailbox = self.store.mailboxes("alice").open("INBOX")
        for message, flags, keywords, internal_date in MESSAGES:
            self.mailbox.append(message, flags, keywords, internal_date)
        self.records = self.mailbox.messages()
        self.seqs = {record.uid: seq for seq, record in enumerate(self.records, 1)}
        self.counting = CountingMailbox(self.mailbox)

    def found(self, text: bytes) -> list[int]:
        result = run_all(search(criteria(text), self.counting, self.records, self.seqs, set()))
        return [record.uid for record in result]

    def test_index_keys_read_nothing(self) -> None:
        self.assertEqual(
            self.found(b"OR SEEN (LARGER 1000 SINCE 1-Feb-2024) UID 1:* NOT DRAFT"),
            [1, 3],
        )
        self.assertEqual(self.counting.calls, [])

    @needs_mime
    def test_unseen_body_reads_only_unseen_files(self) -> None:
        self.assertEqual(self.found(b"BODY secret UNSEEN"), [3])
        unseen = [record.uid for record in self.records if not record.flags & Flag.SEEN]
        self.assertEqual(
            sorted({uid for name, uid in self.counting.calls if name == "read"}), unseen
        )

    @needs_mime
    def test_header_keys_read_no_file(self) -> None:
        self.assertEqual(self.found(b"SUBJECT hello SENTSINCE 1-Jan-2024"), [1, 5])
        self.assertEqual({name for name, _ in self.counting.calls}, {"mime_cache"})

    @needs_mime
    def test_header_prefilter_never_drops_a_match(self) -> None:
        """Encoded words and folds cannot hide a match from the index prefilter."""
        for criteria, expected in ((b"SUBJECT hello", [1, 5]), (b"HEADER Subject hello", [1, 5])):
            with self.subTest(criteria=criteria):
                self.assertEqual(self.found(criteria), expected)
                self.assertEqual(self.found(b"ALL " + criteria), expected)

    def test_each_file_read_once(self) -> None:
        self.assertEqual(
            self.found(b"OR BODY zzz OR TEXT yyy OR BODY fox TEXT secret"), [1, 3]
        )
        reads = [uid for name, uid in self.counting.calls if name == "read"]
        self.assertEqual(sorted(reads), [1, 2, 3, 4, 5])

    @needs_mime
    def test_each_source_decoded_once_for_many_keys(self) -> None:
        """Sixty keys on the same header or body decode it once per message, not once per key."""
        from cyrusmail.imap import search as matching

        calls: list[str] = []
        decode_header_value, body_text = matching.mime.text.decode_header_value, matching.mime.body_text

        def counted(name, function):
            def call(*args, **kwargs):
                calls.append(name)
                return function(*args, **kwargs)
            return call

        self.patch(matching.mime.text, "decode_header_value", counted("header", decode_header_value))
        self.patch(matching.mime, "body_text", counted("body", body_text))
        # "example" is in every header, so each key goes on to the Subject's values.
        self.assertEqual(self.found(b"NOT SUBJECT example " * 60 + b"NOT BODY nowhere " * 60 + b"ALL"),
                         [1, 2, 3, 4, 5])
        subjects = len(self.records)  # one Subject field each
        self.assertEqual(calls.count("header"), subjects)
        self.assertEqual(calls.count("body"), len(self.records))

    @needs_mime
    def test_without_mime_cache(self) -> None:
        """An old index with no cache: the file is read once and parsed."""
        self.counting.no_cache = True
        self.assertEqual(self.found(b"OR SUBJECT plans BODY fox"), [1, 2])
        reads = [
            uid for name, uid in self.counting.calls if name in ("read", "open_file")
        ]
        self.assertEqual(sorted(reads), [1, 2, 3, 4, 5])


# Address fields written every way RFC 5322 allows (comments inside an
# address, a comment standing for the name, groups, encoded and quoted names).
ADDRESS_MESSAGES = [
    (b"From: jo-from@example.org\r\nTo: jo-to@example.org\r\nCc: jo-cc@example.org\r\n"
     b"Bcc: jo-bcc@example.org\r\n\r\none\r\n"),
    b"From: Jo Name <jo-from@example.org>\r\nTo: Jo Toname <jo-to@example.org>\r\n\r\ntwo\r\n",
    b"From: <jo-from (a note)@ (another) example.org>\r\nCc: <jo-cc@example.org>\r\n\r\nthree\r\n",
    b"From: jo-from@example.org (Jo Name)\r\nBcc: jo-bcc@example.org (Jo Hidden)\r\n\r\nfour\r\n",
    b"From: jo-from1@example.org, jo-from2@example.org\r\n\r\nfive\r\n",
    (b"From: Jo Name <jo-from@example.org>\r\nTo: team: m1@example.org, m2@example.org;,\r\n"
     b" team2: m3@example.org;\r\n\r\nsix\r\n"),
    (b"From: =?UTF-8?Q?J=C3=B6rg?= <joerg@example.net>\r\nTo: \"Doe, Jane\" <jane@example.net>,\r\n"
     b" \"Ja\\\"ck\" <jack@example.net>\r\n\r\nseven\r\n"),
]

# (criteria, UIDs found): what Dovecot 2.3 answers for the same messages.
ADDRESS_TABLE: list[tuple[bytes, list[int]]] = [
    (b"FROM jo-from@example.org", [1, 2, 3, 4, 6]),
    (b"FROM <jo-from@example.org>", [1, 2, 3, 4, 6]),
    (b"TO jo-to@example.org", [1, 2]),
    (b"CC jo-cc@example.org", [1, 3]),
    (b"BCC jo-bcc@example.org", [1, 4]),
    (b'FROM "jo name"', [2, 4, 6]),
    (b'FROM "\\"jo name\\" <jo-from@"', [2, 4, 6]),  # a name that is not one atom is written quoted
    (b'FROM "jo name <jo-from@"', []),
    (b"FROM o-fro", [1, 2, 3, 4, 5, 6]),
    (b"FROM note", []),  # a comment inside the address is not in the envelope
    (b"FROM another", []),  # nor one around an angle address (the ENVELOPE's name is NIL)
    (b"BCC hidden", [4]),
    (b"FROM jo-from1", [5]),
    (b"FROM jo-from2@example.org", [5]),
    (b"TO team", [6]),
    (b"TO team2", [6]),
    (b"TO m3@example", [6]),
    (b"TO m4", []),
    (b'FROM "j\xc3\xb6rg"', [7]),
    (b"FROM =?UTF-8?Q", []),  # names are matched decoded
    (b'TO "\\"doe, jane\\" <jane@"', [7]),
    (b'TO "doe, jane <jane@"', []),
    (b'TO "\\"ja\\\\\\"ck\\""', [7]),
    (b'TO "ja\\"ck"', []),
    (b'TO ""', [1, 2, 6, 7]),
    (b'HEADER From "jo-from (a note)@"', [3]),  # HEADER matches the field as written
    (b"HEADER From jo-from@example.org", [1, 2, 4, 6]),
]


@needs_mime
class AddressTests(TestCase):
    """FROM/TO/CC/BCC match the ENVELOPE's addresses, not the header as written
    (imaptest's search-addresses: a From with comments inside the address)."""

    def setUp(self) -> None:
        self.store = MaildirStore(self.mktemp())
        self.addCleanup(self.store.close)
        self.store.provision("alice", {})
        self.mailbox = self.store.mailboxes("alice").open("INBOX")
        for message in ADDRESS_MESSAGES:
            self.mailbox.append(message)
        self.records = self.mailbox.messages()
        self.seqs = {record.uid: seq for seq, record in enumerate(self.records, 1)}

    def test_table(self) -> None:
        for text, expected in ADDRESS_TABLE:
            with self.subTest(criteria=text):
                found = run_all(search(criteria(text), self.mailbox, self.records, self.seqs, set()))
                self.assertEqual([record.uid for record in found], expected)

    def test_index_prefilter_keeps_every_match(self) -> None:
        """The SQLite prefilter the session runs first drops no message the table finds."""
        for text, expected in ADDRESS_TABLE:
            with self.subTest(criteria=text):
                candidates = header_candidates(criteria(text), self.mailbox)
                if candidates is not None:
                    self.assertLessEqual(set(expected), candidates)

    def test_prefilter_still_narrows(self) -> None:
        # 7 stays: its encoded word and quoted-pair could hide any text.
        self.assertEqual(header_candidates(criteria(b"FROM jo-from2@example.org"), self.mailbox), {5, 7})


class CountingMailbox:
    """An IMailbox that records the reads the search makes."""

    def __init__(self, mailbox) -> None:
        self.mailbox = mailbox
        self.calls: list[tuple[str, int]] = []
        self.no_cache = False

    def read(self, uid: int, start: int = 0, end: int | None = None) -> bytes:
        self.calls.append(("read", uid))
        return self.mailbox.read(uid, start, end)

    def open_file(self, uid: int):
        self.calls.append(("open_file", uid))
        return self.mailbox.open_file(uid)

    def mime_cache(self, uid: int) -> bytes | None:
        self.calls.append(("mime_cache", uid))
        return None if self.no_cache else self.mailbox.mime_cache(uid)

    def cache_may_contain(self, all_of, any_of=()) -> set[int]:
        self.calls.append(("cache_may_contain", 0))
        return self.mailbox.cache_may_contain(all_of, any_of)

    def mime_caches(self, uids) -> dict[int, bytes]:
        uids = list(uids)
        self.calls.extend(("mime_cache", uid) for uid in uids)
        return {} if self.no_cache else self.mailbox.mime_caches(uids)


class CharsetTests(TestCase):
    def test_accepted(self) -> None:
        for charset in (None, "UTF-8", "utf-8", "US-ASCII", "us-ascii"):
            check_charset(charset)

    def test_refused(self) -> None:
        for charset in ("ISO-8859-1", "UTF8", "KOI8-R", ""):
            with self.subTest(charset=charset), self.assertRaises(BadCharset) as caught:
                check_charset(charset)
            self.assertEqual(caught.exception.code, "BADCHARSET (UTF-8 US-ASCII)")


# -- the evaluator against a plain recursive reading of RFC 3501 ---------------------

RECORDS = [
    MessageRecord(
        uid,
        100 * uid,
        day(2024, 1, uid),
        Flag(uid % 32),
        frozenset({f"$K{uid % 3}"}),
        uid,
        "g",
    )
    for uid in (3, 5, 6, 9, 12, 13, 20)
]
SEQS = {record.uid: seq for seq, record in enumerate(RECORDS, 1)}
FEW_RECENT = {5, 13}

leaves = st.one_of(
    st.just(c.SearchAll()),
    st.sampled_from(
        [
            "\\Seen",
            "\\Answered",
            "\\Flagged",
            "\\Deleted",
            "\\Draft",
            "\\Recent",
            "$K0",
            "$k1",
            "$K2",
            "\\Other",
        ]
    ).map(c.SearchFlag),
    st.builds(
        lambda low, high, uid: c.SearchSequence(
            SequenceSet.parse(f"{low}:{high}"), uid
        ),
        st.integers(1, 25),
        st.one_of(st.integers(1, 25), st.just("*")),
        st.booleans(),
    ),
    st.builds(
        c.SearchSize, st.sampled_from(["larger", "smaller"]), st.integers(0, 2100)
    ),
    st.builds(
        c.SearchDate,
        st.sampled_from(["before", "on", "since"]),
        st.dates(datetime.date(2023, 12, 30), datetime.date(2024, 1, 22)),
    ),
    st.builds(c.SearchModSeq, st.integers(0, 21)),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(c.SearchNot, children),
        st.builds(c.SearchOr, children, children),
        st.lists(children, min_size=1, max_size=4).map(
            lambda keys: c.SearchAnd(tuple(keys))
        ),
    ),
    max_leaves=20,
)


def naive(key: c.SearchKey, record: MessageRecord) -> bool:
    """RFC 3501 6.4.4, read literally, for the index keys."""
    if isinstance(key, c.SearchAll):
        return True
    if isinstance(key, c.SearchAnd):
        return all(naive(operand, record) for operand in key.keys)
    if isinstance(key, c.SearchOr):
        return naive(key.left, record) or naive(key.right, record)
    if isinstance(key, c.SearchNot):
        return not naive(key.key, record)
    if isinstance(key, c.SearchFlag):
        names = {
            "\\Seen": Flag.SEEN,
            "\\Answered": Flag.ANSWERED,
            "\\Flagged": Flag.FLAGGED,
            "\\Deleted": Flag.DELETED,
            "\\Draft": Flag.DRAFT,
        }
        if key.flag in names:
            return bool(record.flags & names[key.flag])
        if key.flag == "\\Recent":
            return record.uid in FEW_RECENT
        return key.flag.lower() in {keyword.lower() for keyword in record.keywords}
    if isinstance(key, c.SearchSequence):
        if key.uid:
            return record.uid in set(key.sequence_set.members(RECORDS[-1].uid))
        return SEQS[record.uid] in set(key.sequence_set.members(len(RECORDS)))
    if isinstance(key, c.SearchSize):
        return (
            record.size > key.size
            if key.relation == "larger"
            else record.size < key.size
        )
    if isinstance(key, c.SearchDate):
        internal = datetime.datetime.fromtimestamp(
            record.internal_date, datetime.UTC
        ).date()
        return {
            "before": internal < key.date,
            "on": internal == key.date,
            "since": internal >= key.date,
        }[key.relation]
    if isinstance(key, c.SearchModSeq):
        return record.modseq >= key.modseq
    raise AssertionError(key)


class EvaluatorTests(TestCase):
    @settings(max_examples=300, deadline=None)
    @given(trees)
    def test_same_as_recursive_reading(self, key: c.SearchKey) -> None:
        expected = [record.uid for record in RECORDS if naive(key, record)]
        found = run_all(search(key, NoFiles(), RECORDS, SEQS, FEW_RECENT))
        self.assertEqual([record.uid for record in found], expected)


class NoFiles:
    """Index keys must not touch the mailbox at all."""

    def __getattr__(self, name: str):
        raise AssertionError(f"an index-only search called mailbox.{name}")
