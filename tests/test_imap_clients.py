"""Real clients against a listening server (in process, loopback, port 0):
Python's imaplib and imapclient, mbsync (isync) and fetchmail."""

from __future__ import annotations

import base64
import imaplib
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SkipTest, TestCase

from cyrusmail.imap.server import make_factory
from cyrusmail.store.records import MailboxAttribute
from tests.helpers import add_user, make_context
from tests.imap_support import message


class ClientTestCase(TestCase):
    timeout = 120

    def setUp(self):
        self.context = make_context(self.mktemp(), imap={"enabled": "yes", "listen": "tcp:0:interface=127.0.0.1"})
        add_user(self.context, "alice", "secret")
        self.addCleanup(self.context.store.close)
        self.addCleanup(self.context.users.close)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        factory = make_factory(self.context, "imap")
        self.sessions = []
        build = factory.buildProtocol

        def build_and_keep(addr):
            protocol = build(addr)
            self.sessions.append(protocol)
            return protocol

        factory.buildProtocol = build_and_keep
        self.addCleanup(self._hang_up)
        d = endpoint.listen(factory)

        def listening(port):
            self.port = port
            self.port_number = port.getHost().port
            self.addCleanup(port.stopListening)

        return d.addCallback(listening)

    def _hang_up(self):
        from twisted.internet.task import deferLater

        for protocol in self.sessions:
            if protocol.transport is not None and not protocol.closing:
                protocol.transport.abortConnection()
        return deferLater(reactor, 0.05, lambda: None)

    def mailbox(self, name: str = "INBOX"):
        return self.context.store.mailboxes("alice").open(name)


class ImaplibTests(ClientTestCase):
    def test_a_day_in_the_life(self):
        inbox = self.mailbox()
        for n in range(3):
            inbox.append(message(f"Message {n}"))

        def talk():
            client = imaplib.IMAP4("127.0.0.1", self.port_number)
            results = {"caps": client.capabilities}
            client.login("alice", "secret")
            typ, data = client.select("INBOX")
            results["exists"] = data
            typ, data = client.search(None, "ALL")
            results["search"] = data
            typ, data = client.fetch("1:*", "(UID FLAGS RFC822.SIZE)")
            results["fetch"] = data
            typ, data = client.fetch("2", "(BODY.PEEK[])")
            results["body"] = data[0][1]
            client.store("1", "+FLAGS", "\\Deleted")
            typ, data = client.expunge()
            results["expunge"] = data
            client.create("Work/2024")
            typ, data = client.list()
            results["list"] = data
            client.append("Work/2024", "(\\Seen)", imaplib.Time2Internaldate(time.time()), message("Saved"))
            typ, data = client.uid("COPY", "1:*", "Work/2024")
            results["copy"] = (typ, data)
            client.rename("Work/2024", "Work/Old")
            typ, data = client.status("Work/Old", "(MESSAGES UNSEEN)")
            results["status"] = data
            client.close()
            client.logout()
            return results

        def check(results):
            self.assertIn("IDLE", results["caps"])
            self.assertEqual(results["exists"], [b"3"])
            self.assertEqual(results["search"], [b"1 2 3"])
            self.assertEqual(len(results["fetch"]), 3)
            self.assertIn(b"Subject: Message 1", results["body"])
            self.assertEqual(results["expunge"], [b"1"])
            self.assertIn(b'(\\HasChildren) "/" "Work"', results["list"])
            self.assertEqual(results["copy"][0], "OK")
            self.assertEqual(results["status"], [b'"Work/Old" (MESSAGES 3 UNSEEN 2)'])

        return threads.deferToThread(talk).addCallback(check)

    def test_bad_password(self):

        def talk():
            client = imaplib.IMAP4("127.0.0.1", self.port_number)
            try:
                client.login("alice", "nope")
            except imaplib.IMAP4.error as error:
                return str(error)
            return "logged in"

        return threads.deferToThread(talk).addCallback(
            lambda text: self.assertIn("AUTHENTICATIONFAILED", text))


