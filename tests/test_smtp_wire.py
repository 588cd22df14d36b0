"""Tests for cyrusmail.smtp.wire: commands, limits, pipelining, modes.

Each table is also fed one byte at a time; message data (DATA, BDAT and
the smuggling variants) is in test_smtp_wire_data.py.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cyrusmail.smtp import codes
from cyrusmail.smtp.wire import (
    Auth,
    AuthCancelled,
    AuthResponse,
    Bdat,
    BodyType,
    CommandError,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Event,
    Helo,
    Help,
    Lhlo,
    Limits,
    Mail,
    Mode,
    Noop,
    Notify,
    OriginalRecipient,
    Path,
    Quit,
    Rcpt,
    Ret,
    Rset,
    SMTPParser,
    Starttls,
    Vrfy,
    hello_domain,
    parse_path,
)


def feed_whole(data: bytes, parser: SMTPParser | None = None) -> list[Event]:
    return (parser or SMTPParser()).feed(data)


def feed_bytewise(data: bytes, parser: SMTPParser | None = None) -> list[Event]:
    parser = parser or SMTPParser()
    events: list[Event] = []
    for index in range(len(data)):
        events.extend(parser.feed(data[index : index + 1]))
    return events


A = Path("a", "example.com")
B = Path("b", "example.org")

# (command line without CRLF, the event it parses to)
COMMANDS: list[tuple[bytes, Event]] = [
    (b"HELO client.example", Helo("client.example")),
    (b"helo client.example", Helo("client.example")),
    (b"EHLO [192.0.2.1]", Ehlo("[192.0.2.1]")),
    (b"EHLO  client.example ", Ehlo("client.example")),
    (b"LHLO mx.example", Lhlo("mx.example")),
    (b"MAIL FROM:<>", Mail(None)),
    (b"MAIL FROM:<a@example.com>", Mail(A)),
    (b"mail from:<a@example.com>", Mail(A)),
    (b"MAIL FROM: <a@example.com>", Mail(A)),
    (b"MAIL FROM:<@relay.one,@relay.two:a@example.com>", Mail(A)),
    (b'MAIL FROM:<"john doe"@example.com>', Mail(Path("john doe", "example.com"))),
    (b'MAIL FROM:<"a\\"b"@example.com>', Mail(Path('a"b', "example.com"))),
    (b"MAIL FROM:<a.b+tag@example.com>", Mail(Path("a.b+tag", "example.com"))),
    (b"MAIL FROM:<a@[192.0.2.1]>", Mail(Path("a", "[192.0.2.1]"))),
    (b"MAIL FROM:<a@[IPv6:2001:db8::1]>", Mail(Path("a", "[IPv6:2001:db8::1]"))),
    (b"MAIL FROM:<a@[x-tag:stuff]>", Mail(Path("a", "[x-tag:stuff]"))),
    (b"MAIL FROM:<a@example.com> SIZE=1000", Mail(A, size=1000)),
    (b"MAIL FROM:<a@example.com> size=0", Mail(A, size=0)),
    (b"MAIL FROM:<a@example.com> BODY=7BIT", Mail(A, body=BodyType.SEVEN_BIT)),
    (b"MAIL FROM:<a@example.com> BODY=8bitmime", Mail(A, body=BodyType.EIGHT_BIT_MIME)),
    (b"MAIL FROM:<a@example.com> BODY=BINARYMIME", Mail(A, body=BodyType.BINARY_MIME)),
    (b"MAIL FROM:<a@example.com> SMTPUTF8", Mail(A, smtputf8=True)),
    (b"MAIL FROM:<a@example.com> RET=HDRS", Mail(A, ret=Ret.HDRS)),
    (b"MAIL FROM:<a@example.com> RET=full", Mail(A, ret=Ret.FULL)),
    (b"MAIL FROM:<a@example.com> ENVID=QQ+2B314159", Mail(A, envid="QQ+314159")),
    (b"MAIL FROM:<a@example.com> AUTH=<>", Mail(A, auth="<>")),
    (
        b"MAIL FROM:<a@example.com> AUTH=e+3Dmc2@example.com",
        Mail(A, auth="e=mc2@example.com"),
    ),
    (
        b"MAIL FROM:<> SIZE=12 BODY=8BITMIME RET=FULL ENVID=x",
        Mail(None, size=12, body=BodyType.EIGHT_BIT_MIME, ret=Ret.FULL, envid="x"),
    ),
    (
        "MAIL FROM:<jösé@exämple.com> SMTPUTF8".encode(),
        Mail(Path("jösé", "exämple.com"), smtputf8=True),
    ),
    (b"RCPT TO:<b@example.org>", Rcpt(B)),
    (b"rcpt to: <b@example.org>", Rcpt(B)),
    (b"RCPT TO:<Postmaster>", Rcpt(Path("Postmaster", None))),
    (b"RCPT TO:<postmaster>", Rcpt(Path("postmaster", None))),
    (
        b"RCPT TO:<b@example.org> NOTIFY=NEVER",
        Rcpt(B, notify=frozenset({Notify.NEVER})),
    ),
    (
        b"RCPT TO:<b@example.org> notify=success,Delay",
        Rcpt(B, notify=frozenset({Notify.SUCCESS, Notify.DELAY})),
    ),
    (
        b"RCPT TO:<b@example.org> ORCPT=rfc822;b+40example.org",
        Rcpt(B, orcpt=OriginalRecipient("rfc822", "b@example.org")),
    ),
    (b"DATA", Data()),
    (b"data", Data()),
    (b"BDAT 100", Bdat(100, False)),
    (b"BDAT 0 LAST", Bdat(0, True)),
    (b"bdat 5 last", Bdat(5, True)),
    (b"RSET", Rset()),
    (b"NOOP", Noop()),
    (b"NOOP whatever it says", Noop()),
    (b"QUIT", Quit()),
    (b"VRFY postmaster", Vrfy("postmaster")),
    (b"HELP", Help(None)),
    (b"HELP MAIL", Help("MAIL")),
    (b"STARTTLS", Starttls()),
    (b"AUTH PLAIN", Auth("PLAIN")),
    (b"AUTH login", Auth("LOGIN")),
    (b"AUTH CRAM-MD5", Auth("CRAM-MD5")),
    (b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", Auth("PLAIN", b"\x00alice\x00secret")),
    (b"AUTH PLAIN =", Auth("PLAIN", b"")),
]

# (command line without CRLF, the reply named, the verb reported)
ERRORS: list[tuple[bytes, codes.Reply, str | None]] = [
    (b"", codes.SYNTAX_ERROR, None),
    (b"   ", codes.SYNTAX_ERROR, None),
    (b"FOO bar", codes.SYNTAX_ERROR, "FOO"),
    (b"MAIL1 FROM:<a@b>", codes.SYNTAX_ERROR, None),
    (b"EXPN staff", codes.NOT_IMPLEMENTED, "EXPN"),
    (b"TURN", codes.NOT_IMPLEMENTED, "TURN"),
    (b"HELO", codes.PARAM_SYNTAX, "HELO"),
    (b"EHLO", codes.PARAM_SYNTAX, "EHLO"),
    (b"EHLO two words", codes.PARAM_SYNTAX, "EHLO"),
    (b"LHLO", codes.PARAM_SYNTAX, "LHLO"),
    (b"MAIL", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL TO:<a@example.com>", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:a@example.com", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<@example.com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a..b@example.com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<.a@example.com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a.@example.com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a b@example.com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@-example.com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@exa_mple.com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example..com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@[300.1.1.1]>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@[IPv6:zz::1]>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@[nonsense]>", codes.SENDER_SYNTAX, "MAIL"),
    (b'MAIL FROM:<"unterminated@example.com>', codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<relay.one:a@example.com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<@relay.one a@example.com>", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com>SIZE=1", codes.SENDER_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> SIZE=abc", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> SIZE=-1", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> SIZE", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> SIZE=", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> SIZE==1", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> SIZE=1 size=2", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> SIZE=" + b"9" * 21, codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> BODY=9BIT", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> BODY", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> SMTPUTF8=yes", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> RET=ALL", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> ENVID=a+zz", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> ENVID=a+2", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> ENVID=" + b"x" * 101, codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> -SIZE=1", codes.PARAM_SYNTAX, "MAIL"),
    (b"MAIL FROM:<a@example.com> FOO=BAR", codes.PARAM_UNRECOGNIZED, "MAIL"),
    (b"MAIL FROM:<a@example.com> NOTIFY=NEVER", codes.PARAM_UNRECOGNIZED, "MAIL"),
    ("MAIL FROM:<jösé@example.com>".encode(), codes.UTF8_NOT_ALLOWED, "MAIL"),
    ("MAIL FROM:<a@example.com> ENVID=é".encode(), codes.PARAM_SYNTAX, "MAIL"),
    (b"RCPT", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT FROM:<b@example.org>", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT TO:<>", codes.RECIPIENT_SYNTAX, "RCPT"),
    (b"RCPT TO:b@example.org", codes.RECIPIENT_SYNTAX, "RCPT"),
    (b"RCPT TO:<b>", codes.RECIPIENT_SYNTAX, "RCPT"),
    (b"RCPT TO:<b@example.org> NOTIFY=NEVER,SUCCESS", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT TO:<b@example.org> NOTIFY=SOMETIMES", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT TO:<b@example.org> NOTIFY=SUCCESS,,DELAY", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT TO:<b@example.org> NOTIFY=DELAY,DELAY", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT TO:<b@example.org> NOTIFY=", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT TO:<b@example.org> ORCPT=rfc822", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT TO:<b@example.org> ORCPT=rfc822;", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT TO:<b@example.org> ORCPT=rfc822;a+xyb", codes.PARAM_SYNTAX, "RCPT"),
    (b"RCPT TO:<b@example.org> SIZE=10", codes.PARAM_UNRECOGNIZED, "RCPT"),
    ("RCPT TO:<jösé@example.com>".encode(), codes.UTF8_NOT_ALLOWED, "RCPT"),
    (b"DATA now", codes.PARAM_SYNTAX, "DATA"),
    (b"RSET everything", codes.PARAM_SYNTAX, "RSET"),
    (b"QUIT now", codes.PARAM_SYNTAX, "QUIT"),
    (b"STARTTLS please", codes.PARAM_SYNTAX, "STARTTLS"),
    (b"VRFY", codes.PARAM_SYNTAX, "VRFY"),
    (b"AUTH", codes.PARAM_SYNTAX, "AUTH"),
    (b"AUTH PLAIN a b", codes.PARAM_SYNTAX, "AUTH"),
    (b"AUTH MECHANISM-NAME-LONGER-THAN-20", codes.PARAM_SYNTAX, "AUTH"),
    (b"AUTH PL@IN", codes.PARAM_SYNTAX, "AUTH"),
    (b"AUTH PLAIN !!!!", codes.AUTH_BAD_BASE64, "AUTH"),
    (b"AUTH PLAIN AGFsaWNl=AHNl", codes.AUTH_BAD_BASE64, "AUTH"),
    (b"AUTH PLAIN *", codes.AUTH_CANCELLED, "AUTH"),
    (b"NO\x00OP", codes.SYNTAX_ERROR, None),
    (b"NOOP \xff\xfe", codes.SYNTAX_ERROR, None),
    ("NOOP é".encode(), codes.PARAM_SYNTAX, "NOOP"),
    ("HÉLO x".encode(), codes.SYNTAX_ERROR, None),
    (b"NOOP\rRSET", codes.BARE_NEWLINE, None),
    (b"NOOP\nRSET", codes.BARE_NEWLINE, None),
    (b"\n", codes.BARE_NEWLINE, None),
]

BAD_BDAT = [
    b"BDAT",
    b"BDAT x",
    b"BDAT 10 NOW",
    b"BDAT -1",
    b"BDAT 1 LAST more",
    b"BDAT 1e3",
]


class CommandTableTests(TestCase):
    """Every command and parameter, good and bad, whole and byte by byte."""

    def test_commands(self) -> None:
        for line, expected in COMMANDS:
            for feed in (feed_whole, feed_bytewise):
                with self.subTest(line=line, feed=feed.__name__):
                    self.assertEqual(feed(line + b"\r\n"), [expected])

    def test_errors(self) -> None:
        for line, reply, verb in ERRORS:
            for feed in (feed_whole, feed_bytewise):
                with self.subTest(line=line, feed=feed.__name__):
                    [event] = feed(line + b"\r\n")
                    self.assertIsInstance(event, CommandError)
                    assert isinstance(event, CommandError)
                    self.assertEqual((event.reply, event.verb), (reply, verb))
                    self.assertFalse(event.fatal)
                    self.assertTrue(event.detail)

    def test_session_goes_on_after_an_error(self) -> None:
        """After each bad line the next command is read normally."""
        for line, _, _ in ERRORS:
            with self.subTest(line=line):
                events = SMTPParser().feed(line + b"\r\nNOOP\r\n")
                self.assertEqual(events[1:], [Noop()])

    def test_bad_bdat_is_fatal(self) -> None:
        """After a BDAT it cannot read, the parser cannot know where the
        chunk ends, so it reads nothing more."""
        for line in BAD_BDAT:
            with self.subTest(line=line):
                parser = SMTPParser()
                [event] = parser.feed(line + b"\r\nRCPT TO:<b@example.org>\r\n")
                self.assertEqual(
                    (event.reply, event.verb, event.fatal),  # type: ignore[union-attr]
                    (codes.PARAM_SYNTAX, "BDAT", True),
                )
                self.assertEqual(parser.mode, Mode.CLOSED)
                self.assertEqual(parser.feed(b"NOOP\r\n"), [])

    def test_utf8_recipient_after_smtputf8_mail(self) -> None:
        """A UTF-8 RCPT is allowed only in a transaction begun with SMTPUTF8."""
        utf8_rcpt = "RCPT TO:<jösé@exämple.com>\r\n".encode()
        events = SMTPParser().feed(b"MAIL FROM:<> SMTPUTF8\r\n" + utf8_rcpt)
        self.assertEqual(events[1], Rcpt(Path("jösé", "exämple.com")))
        for reset in (b"RSET", b"MAIL FROM:<>", b"EHLO x", b"MAIL FROM:<nope"):
            with self.subTest(reset=reset):
                events = SMTPParser().feed(
                    b"MAIL FROM:<> SMTPUTF8\r\n" + reset + b"\r\n" + utf8_rcpt
                )
                self.assertEqual(events[2].reply, codes.UTF8_NOT_ALLOWED)  # type: ignore[union-attr]


class PathTests(TestCase):
    """parse_path and Path.address."""

    def test_addresses_round_trip(self) -> None:
        table = [
            ("<a@example.com>", "a@example.com"),
            ('<"john doe"@example.com>', '"john doe"@example.com'),
            ('<"a\\\\b"@example.com>', '"a\\\\b"@example.com'),
            ('<"plain"@example.com>', "plain@example.com"),
            ("<a@[192.0.2.1]>", "a@[192.0.2.1]"),
            ("<@x.example:a@example.com>", "a@example.com"),
            ("<jösé@exämple.com>", "jösé@exämple.com"),
        ]
        for text, address in table:
            with self.subTest(text=text):
                self.assertEqual(parse_path(text).address, address)

    def test_utf8_flag(self) -> None:
        self.assertFalse(parse_path("<a@example.com>").utf8)
        self.assertTrue(parse_path("<a@exämple.com>").utf8)
        self.assertTrue(parse_path('<"jö"@example.com>').utf8)

    def test_postmaster_only_for_rcpt(self) -> None:
        self.assertEqual(
            parse_path("<Postmaster>", postmaster=True), Path("Postmaster", None)
        )
        with self.assertRaises(ValueError):
            parse_path("<Postmaster>")


class HelloDomainTests(TestCase):
    """hello_domain: the greeting's name, if it may be written into a Received header."""

    def test_table(self) -> None:
        table = [
            ("client.example", "client.example"),
            ("localhost", "localhost"),
            ("[192.0.2.1]", "[192.0.2.1]"),
            ("[IPv6:2001:DB8::1]", "[IPv6:2001:db8::1]"),
            ("[ipv6:::1]", "[IPv6:::1]"),
            ("my_pc", None),
            ("a(b)", None),
            ("x;y", None),
            ("caf\u00e9.example", None),
            ("[x:a;b]", None),
            ("[1.2.3]", None),
            ("[IPv6:1.2.3.4]", None),
            ("a..b", None),
            ("-a.example", None),
            ("host.", None),
            ("a" * 64 + ".example", None),
            ("a." * 128 + "a", None),
        ]
        for text, name in table:
            with self.subTest(text=text):
                self.assertEqual(hello_domain(text), name)


