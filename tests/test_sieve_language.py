"""The Sieve extensions at delivery, each through LMTP: include, date, relational, copy, mailbox,
imap4flags, variables, editheader's limits, the run's limits; and the checker's strictness."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from twisted.trial import unittest

from cyrusmail.delivery.queue import queue_of
from cyrusmail.sieve import dates
from cyrusmail.sieve import delivery as sieve_delivery
from cyrusmail.sieve.commands import DATE_PARTS, compile_script
from cyrusmail.sieve.scripts import scripts_of
from cyrusmail.sieve.syntax import SieveSyntaxError
from cyrusmail.store.records import Flag
from tests.test_sieve_delivery import (
    MESSAGE,
    SieveCase,
    damage_scripts,
    make_sieve_server,
)
from tests.test_smtp_session_support import inbox_messages, lmtp_factory

# Received: two hops (and LMTP adds a third); Date: 1 November 2023, 09:30 at +0200 (07:30 UTC).  The test clock reads
# 2023-11-14 22:13:20 UTC, a Tuesday.
DATED = (b"Received: from a.remote.example by b.remote.example; Wed, 1 Nov 2023 09:31:00 +0200\r\n"
         b"Received: from c.remote.example by a.remote.example; Wed, 1 Nov 2023 09:30:30 +0200\r\n"
         b"Date: Wed, 1 Nov 2023 09:30:00 +0200\r\nX-Spam-Score: 7\r\n" + MESSAGE)


class SieveExtensionTests(SieveCase, unittest.TestCase):
    def folder(self, name: str) -> list[bytes]:
        mailboxes = self.context.realm.account("alice").mailboxes
        return inbox_messages(self.context, "alice", name) if mailboxes.exists(name) else []

    def records(self, name: str = "INBOX"):
        return self.context.realm.account("alice").mailboxes.open(name).messages()

    def deliver_with(self, script: str, message: bytes = DATED) -> None:
        self.activate(script)
        [(code, _, _)] = self.lmtp(message)
        self.assertEqual(code, 250)

    # -- include (RFC 6609) -----------------------------------------------------------

    def test_include_personal_once_and_return(self) -> None:
        self.scripts.put("alice", "lists", 'require ["fileinto", "mailbox", "include"];\r\n'
                                           'if header :contains "subject" "hello" { fileinto :create "Hello"; return; }\r\n'
                                           'fileinto :create "Never";\r\n')
        self.deliver_with('require ["include", "fileinto"];\r\n'
                          'include :personal "lists";\r\ninclude :once "lists";\r\ninclude :once "lists";\r\n')
        self.assertEqual(len(self.folder("Hello")), 1)  # :once: stored once; return ended the included script
        self.assertEqual(self.folder("Never"), [])
        self.assertEqual(self.folder("INBOX"), [])

    def test_include_global_with_global_variables(self) -> None:
        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, "spam.sieve"), "w", encoding="utf-8") as out:
            out.write('require ["include", "variables", "fileinto", "mailbox"];\r\n'
                      'global "target";\r\nfileinto :create "${target}";\r\n')
        self.scripts.global_folder = Path(folder)
        self.deliver_with('require ["include", "variables"];\r\n'
                          'global "target";\r\nset "target" "Filtered/Global";\r\ninclude :global "spam";\r\n')
        self.assertEqual(len(self.folder("Filtered/Global")), 1)
        self.assertEqual(self.folder("INBOX"), [])

    def test_include_optional_missing_is_no_error_but_a_loop_is(self) -> None:
        self.deliver_with('require ["include", "fileinto"];\r\ninclude :optional "missing";\r\nfileinto "Trash";\r\n')
        self.assertEqual(len(self.folder("Trash")), 1)
        self.scripts.put("alice", "loop", 'require ["include", "fileinto"]; fileinto "Trash"; include "loop";')
        self.deliver_with('require "include"; include "loop";')
        self.assertEqual(len(self.folder("Trash")), 1)  # nested too deep: a runtime error, the message kept
        self.assertEqual(len(self.folder("INBOX")), 1)

    # -- date (RFC 5260) and relational (RFC 5231) ------------------------------------

    def test_date_and_currentdate(self) -> None:
        self.deliver_with('require ["date", "relational", "fileinto", "mailbox"];\r\n'
                          'if allof (date :originalzone :is "date" "hour" "09",\r\n'
                          '          date :zone "+0000" :is "date" "time" "07:30:00",\r\n'
                          '          date :value "lt" "date" "date" "2023-11-02",\r\n'
                          '          date :is "received" "year" "2023",\r\n'
                          '          currentdate :zone "+0000" :is "iso8601" "2023-11-14T22:13:20+00:00",\r\n'
                          '          currentdate :zone "+0100" :is "weekday" "2",\r\n'
                          '          not currentdate :value "lt" "date" "2023-11-14") {\r\n'
                          '  fileinto :create "Dated";\r\n}\r\n')
        self.assertEqual(len(self.folder("Dated")), 1)

    def test_relational_count_and_value(self) -> None:
        self.deliver_with('require ["relational", "comparator-i;ascii-numeric", "fileinto", "mailbox"];\r\n'
                          'if allof (header :count "eq" :comparator "i;ascii-numeric" "received" "3",\r\n'
                          '          header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5",\r\n'
                          '          not header :value "gt" :comparator "i;ascii-numeric" "x-spam-score" "10",\r\n'
                          '          address :count "eq" :comparator "i;ascii-numeric" "to" "1") {\r\n'
                          '  fileinto :create "Junk";\r\n}\r\n')
        self.assertEqual(len(self.folder("Junk")), 1)

    # -- copy (RFC 3894), mailbox (RFC 5490), imap4flags (RFC 5232) --------------------

    def test_fileinto_copy_keeps_the_implicit_keep(self) -> None:
        self.deliver_with('require ["fileinto", "copy"]; fileinto :copy "Archive";')
        self.assertEqual((len(self.folder("Archive")), len(self.folder("INBOX"))), (1, 1))

    def test_mailboxexists(self) -> None:
        self.deliver_with('require ["fileinto", "mailbox"];\r\n'
                          'if mailboxexists "Lists" { fileinto "Lists"; } else { fileinto "Archive"; }\r\n')
        self.assertEqual(len(self.folder("Archive")), 1)
        self.context.realm.account("alice").mailboxes.create("Lists")
        self.lmtp(DATED)
        self.assertEqual(len(self.folder("Lists")), 1)

    def test_imap4flags_on_keep_and_fileinto_and_hasflag(self) -> None:
        self.deliver_with('require ["imap4flags", "variables", "fileinto"];\r\n'
                          'setflag "\\\\Flagged $Work";\r\naddflag ["$Later", "\\\\Seen"];\r\n'
                          'removeflag "$Work";\r\nkeep;\r\n'
                          'addflag "mine" "$Private";\r\n'
                          'if hasflag :is "mine" "$Private" { fileinto :flags "${mine}" "Archive"; }\r\n')
        [kept] = self.records()
        self.assertEqual(kept.flags, Flag.FLAGGED | Flag.SEEN)
        self.assertEqual(set(kept.keywords), {"$Later"})
        [archived] = self.records("Archive")
        self.assertEqual((archived.flags, set(archived.keywords)), (Flag(0), {"$Private"}))

    # -- body (RFC 5173) -----------------------------------------------------------------

    def test_body_raw_content_and_text_transforms(self) -> None:
        multipart = (b"From: someone@remote.example\r\nTo: alice@example.org\r\nSubject: parts\r\n"
                     b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
                     b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                     b"R3LDvMOfZSBhdXMgWsO8cmljaA==\r\n"  # "Grüße aus Zürich"
                     b"--XX\r\nContent-Type: application/octet-stream\r\n\r\nplain words in a file\r\n--XX--\r\n")
        self.deliver_with('require ["body", "fileinto", "mailbox"];\r\n'
                          'if allof (body :text :contains "Zürich",\r\n'
                          '          body :content "text" :contains "grüße",\r\n'
                          '          not body :content "text" :contains "plain words",\r\n'
                          '          body :raw :contains "R3LDvMOfZSBh",\r\n'
                          '          not body :text :contains "R3LDvMOfZSBh") { fileinto :create "Parts"; }\r\n',
                          multipart)
        self.assertEqual(len(self.folder("Parts")), 1)

    # -- variables (RFC 5229) and encoded-character -----------------------------------

    def test_variables_modifiers_and_match_groups(self) -> None:
        self.deliver_with('require ["variables", "fileinto", "mailbox", "encoded-character"];\r\n'
                          'if header :matches "from" "* <*@*>" { set :lower :upperfirst "who" "${2}"; }\r\n'
                          'set :length "n" "${who}";\r\n'
                          'set "sep" "${hex:2F}";\r\n'
                          'fileinto :create "People${sep}${who}-${n}";\r\n')
        self.assertEqual(len(self.folder("People/Someone-7")), 1)

    # -- editheader (RFC 5293): what a script may not do ------------------------------

    def test_editheader_cannot_inject_fields_or_touch_the_trace(self) -> None:
        self.deliver_with('require "editheader";\r\n'
                          'addheader "X-Note" "one\r\nBcc: evil@remote.example";\r\n'
                          'addheader "Auto-Submitted" "no";\r\n'
                          'deleteheader "Return-Path";\r\ndeleteheader "Delivered-To";\r\n')
        [stored] = self.folder("INBOX")
        header = stored.split(b"\r\n\r\n", 1)[0]
        self.assertIn(b"\r\nX-Note: one Bcc: evil@remote.example\r\n", header)
        self.assertNotIn(b"\nBcc:", header)
        self.assertNotIn(b"Auto-Submitted", header)
        self.assertTrue(header.startswith(b"Return-Path: <someone@remote.example>\r\n"))

    def test_editheader_bad_field_name_keeps_the_message_unedited(self) -> None:
        self.deliver_with('require ["editheader", "variables"];\r\n'
                          'addheader "X-Fine" "yes";\r\nset "name" "Bad Name";\r\naddheader "${name}" "x";\r\n')
        [stored] = self.folder("INBOX")
        self.assertNotIn(b"X-Fine", stored)
        self.assertNotIn(b"Bad Name", stored)

    # -- vacation (RFC 5230): :addresses, :from, :handle --------------------------------

    def replies(self) -> list[bytes]:
        queued = self.queued()
        queue = queue_of(self.context)
        for entry, _ in queued:
            queue.delete(entry.id)
        return [data for _, data in queued]

    def test_vacation_addresses_and_a_from_that_is_not_the_users(self) -> None:
        to_alias = MESSAGE.replace(b"To: alice@example.org", b"To: Alice <alice.smith@other.example>")
        self.deliver_with('require "vacation";\r\nvacation "Away.";', to_alias)
        self.assertEqual(self.replies(), [])  # not addressed to her: no reply
        self.deliver_with('require "vacation";\r\n'
                          'vacation :addresses "alice.smith@other.example" :from "The Boss <boss@bank.example>" "Away.";',
                          to_alias)
        [reply] = self.replies()
        self.assertIn(b"\r\nFrom: <alice@example.org>\r\n", reply)  # neither the alias nor a forged :from
        self.deliver_with('require "vacation";\r\n'
                          'vacation :handle "b" :from "Alice <alice@example.org>" :subject "Out" "Away.";')
        [reply] = self.replies()
        self.assertIn(b"\r\nFrom: Alice <alice@example.org>\r\nTo: <someone@remote.example>\r\nSubject: Out\r\n",
                      reply)

    def test_vacation_from_may_be_any_address_without_check_header_from(self) -> None:
        self.context.config["server"]["check_header_from"] = False
        self.deliver_with('require "vacation";\r\nvacation :from "boss@bank.example" "Away.";')
        [reply] = self.replies()
        self.assertIn(b"\r\nFrom: <boss@bank.example>\r\n", reply)

    def test_vacation_handles_are_answered_apart(self) -> None:
        self.deliver_with('require "vacation"; vacation :handle "one" "Away.";')
        self.deliver_with('require "vacation"; vacation :handle "one" "Away, really.";')
        self.deliver_with('require "vacation"; vacation :handle "two" "Away.";')
        self.deliver_with('require "vacation"; vacation :days 0 "Away, no handle.";')
        self.assertEqual(len(self.replies()), 3)
        self.clock.advance(86400 + 1)  # :days 0 counts as 1 (RFC 5230 section 4.1: the site's minimum)
        self.deliver_with('require "vacation"; vacation :days 0 "Away, no handle.";')
        self.assertEqual(len(self.replies()), 1)

    # -- the run's limits and failures -----------------------------------------------------

    def test_a_fault_in_the_filter_keeps_the_message(self) -> None:
        def broken(*args, **kwargs):
            raise RuntimeError("a bug in the interpreter")

        self.patch(sieve_delivery, "evaluate", broken)
        self.deliver_with('require "fileinto"; fileinto "Trash";')
        self.assertEqual(len(self.folder("INBOX")), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_too_many_actions_keeps_the_message(self) -> None:
        actions = "".join(f'fileinto :copy "F{n}";\r\n' for n in range(40))
        self.deliver_with('require ["fileinto", "copy"];\r\n' + actions)
        self.assertEqual(len(self.folder("INBOX")), 1)
        self.assertEqual(self.folder("F0"), [])

    def test_a_damaged_script_database_keeps_the_message(self) -> None:
        self.activate('require "fileinto"; fileinto "Trash";')
        damage_scripts(self.context)
        [(code, _, _)] = self.lmtp(DATED)
        self.assertEqual(code, 250)
        self.assertEqual(len(self.folder("INBOX")), 1)
        self.flushLoggedErrors()

    def test_the_queues_local_delivery_runs_the_script(self) -> None:
        self.activate('require "fileinto"; fileinto "Archive";')
        queue = queue_of(self.context)
        entry = queue.enqueue(None, ["alice@example.org"], MESSAGE, sender="someone@remote.example")
        self.successResultOf(queue.attempt(entry))
        self.assertEqual((len(self.folder("Archive")), self.folder("INBOX")), (1, []))

    def test_sieve_turned_off_delivers_where_addressed(self) -> None:
        self.context, self.clock = make_sieve_server(self.mktemp(), sieve={"enabled": "no"})
        self.factory = lmtp_factory(self.context, self.clock)
        self.scripts = scripts_of(self.context)
        self.deliver_with('require "fileinto"; fileinto "Trash";')
        self.assertEqual((len(self.folder("INBOX")), self.folder("Trash")), (1, []))

    def test_too_much_work_is_cut_off(self) -> None:
        # 1,000 fields against 100 keys, six times over: more comparisons than max_work allows
        fields = b"".join(b"X-Tag: t%d\r\n" % n for n in range(1000))
        keys = "[" + ", ".join(f'"k{n}"' for n in range(100)) + "]"
        tests = ", ".join([f'header :contains "x-tag" {keys}'] * 6)
        self.deliver_with(f'require "fileinto";\r\nif anyof({tests}) {{ fileinto "Trash"; }}\r\nfileinto "Trash";\r\n',
                          fields + MESSAGE)
        self.assertEqual(self.folder("Trash"), [])
        self.assertEqual(len(self.folder("INBOX")), 1)


class DatePartTests(unittest.TestCase):
    def test_every_part(self) -> None:
        when = datetime.datetime(2008, 4, 2, 7, 5, 9, tzinfo=dates.zone_of("-0430"))
        parts = {part: dates.date_part(when, part) for part in DATE_PARTS}
        self.assertEqual(parts, {
            "year": "2008", "month": "04", "day": "02", "date": "2008-04-02", "julian": "54558",
            "hour": "07", "minute": "05", "second": "09", "time": "07:05:09",
            "iso8601": "2008-04-02T07:05:09-04:30", "std11": "Wed, 02 Apr 2008 07:05:09 -0430",
            "zone": "-0430", "weekday": "3",
        })
        self.assertIsNone(dates.date_part(when, "fortnight"))
        self.assertEqual(dates.parse_date("Wed, 2 Apr 2008 07:05:09 -0430"), when)
        self.assertIsNone(dates.parse_date("yesterday"))


class SieveCheckerTests(unittest.TestCase):
    """The checker refuses what RFC 5228 and the extensions forbid, with the line of the first error."""

    def refused(self, text: str) -> str:
        with self.assertRaises(SieveSyntaxError) as caught:
            compile_script(text)
        return str(caught.exception)

    def test_refusals_name_the_line(self) -> None:
        cases = {
            'keep;\r\nfileinto "x";': ("line 2", 'require "fileinto"'),
            'require "nosuch";': ("line 1", "unsupported extension"),
            'keep;\r\nrequire "fileinto";': ("line 2", "require"),
            'if header :is "subject" { keep; }': ("line 1", ""),
            'require "vacation";\r\nvacation :days "x" "y";': ("line 2", ""),
            'require "editheader";\r\ndeleteheader :last "x";': ("line 2", ":last needs :index"),
            'require "date";\r\nif currentdate "nonsense" "1" { keep; }': ("line 2", "date part"),
            'require "include";\r\ninclude "../etc/passwd";': ("line 2", "not a script name"),
            'if true { keep;': ("line 1", ""),
            'require "variables";\r\nset "1bad" "x";': ("line 2", "not a variable name"),
            'require "relational";\r\nif header :count "xx" "a" "1" { keep; }': ("line 2", ""),
            'redirect "not an address";': ("line 1", ""),
        }
        for text, (line, words) in cases.items():
            message = self.refused(text)
            self.assertIn(line, message, text)
            self.assertIn(words, message, text)

    def test_accepts_the_rfc_examples(self) -> None:
        compile_script('require ["fileinto", "reject", "envelope", "imap4flags", "vacation", "body", "variables",\r\n'
                       '         "copy", "relational", "subaddress", "date", "include", "mailbox", "editheader",\r\n'
                       '         "comparator-i;ascii-numeric"];\r\n'
                       'if envelope :all :is "from" "tim@example.com" { discard; }\r\n'
                       'elsif address :localpart :contains ["to", "cc"] "tim" { fileinto :copy "Tim"; }\r\n'
                       'elsif header :value "ge" :comparator "i;ascii-numeric" "x-priority" "3" { stop; }\r\n'
                       'elsif body :text :contains "unsubscribe" { addflag "$Bulk"; keep; }\r\n'
                       'else { vacation :days 7 :addresses ["me@example.org"] "Away"; }\r\n')