class IMAPClientTests(ClientTestCase):
    def test_imapclient(self):
        try:
            import imapclient
        except ImportError:
            raise SkipTest("imapclient is not installed") from None
        self.mailbox().append(message("Hello"))

        def talk():
            client = imapclient.IMAPClient("127.0.0.1", port=self.port_number, ssl=False)
            client.login("alice", "secret")
            results = {"caps": client.capabilities()}
            results["select"] = client.select_folder("INBOX")
            results["fetch"] = client.fetch([1], ["FLAGS", "RFC822.SIZE"])
            client.add_flags([1], ["$Work"])
            results["flags"] = client.get_flags([1])
            results["move"] = client.move([1], "Archive")
            results["folders"] = client.list_folders()
            results["special"] = client.find_special_folder(b"\\Sent")
            client.idle()
            results["idle"] = client.idle_check(timeout=0.2)
            client.idle_done()
            results["ns"] = client.namespace()
            client.logout()
            return results

        def check(results):
            self.assertIn(b"MOVE", results["caps"])
            self.assertEqual(results["select"][b"EXISTS"], 1)
            self.assertEqual(results["flags"], {1: (b"\\Recent", b"$Work")})
            self.assertIn("Sent", results["special"])
            self.assertEqual(results["ns"].personal, (("", "/"),))
            self.assertEqual(self.mailbox("Archive").status().messages, 1)

        return threads.deferToThread(talk).addCallback(check)


class BinaryClientTests(ClientTestCase):
    """RFC 3516 through real clients: imapclient's FETCH BINARY, imaplib's literal8."""

    def test_fetch_binary(self):
        try:
            import imapclient
        except ImportError:
            raise SkipTest("imapclient is not installed") from None
        payload = bytes(range(256))
        self.mailbox().append(
            b"From: carol@example.org\r\nSubject: attachment\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"caf=C3=A9\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(payload).replace(b"\n", b"\r\n") + b"--b--\r\n")

        def talk():
            client = imapclient.IMAPClient("127.0.0.1", port=self.port_number, ssl=False)
            client.login("alice", "secret")
            results = {"caps": client.capabilities()}
            client.select_folder("INBOX")
            results["fetch"] = client.fetch([1], ["BINARY.PEEK[1]", "BINARY.SIZE[2]"])
            client.logout()
            # imapclient 4.1 does not read a literal8 (it gives b"~{256}"); imaplib frames it.
            plain = imaplib.IMAP4("127.0.0.1", self.port_number)
            plain.login("alice", "secret")
            plain.select("INBOX")
            results["literal8"] = plain.fetch("1", "(BINARY.PEEK[2])")[1]
            plain.logout()
            return results

        def check(results):
            self.assertIn(b"BINARY", results["caps"])
            self.assertEqual(results["fetch"][1][b"BINARY[1]"], "café".encode())
            self.assertEqual(results["fetch"][1][b"BINARY.SIZE[2]"], 256)
            self.assertEqual(results["literal8"][0], (b"1 (BINARY[2] ~{256}", payload))

        return threads.deferToThread(talk).addCallback(check)


class Utf8ClientTests(ClientTestCase):
    def test_imaplib_utf8_accept(self):
        """Python's imaplib switches to UTF-8 commands once ENABLE UTF8=ACCEPT succeeds."""

        def talk():
            client = imaplib.IMAP4("127.0.0.1", self.port_number)
            client.login("alice", "secret")
            results = {"enable": client.enable("UTF8=ACCEPT"), "utf8": client.utf8_enabled}
            results["create"] = client.create('"Café"')
            results["list"] = client.list('""', '"Caf*"')
            results["search"] = (client.select('"Café"'), client.search(None, "SUBJECT", '"é"'))
            client.logout()
            return results

        def check(results):
            self.assertEqual(results["enable"][0], "OK")
            self.assertTrue(results["utf8"])
            self.assertEqual(results["create"][0], "OK")
            self.assertEqual(results["list"], ("OK", ['(\\HasNoChildren) "/" "Café"'.encode()]))
            self.assertEqual(results["search"][1], ("OK", [b""]))
            self.assertTrue(self.context.store.mailboxes("alice").exists("Café"))

        return threads.deferToThread(talk).addCallback(check)