class LineLimitTests(TestCase):
    """RFC 5321 4.5.3.1.4 and RFC 4954's 12288 for AUTH."""

    def test_command_line_limit(self) -> None:
        fits = b"NOOP " + b"x" * (512 - 7)
        self.assertEqual(SMTPParser().feed(fits + b"\r\n"), [Noop()])
        [error] = SMTPParser().feed(fits + b"x\r\n")
        self.assertEqual((error.reply, error.verb), (codes.LINE_TOO_LONG, "NOOP"))  # type: ignore[union-attr]

    def test_mail_and_rcpt_may_be_longer(self) -> None:
        mail = b"MAIL FROM:<a@example.com> ENVID=" + b"x" * 100 + b" AUTH=" + b"y" * 500
        self.assertGreater(len(mail), 512)
        [event] = SMTPParser().feed(mail + b"\r\n")
        self.assertIsInstance(event, Mail)
        prefix = b"RCPT TO:<b@example.org> ORCPT=rfc822;"
        rcpt = prefix + b"z" * (2048 - len(prefix) - 1)
        self.assertEqual(len(rcpt) + 2, 2049)
        [error] = SMTPParser().feed(rcpt + b"\r\n")
        self.assertEqual(error.reply, codes.LINE_TOO_LONG)  # type: ignore[union-attr]

    def test_auth_line_limit(self) -> None:
        response = b"A" * (12288 - len(b"AUTH PLAIN \r\n"))
        response = response[: len(response) // 4 * 4]
        [event] = SMTPParser().feed(b"AUTH PLAIN " + response + b"\r\n")
        self.assertIsInstance(event, Auth)
        [error] = SMTPParser().feed(b"AUTH PLAIN " + b"A" * 12288 + b"\r\n")
        self.assertEqual((error.reply, error.verb), (codes.AUTH_LINE_TOO_LONG, "AUTH"))  # type: ignore[union-attr]

    def test_overlong_line_is_discarded_not_buffered(self) -> None:
        """A huge line costs bounded memory; nothing in it is a command."""
        parser = SMTPParser()
        events: list[Event] = []
        junk = b"x" * 1000 + b" RSET QUIT \r"  # a CR that is not a line end
        for _ in range(100):
            events.extend(parser.feed(junk))
            self.assertLessEqual(parser.buffered, Limits().auth_line)
        events.extend(parser.feed(b"\r\nNOOP\r\n"))
        self.assertEqual(len(events), 2)
        self.assertEqual(events[0].reply, codes.LINE_TOO_LONG)  # type: ignore[union-attr]
        self.assertEqual(events[1], Noop())

    def test_overlong_line_ending_across_feeds(self) -> None:
        for split in range(1, 4):
            with self.subTest(split=split):
                data = b"y" * 20000 + b"\r\nQUIT\r\n"
                parser = SMTPParser()
                events = parser.feed(data[: 20000 + split - 1]) + parser.feed(
                    data[20000 + split - 1 :]
                )
                self.assertEqual([type(e) for e in events], [CommandError, Quit])

    def test_custom_limits(self) -> None:
        parser = SMTPParser(Limits(command_line=10))
        [error] = parser.feed(b"NOOP 12345\r\n")
        self.assertEqual(error.reply, codes.LINE_TOO_LONG)  # type: ignore[union-attr]


class PipeliningTests(TestCase):
    """RFC 2920: several commands in one read, replies owed in order."""

    def test_transaction_in_one_read(self) -> None:
        parser = SMTPParser()
        events = parser.feed(
            b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.org>\r\nRCPT TO:<bad>\r\nDATA\r\n"
            b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
        )
        self.assertEqual(
            events,
            [
                Ehlo("c.example"),
                Mail(A),
                Rcpt(B),
                CommandError(codes.RECIPIENT_SYNTAX, "RCPT", "address has no domain"),
                Data(),
            ],
        )
        self.assertEqual(parser.paused_on, Data())
        self.assertEqual(parser.feed(b"more"), [])  # still paused: only buffered
        parser.start_data(1000)
        self.assertEqual(
            parser.feed(),
            [DataChunk(b"Subject: x\r\n\r\nbody\r\n"), DataEnd(20), Quit()],
        )
        self.assertEqual(parser.mode, Mode.CLOSED)

    def test_refused_data_resumes_commands(self) -> None:
        parser = SMTPParser()
        self.assertEqual(parser.feed(b"DATA\r\nRSET\r\n"), [Data()])
        parser.resume()
        self.assertEqual(parser.feed(), [Rset()])

    def test_nothing_is_read_after_quit(self) -> None:
        parser = SMTPParser()
        self.assertEqual(parser.feed(b"QUIT\r\nRSET\r\n"), [Quit()])
        self.assertEqual(parser.feed(b"NOOP\r\n"), [])

    def test_mode_switch_outside_its_pause_is_an_error(self) -> None:
        parser = SMTPParser()
        self.assertRaises(RuntimeError, parser.start_data, 10)
        self.assertRaises(RuntimeError, parser.discard_buffered)
        self.assertRaises(RuntimeError, parser.start_auth)
        self.assertRaises(RuntimeError, parser.resume)
        parser.feed(b"DATA\r\n")
        self.assertRaises(RuntimeError, parser.discard_buffered)
        self.assertRaises(RuntimeError, parser.start_auth)
        self.assertRaises(ValueError, parser.start_data, 10, binary=True)
        parser.start_data(10)  # still paused on DATA after the refusal
        self.assertEqual(parser.feed(b".\r\n"), [DataEnd(0)])


class StarttlsTests(TestCase):
    """Plaintext pipelined after STARTTLS is never read under TLS."""

    def test_injected_commands_are_discarded(self) -> None:
        parser = SMTPParser()
        injected = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\n"
        self.assertEqual(
            parser.feed(b"EHLO c\r\nSTARTTLS\r\n" + injected), [Ehlo("c"), Starttls()]
        )
        self.assertEqual(parser.discard_buffered(), len(injected))
        self.assertEqual(parser.feed(), [])
        self.assertEqual(parser.feed(b"EHLO c\r\n"), [Ehlo("c")])

    def test_nothing_to_discard(self) -> None:
        parser = SMTPParser()
        parser.feed(b"STARTTLS\r\n")
        self.assertEqual(parser.discard_buffered(), 0)

    def test_partial_line_is_discarded_too(self) -> None:
        parser = SMTPParser()
        parser.feed(b"STARTTLS\r\nRCPT TO:<vic")
        self.assertEqual(parser.discard_buffered(), len(b"RCPT TO:<vic"))
        self.assertEqual(parser.feed(b"EHLO c\r\n"), [Ehlo("c")])

    def test_refused_starttls_keeps_the_pipeline(self) -> None:
        parser = SMTPParser()
        parser.feed(b"STARTTLS\r\nNOOP\r\n")
        parser.resume()
        self.assertEqual(parser.feed(), [Noop()])


class AuthLineTests(TestCase):
    """SASL continuation lines, read one at a time after a 334."""

    def test_login_exchange(self) -> None:
        parser = SMTPParser()
        self.assertEqual(parser.feed(b"AUTH LOGIN\r\ndXNlcg==\r\n"), [Auth("LOGIN")])
        parser.start_auth()
        self.assertEqual(parser.feed(b"cGFzcw==\r\n"), [AuthResponse(b"user")])
        parser.start_auth()
        self.assertEqual(parser.feed(), [AuthResponse(b"pass")])
        parser.resume()
        self.assertEqual(parser.feed(b"NOOP\r\n"), [Noop()])

    def test_cancel_empty_and_bad_lines(self) -> None:
        table: list[tuple[bytes, Event]] = [
            (b"*", AuthCancelled()),
            (b"", AuthResponse(b"")),
            (b"=", AuthResponse(b"")),
            (b"AGFsaWNlAHNlY3JldA==", AuthResponse(b"\x00alice\x00secret")),
            (b"not base64!", CommandError(codes.AUTH_BAD_BASE64, "AUTH")),
            (b"RSET now", CommandError(codes.AUTH_BAD_BASE64, "AUTH")),
            (b"A" * 20000, CommandError(codes.AUTH_LINE_TOO_LONG, "AUTH")),
        ]
        for line, expected in table:
            for feed in (feed_whole, feed_bytewise):
                with self.subTest(line=line[:20], feed=feed.__name__):
                    parser = SMTPParser()
                    parser.feed(b"AUTH PLAIN\r\n")
                    parser.start_auth()
                    [event] = feed(line + b"\r\nNOOP\r\n", parser)
                    if isinstance(expected, CommandError):
                        self.assertEqual(
                            (event.reply, event.verb),  # type: ignore[union-attr]
                            (expected.reply, expected.verb),
                        )
                    else:
                        self.assertEqual(event, expected)
                    self.assertEqual(parser.paused_on, event)
                    parser.resume()
                    self.assertEqual(parser.feed(), [Noop()])