class MbsyncTests(ClientTestCase):
    """mbsync (isync) syncing a tree of folders both ways, with COMPRESS=DEFLATE."""

    def _config(self, root: Path) -> Path:
        local = root / "local"
        local.mkdir(exist_ok=True)
        config = root / "mbsyncrc"
        config.write_text(textwrap.dedent(f"""\
            IMAPAccount test
            Host 127.0.0.1
            Port {self.port_number}
            User alice
            Pass secret
            SSLType None
            AuthMechs LOGIN

            IMAPStore remote
            Account test

            MaildirStore local
            Path {local}/
            Inbox {local}/INBOX
            SubFolders Verbatim

            Channel sync
            Far :remote:
            Near :local:
            Patterns *
            Create Both
            Remove Both
            Expunge Both
            SyncState *
            """))
        return config

    def _mbsync(self, config: Path):
        def run():
            return subprocess.run(["mbsync", "-c", str(config), "-a", "-V"], check=False, capture_output=True, text=True, timeout=60)

        return threads.deferToThread(run)

    def test_two_way_sync(self):
        if shutil.which("mbsync") is None:
            raise SkipTest("mbsync (isync) is not installed")
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        config = self._config(root)
        local = root / "local"
        mailboxes = self.context.store.mailboxes("alice")
        mailboxes.create("Projects/Alpha")
        inbox = self.mailbox()
        for n in range(3):
            inbox.append(message(f"Inbox {n}"))
        self.mailbox("Projects/Alpha").append(message("Alpha"))

        def first(result):
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            # mbsync (isync 1.4 and later) turns RFC 4978 COMPRESS on when it is offered.
            self.assertTrue(self.sessions and all(session.compressed for session in self.sessions))
            self.assertEqual(len(os.listdir(local / "INBOX" / "cur")) + len(os.listdir(local / "INBOX" / "new")), 3)
            self.assertTrue((local / "Projects" / "Alpha").is_dir())
            # Changes on both sides: a new local folder with a message, a
            # local deletion, a server-side flag, a server-side new message.
            new_dir = local / "Notes"
            for sub in ("cur", "new", "tmp"):
                (new_dir / sub).mkdir(parents=True)
            (new_dir / "new" / "1.local:2,").write_bytes(message("Local note"))
            victim = sorted((local / "INBOX" / "new").iterdir()) + sorted((local / "INBOX" / "cur").iterdir())
            victim[0].rename(victim[0].with_name(victim[0].name.split(":")[0] + ":2,T"))
            inbox.append(message("Late arrival"))
            uid = inbox.messages()[-2].uid
            from cyrusmail.store.records import Flag, FlagChange

            inbox.set_flags([uid], FlagChange.ADD, Flag.FLAGGED)
            return self._mbsync(config)

        def second(result):
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertTrue(mailboxes.exists("Notes"))
            self.assertEqual(self.mailbox("Notes").status().messages, 1)
            self.assertEqual(inbox.status().messages, 3)  # one deleted, one arrived
            flagged = [name for name in os.listdir(local / "INBOX" / "cur") if "F" in name.split(",")[-1]]
            self.assertEqual(len(flagged), 1)
            return self._mbsync(config)

        def third(result):
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            mailboxes.rename("Projects/Alpha", "Projects/Beta")
            return self._mbsync(config)

        def snapshot():
            server = {}
            for listing in mailboxes.list("*"):
                if MailboxAttribute.NOSELECT in listing.attributes:
                    continue
                status = mailboxes.status(listing.name)
                server[listing.name] = (status.messages, status.uid_next, status.highest_modseq)
            files = sorted(str(path.relative_to(local)) for path in local.rglob("*") if path.is_file()
                           and ".mbsyncstate" not in path.name and ".uidvalidity" not in path.name)
            return server, files

        def fourth(result):
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertTrue((local / "Projects" / "Beta").is_dir())
            self.before = snapshot()
            return self._mbsync(config)

        def fifth(result):
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            # A run with nothing to do changes nothing on either side.
            self.assertEqual(snapshot(), self.before)

        d = self._mbsync(config)
        for step in (first, second, third, fourth, fifth):
            d.addCallback(step)
        return d


class FetchmailTests(ClientTestCase):
    def test_fetchmail_over_imap(self):
        if shutil.which("fetchmail") is None:
            raise SkipTest("fetchmail is not installed")
        inbox = self.mailbox()
        for n in range(2):
            inbox.append(message(f"Fetch {n}"))
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        out = root / "delivered"
        rc = root / "fetchmailrc"
        rc.write_text(
            f'poll 127.0.0.1 service {self.port_number} protocol IMAP user "alice" password "secret" '
            f'sslproto "" mda "cat >> {out}" fetchall keep\n'
        )
        rc.chmod(0o600)

        def run():
            env = dict(os.environ, HOME=str(root), FETCHMAILHOME=str(root))
            return subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "-v", "--nosyslog"],
                                  check=False, capture_output=True, text=True, timeout=60, env=env)

        def check(result):
            self.assertIn(result.returncode, (0,), result.stdout + result.stderr)
            data = out.read_bytes()
            self.assertIn(b"Subject: Fetch 0", data)
            self.assertIn(b"Subject: Fetch 1", data)

        return threads.deferToThread(run).addCallback(check)


class IMAPClientQresyncTests(ClientTestCase):
    """imapclient resynchronising with QRESYNC after another session's expunges and flag changes."""

    def test_qresync_resync_after_another_sessions_changes(self):
        try:
            import imapclient
        except ImportError:
            raise SkipTest("imapclient is not installed") from None
        for number in range(1, 6):
            self.mailbox().append(message(f"Message {number}"))

        def connect():
            client = imapclient.IMAPClient("127.0.0.1", port=self.port_number, ssl=False)
            client.login("alice", "secret")
            return client

        def talk():
            results = {}
            first = connect()
            results["enabled"] = first.enable("QRESYNC")
            selected = first.select_folder("INBOX")
            uid_validity, modseq = selected[b"UIDVALIDITY"], selected[b"HIGHESTMODSEQ"]
            results["cached"] = first.fetch(first.search("ALL"), ["FLAGS"])
            first.idle()
            other = connect()  # another session flags 2 and expunges 3 and 4 while the first idles
            other.select_folder("INBOX")
            other.add_flags([2], [b"\\Flagged"])
            other.delete_messages([3, 4])
            other.expunge()
            other.logout()
            heard, deadline = [], time.monotonic() + 30  # a hang check only: the VANISHED comes at once
            while not any(item[0] == b"VANISHED" for item in heard) and time.monotonic() < deadline:
                heard += first.idle_check(timeout=1)
            results["idle"] = heard
            first.idle_done()
            first.logout()

            again = connect()  # a restart: resync from the cached UIDVALIDITY and HIGHESTMODSEQ
            again.enable("QRESYNC")
            imap = again._imap  # imapclient has no SELECT parameters; imaplib sends it
            typ, _ = imap._simple_command("SELECT", "INBOX", f"(QRESYNC ({uid_validity} {modseq} 1:5))")
            imap.state = "SELECTED"
            results["select"] = typ
            results["select_vanished"] = imap.untagged_responses.pop("VANISHED", [])
            results["select_fetch"] = imap.untagged_responses.pop("FETCH", [])
            results["changed"] = again.fetch([1, 2, 3, 4, 5], ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}", "VANISHED"])
            results["fetch_vanished"] = imap.untagged_responses.pop("VANISHED", [])
            again.logout()
            return results

        def check(results):
            self.assertEqual(results["enabled"], [b"QRESYNC"])
            self.assertEqual(sorted(results["cached"]), [1, 2, 3, 4, 5])
            idle = results["idle"]  # UID and MODSEQ in every FETCH; VANISHED, not EXPUNGE
            self.assertIn((2, b"FETCH", (b"UID", 2, b"FLAGS", (b"\\Flagged", b"\\Recent"), b"MODSEQ", (7,))), idle)
            self.assertIn((b"VANISHED", b"3:4"), idle)
            self.assertNotIn(b"EXPUNGE", [item[1] for item in idle])
            self.assertEqual(results["select"], "OK")
            self.assertEqual(results["select_vanished"], [b"(EARLIER) 3:4"])
            self.assertEqual(len(results["select_fetch"]), 1)
            self.assertRegex(results["select_fetch"][0], rb"^2 \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)$")
            self.assertEqual({uid: data[b"FLAGS"] for uid, data in results["changed"].items()},
                             {2: (b"\\Flagged",)})
            self.assertEqual(results["fetch_vanished"], [b"(EARLIER) 3:4"])

        return threads.deferToThread(talk).addCallback(check)
