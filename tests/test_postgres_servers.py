"""Two real ``twistd`` servers on one PostgreSQL database ([store] backend = postgresql)."""

from __future__ import annotations

import imaplib
import io
import os
import poplib
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial import unittest

from cyrusmail.admin.main import main as admin_main
from cyrusmail.config import SERVICES
from tests import postgres_support
from tests.test_twistd import (
    ROOT,
    TWISTD,
    Line,
    free_ports,
    greeting,
    listening,
    stop_server,
)
from tests.test_workers import Controller, Smarthost

MESSAGE = b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: across\r\n\r\nhello from the other server\r\n"


class TwoServersBase(unittest.TestCase):
    """Two servers' configs on one fresh database schema, and alice, known to both."""

    skip = postgres_support.skip_reason()

    def setUp(self):
        self.dsn, schema = postgres_support.fresh_dsn()
        self.addCleanup(postgres_support.drop_schema, schema)
        self.folder = Path(tempfile.mkdtemp(prefix="cm-pg-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        ports = free_ports(4)
        self.ports, self.pop3_ports = ports[:2], ports[2:]
        self.configs = [self.write_config(n, port) for n, port in enumerate(self.ports)]
        self.admin(self.configs[0], "user", "add", "alice", "--password", "secret")  # known to both: one database

    def write_config(self, n: int, port: int, store: str = "", *, extra: str = "",
                     submission: int | None = None) -> Path:
        """Server ``n``'s config: ``store`` goes in its [store] section, ``extra`` after it."""
        data = self.folder / f"data{n}"
        lines = [f"[server]\ndata = {data}\nhostname = mail{n}.example.org\ndomains = example.org\n",
                 f"[store]\nbackend = postgresql\ndsn = {self.dsn}\n{store}", extra]
        for name in SERVICES:
            if name in ("imap", "pop3"):
                listen = port if name == "imap" else self.pop3_ports[n]
                lines.append(f"[{name}]\nlisten = tcp:{listen}:interface=127.0.0.1\n")
            elif name == "submission" and submission is not None:
                lines.append(f"[submission]\nlisten = tcp:{submission}:interface=127.0.0.1\n")
            else:
                lines.append(f"[{name}]\nenabled = no\n")
        path = self.folder / f"server{n}.conf"
        path.write_text("\n".join(lines))
        return path

    def admin(self, config: Path, *argv: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        code = admin_main(["--config", str(config), *argv], out, err)
        self.assertEqual(code, 0, err.getvalue())
        return out.getvalue()

    def serve(self, n: int) -> subprocess.Popen:
        process = subprocess.Popen([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(self.configs[n])],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 60  # a hang check only
        while not listening(self.ports[n]) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        self.assertTrue(greeting(self.ports[n]).startswith(b"* OK"), "the server does not serve")
        return process

    def login(self, n: int) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.ports[n], timeout=60)
        self.addCleanup(lambda: client.state != "LOGOUT" and client.shutdown())
        client.login("alice", "secret")
        return client



class TwoServersTests(TwoServersBase):
    """Any server serves any user: what one stores, the other reads."""

    def test_a_message_appended_through_one_server_is_read_through_the_other(self):
        servers = [self.serve(0), self.serve(1)]
        first, second = self.login(0), self.login(1)
        status, data = first.append("INBOX", r"(\Flagged)", None, MESSAGE)
        self.assertEqual(status, "OK", data)
        self.assertEqual(second.status("INBOX", "(MESSAGES UIDNEXT)"),
                         ("OK", [b'"INBOX" (MESSAGES 1 UIDNEXT 2)']))
        second.select("INBOX")
        status, data = second.uid("FETCH", "1", "(FLAGS BODY.PEEK[])")
        self.assertEqual(status, "OK")
        self.assertIn(b"\\Flagged", data[0][0])
        self.assertEqual(data[0][1], MESSAGE)
        status, data = second.append("INBOX", None, None, MESSAGE)  # the other way: the next UID
        self.assertIn(b"APPENDUID", data[0])
        self.assertEqual(first.status("INBOX", "(MESSAGES UIDNEXT)"), ("OK", [b'"INBOX" (MESSAGES 2 UIDNEXT 3)']))
        for client in (first, second):
            client.logout()
        for server in servers:
            stop_server(self, server)

    def test_bodies_in_a_shared_folder_appended_through_one_server_are_fetched_through_the_other(self):
        blobs = self.folder / "blobs"  # the folder both servers mount
        blobs.mkdir(mode=0o700)
        self.configs = [self.write_config(n, port, f"blobs = {blobs}\n") for n, port in enumerate(self.ports)]
        servers = [self.serve(0), self.serve(1)]
        first, second = self.login(0), self.login(1)
        self.assertEqual(first.append("INBOX", None, None, MESSAGE)[0], "OK")
        (body,) = [path for path in blobs.rglob("*") if path.is_file()]
        self.assertEqual(body.read_bytes(), MESSAGE)
        second.select("INBOX", readonly=True)
        _, data = second.uid("FETCH", "1", "(BODY.PEEK[] BODY.PEEK[]<5.10>)")
        self.assertEqual(data[0][1], MESSAGE)
        self.assertEqual(data[1][1], MESSAGE[5:15])
        for client in (first, second):
            client.logout()
        for server in servers:
            stop_server(self, server)

    def test_bodies_in_an_s3_bucket_appended_through_one_server_are_fetched_through_the_other(self):
        from tests.test_store_postgresql import _S3Bucket

        bucket = _S3Bucket.make_bucket(self)  # SkipTest without boto3 and moto; the servers inherit its environment
        self.configs = [self.write_config(n, port, f"blobs = s3://{bucket}/mail\n") for n, port in enumerate(self.ports)]
        servers = [self.serve(0), self.serve(1)]
        first, second = self.login(0), self.login(1)
        self.assertEqual(first.append("INBOX", None, None, MESSAGE)[0], "OK")
        self.assertEqual(list(_S3Bucket.objects(self, bucket).values()), [MESSAGE])
        second.select("INBOX", readonly=True)
        _, data = second.uid("FETCH", "1", "(BODY.PEEK[] BODY.PEEK[]<5.10>)")
        self.assertEqual((data[0][1], data[1][1]), (MESSAGE, MESSAGE[5:15]))
        for client in (first, second):
            client.logout()
        for server in servers:
            stop_server(self, server)

    def test_idle_on_one_server_hears_an_append_through_the_other(self):
        """Pushed by NOTIFY at once (IDLE's poll every few seconds would also find it, later)."""
        servers = [self.serve(0), self.serve(1)]
        idler = Line(self.ports[1])
        self.addCleanup(idler.close)
        for line in ("a LOGIN alice secret", "b SELECT INBOX"):
            self.assertRegex(self.read_until_tagged(idler, line), r"^[ab] OK")
        idler.sock.sendall(b"c IDLE\r\n")
        self.assertTrue(idler.read().startswith("+ "))
        writer = self.login(0)
        self.assertEqual(writer.append("INBOX", None, None, MESSAGE)[0], "OK")
        self.assertEqual(idler.read(), "* 1 EXISTS\r\n")  # the socket's 30 s timeout is the hang check
        idler.sock.sendall(b"DONE\r\n")
        self.assertRegex(self.read_until_tagged(idler, None, "c"), r"^c OK")
        writer.logout()
        idler.close()
        for server in servers:
            stop_server(self, server)

    def test_deleting_a_user_ends_their_sessions_on_every_server(self):
        self.ended_on_both("user alice deleted; 1 live sessions ended\n", "* BYE Account removed\r\n",
                           "user", "delete", "alice", "--yes")

    def test_kick_ends_the_users_sessions_on_every_server(self):
        self.ended_on_both("1 sessions of alice ended\n", "* BYE Disconnected by the administrator\r\n",
                           "kick", "alice")

    def ended_on_both(self, said: str, goodbye: str, *argv: str) -> None:
        """alice logged in on both servers; the admin command ``argv`` through server 0 ends both sessions."""
        servers = [self.serve(0), self.serve(1)]
        sessions = [Line(port) for port in self.ports]
        for session in sessions:
            self.addCleanup(session.close)
            self.assertRegex(self.read_until_tagged(session, "a LOGIN alice secret"), r"^a OK")
        # The admin reaches server 0's control socket (its count); server 1 hears it from the database.
        self.assertEqual(self.admin(self.configs[0], *argv), said)
        for session in sessions:
            self.assertEqual(session.read(), goodbye)  # the socket's timeout: the hang check
        for server in servers:
            stop_server(self, server)

    def test_kill_9_of_one_server_loses_nothing_it_acknowledged(self):
        self.kill_9_loses_nothing()

    def test_kill_9_of_one_server_loses_no_body_in_a_shared_folder(self):
        blobs = self.folder / "blobs"
        blobs.mkdir(mode=0o700)
        self.configs = [self.write_config(n, port, f"blobs = {blobs}\n") for n, port in enumerate(self.ports)]
        self.kill_9_loses_nothing()
        self.assertEqual(len([path for path in blobs.rglob("*") if path.is_file()]), 5)

    def kill_9_loses_nothing(self) -> None:
        first, second = self.serve(0), self.serve(1)
        writer = self.login(0)
        for n in range(5):
            self.assertEqual(writer.append("INBOX", None, None, MESSAGE + b"%d\r\n" % n)[0], "OK")
        first.kill()  # SIGKILL: no goodbye, no close of its store
        first.wait(timeout=60)
        reader = self.login(1)
        self.assertEqual(reader.status("INBOX", "(MESSAGES UIDNEXT)"), ("OK", [b'"INBOX" (MESSAGES 5 UIDNEXT 6)']))
        reader.select("INBOX", readonly=True)
        _, data = reader.uid("FETCH", "5", "(BODY.PEEK[])")
        self.assertEqual(data[0][1], MESSAGE + b"4\r\n")
        restarted = self.serve(0)  # the killed server starts again on the same database
        self.assertEqual(self.login(0).status("INBOX", "(MESSAGES)"), ("OK", [b'"INBOX" (MESSAGES 5)']))
        reader.logout()
        for server in (second, restarted):
            stop_server(self, server)

    def pop3_login(self, n: int) -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", self.pop3_ports[n], timeout=60)
        self.addCleanup(client.close)
        client.user("alice")
        client.pass_("secret")
        return client

    def test_one_pop3_session_per_maildrop_across_servers(self):
        """RFC 1939 section 8: the second session, on the other server, gets -ERR [IN-USE];
        the lock goes with the server holding it, kill -9 included."""
        first, second = self.serve(0), self.serve(1)
        self.pop3_login(0)
        with self.assertRaises(poplib.error_proto) as refused:
            self.pop3_login(1)
        self.assertIn(b"[IN-USE]", refused.exception.args[0])
        first.kill()  # SIGKILL: its connection to PostgreSQL ends, and the advisory lock with it
        first.wait(timeout=60)
        deadline = time.monotonic() + 60  # a hang check only: until PostgreSQL has noticed
        while True:
            try:
                client = self.pop3_login(1)
                break
            except poplib.error_proto as error:
                if b"[IN-USE]" not in error.args[0] or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.assertEqual(client.stat(), (0, 0))
        client.quit()
        stop_server(self, second)

    @staticmethod
    def read_until_tagged(client: Line, line: str | None, tag: str | None = None) -> str:
        """Send ``line`` (if any) and read to the tagged reply of ``tag`` (its first word)."""
        if line is not None:
            client.sock.sendall(line.encode() + b"\r\n")
            tag = line.split()[0]
        while True:
            reply = client.read()
            if not reply or reply.startswith(f"{tag} "):
                return reply


class StoreConfigTests(unittest.TestCase):
    """[store]: a backend name, and a DSN the server can reach, or a one-line refusal."""

    def setUp(self):
        self.folder = Path(tempfile.mkdtemp(prefix="cm-pg-"))
        self.addCleanup(shutil.rmtree, self.folder, True)

    def write(self, store: str) -> Path:
        (port,) = free_ports(1)
        lines = [f"[server]\ndata = {self.folder / 'data'}\nhostname = mail.example.org\n", store]
        lines += [f"[imap]\nlisten = tcp:{port}:interface=127.0.0.1\n" if name == "imap"
                  else f"[{name}]\nenabled = no\n" for name in SERVICES]
        path = self.folder / "cyrusmail.conf"
        path.write_text("\n".join(lines))
        return path

    def test_backend_postgresql_without_a_dsn_is_a_config_error(self):
        from cyrusmail.config import ConfigError, load

        with self.assertRaises(ConfigError) as caught:
            load(self.write("[store]\nbackend = postgresql\n"))
        self.assertIn("[store] dsn: is required with backend = postgresql", str(caught.exception))

    def test_an_unknown_backend_is_a_config_error(self):
        from cyrusmail.config import ConfigError, load

        with self.assertRaises(ConfigError) as caught:
            load(self.write("[store]\nbackend = mysql\n"))
        self.assertIn("expected one of embedded, postgresql, got 'mysql'", str(caught.exception))

    def test_the_embedded_store_stays_the_default(self):
        from cyrusmail.config import load

        self.assertEqual(load(self.write(""))["store"]["backend"], "embedded")

    def test_blobs_is_database_an_absolute_folder_or_an_s3_bucket(self):
        from cyrusmail.config import ConfigError, load

        def blobs(value: str) -> str:
            return load(self.write(f"[store]\nbackend = postgresql\ndsn = x\n{value}"))["store"]["blobs"]

        self.assertEqual(blobs(""), "database")
        self.assertEqual(blobs("blobs = /srv/mail//blobs/\n"), "/srv/mail/blobs")
        self.assertEqual(blobs("blobs = s3://mail-bodies/site-1/\n"), "s3://mail-bodies/site-1")
        for wrong in ("shared/mail", "s3://Not_A_Bucket"):
            with self.assertRaises(ConfigError) as caught:
                blobs(f"blobs = {wrong}\n")
            self.assertIn("[store] blobs: expected ", str(caught.exception))

    def test_an_s3_store_that_does_not_answer_stops_the_start_with_one_line(self):
        if postgres_support.skip_reason() and "psycopg" in postgres_support.skip_reason():
            raise unittest.SkipTest(postgres_support.skip_reason())
        (nobody_listens,) = free_ports(1)
        config = self.write("[store]\nbackend = postgresql\ndsn = host=127.0.0.1 user=x dbname=x\n"
                            "blobs = s3://mail-bodies/site-1\n")
        env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{nobody_listens}", AWS_ACCESS_KEY_ID="x",
                   AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="1")
        result = subprocess.run([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(config)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env)
        self.assertEqual(result.returncode, 2, result.stderr + result.stdout)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        try:
            import boto3  # noqa: F401
        except ImportError:
            self.assertEqual(result.stderr, "cyrusmail: [store] blobs = s3://... needs boto3: pip install 'cyrusmail[s3]'\n")
        else:
            self.assertIn("cyrusmail: [store] blobs: cannot reach s3://mail-bodies/site-1: ", result.stderr)

    def test_a_blobs_folder_that_is_not_there_stops_the_start_with_one_line(self):
        if postgres_support.skip_reason() and "psycopg" in postgres_support.skip_reason():
            raise unittest.SkipTest(postgres_support.skip_reason())
        missing = self.folder / "not-mounted"
        config = self.write(f"[store]\nbackend = postgresql\ndsn = host=127.0.0.1 user=x dbname=x\nblobs = {missing}\n")
        result = subprocess.run([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(config)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        self.assertEqual(result.returncode, 2, result.stderr + result.stdout)
        self.assertEqual(result.stderr, f"cyrusmail: [store] blobs: {missing} is not a folder this server can write to\n")

    def test_a_database_that_cannot_be_reached_stops_the_start_with_one_line(self):
        if postgres_support.skip_reason() and "psycopg" in postgres_support.skip_reason():
            raise unittest.SkipTest(postgres_support.skip_reason())
        (nobody_listens,) = free_ports(1)
        config = self.write(f"[store]\nbackend = postgresql\n"
                            f"dsn = host=127.0.0.1 port={nobody_listens} user=x dbname=x connect_timeout=10\n")
        result = subprocess.run([*TWISTD, "--pidfile=", "-n", "cyrusmail", "--config", str(config)],
                                cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        self.assertEqual(result.returncode, 2, result.stderr + result.stdout)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertIn("cyrusmail: [store] dsn: cannot open the PostgreSQL store: ", result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)


class AdminOnPostgresTests(unittest.TestCase):
    """cyrusmail-admin on a server configured with [store] backend = postgresql."""

    skip = postgres_support.skip_reason()

    def setUp(self):
        dsn, schema = postgres_support.fresh_dsn()
        self.dsn = dsn
        self.addCleanup(postgres_support.drop_schema, schema)
        self.folder = folder = Path(tempfile.mkdtemp(prefix="cm-pg-"))
        self.addCleanup(shutil.rmtree, folder, True)
        self.config = folder / "cyrusmail.conf"
        self.config.write_text(f"[server]\ndata = {folder / 'data'}\nhostname = mail.example.org\n"
                               f"[store]\nbackend = postgresql\ndsn = {dsn}\n")

    def run_admin(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = admin_main(["--config", str(self.config), *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    def test_sweep_blobs_removes_old_files_no_message_uses(self):
        blobs = self.config.parent / "blobs"
        blobs.mkdir(mode=0o700)
        self.assertEqual(self.run_admin("sweep-blobs")[2],
                         "cyrusmail-admin: sweep-blobs removes body files of a [store] blobs folder: this server keeps none\n")
        self.config.write_text(self.config.read_text() + f"blobs = {blobs}\n")
        orphan = blobs / "ab" / "cd" / ("abcd" + "0" * 60)
        orphan.parent.mkdir(parents=True)
        orphan.write_bytes(b"left by a crash")
        old = time.time() - 7200
        os.utime(orphan, (old, old))
        code, out, err = self.run_admin("sweep-blobs")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, f"removed 1 body files of {blobs} that no message used (older than an hour)\n")
        self.assertFalse(orphan.exists())

    def test_users_mailboxes_and_quotas(self):
        self.assertEqual(self.run_admin("user", "add", "alice", "--password", "pw")[0], 0)
        self.assertEqual(self.run_admin("mailbox", "create", "alice/Work")[0], 0)
        code, out, err = self.run_admin("mailbox", "list", "alice")
        self.assertEqual(code, 0, err)
        self.assertIn("Work", out)
        self.assertEqual(self.run_admin("quota", "set", "user/alice", "STORAGE=100", "MESSAGE=10")[0], 0)
        code, out, err = self.run_admin("quota", "get", "user/alice")
        self.assertEqual(code, 0, err)
        self.assertIn("user/alice\tMESSAGE\t0 of 10", out)
        self.assertNotIn("drift", out)
        code, out, err = self.run_admin("quota", "list")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("user/alice\tSTORAGE\t0 KiB of 100 KiB", out)
        self.assertEqual(self.run_admin("user", "delete", "alice", "--yes")[0], 0)
        self.assertEqual(self.run_admin("user", "list")[1], "")

    def test_queue_list_flush_and_delete_work_on_the_shared_queue(self):
        from cyrusmail.delivery.queue import QueuedRecipient, QueueEntry
        from cyrusmail.store.postgresql import PostgresStore

        store = PostgresStore(self.dsn, self.folder / "elsewhere")  # another server's, on the same database
        self.addCleanup(store.close)
        spool = store.outbound_spool(300)
        later = time.time() + 3600
        entry = QueueEntry("0123ABC", "alice@example.org", time.time(), [QueuedRecipient("carol@remote.example")],
                           next_attempt=later, size=3, last_error="mx.remote.example: 451 later")
        spool.write(entry, b"x\r\n")
        code, out, err = self.run_admin("queue", "list")
        self.assertEqual(code, 0, err)
        self.assertIn("0123ABC  <alice@example.org>", out)
        self.assertIn("pending   <carol@remote.example>", out)
        self.assertIn("last error: mx.remote.example: 451 later", out)
        self.assertIn("1 messages in the queue", out)
        self.assertEqual(self.run_admin("queue", "flush")[0], 0)
        [flushed] = spool.listing({})
        self.assertLessEqual(flushed.next_attempt, time.time())
        self.assertEqual(self.run_admin("queue", "delete", "0123ABC")[0], 0)
        self.assertEqual(spool.listing({}), [])
        self.assertEqual(store.db.execute("SELECT count(*) FROM blobs").fetchone()[0], 0)  # its reference gone
        code, _, err = self.run_admin("queue", "delete", "0123ABC")
        self.assertEqual(code, 1)
        self.assertIn("no queued message", err)

    def test_reconstruct_is_refused_with_a_reason(self):
        self.run_admin("user", "add", "alice", "--password", "pw")
        code, _, err = self.run_admin("reconstruct", "alice")
        self.assertNotEqual(code, 0)
        self.assertIn("only the embedded store has them", err)
        self.assertNotIn("Traceback", err)


class SharedQueueServersTests(TwoServersBase):
    """The outbound queue is the database's: mail one server accepted, another sends."""

    def test_mail_accepted_by_a_killed_server_is_sent_once_by_the_other(self):
        import psycopg

        if Controller is None:
            raise unittest.SkipTest("aiosmtpd is not installed")
        (smarthost_port, submission_port) = free_ports(2)
        handler = Smarthost()
        controller = Controller(handler, hostname="127.0.0.1", port=smarthost_port)
        controller.start()
        self.addCleanup(controller.stop)
        # Server A's smarthost takes the connection and never greets: A's attempt hangs there,
        # holding its claim, until A is killed.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        lease = "[queue]\nlease = 3s\nretry_initial = 1s\nretry_max = 2s\n"
        self.configs[0] = self.write_config(0, self.ports[0], extra=f"{lease}smarthost = 127.0.0.1:{silent.getsockname()[1]}\n",
                                            submission=submission_port)
        self.configs[1] = self.write_config(1, self.ports[1], extra=f"{lease}smarthost = 127.0.0.1:{smarthost_port}\n")
        first = self.serve(0)
        with smtplib.SMTP("127.0.0.1", submission_port, timeout=60) as client:
            client.ehlo("client.example.org")
            client.login("alice", "secret")
            refused = client.sendmail("alice@example.org", ["carol@remote.example"], OUTBOUND)
        self.assertEqual(refused, {})  # the 250: acknowledged
        with psycopg.connect(self.dsn, autocommit=True) as db:  # A's runner claims it and hangs on its smarthost
            deadline = time.monotonic() + 60  # a hang check only
            while (not db.execute("SELECT count(*) FROM queue WHERE claimed_by IS NOT NULL").fetchone()[0]
                   and time.monotonic() < deadline):
                time.sleep(0.05)
        first.kill()  # SIGKILL mid-attempt: its claim stays until the lease runs out
        first.wait()
        self.assertIn("carol@remote.example", self.admin(self.configs[1], "queue", "list"))
        second = self.serve(1)
        if not handler.arrived.wait(60):  # a hang check only
            self.fail(f"the other server did not send it:\n{stop_server(self, second)}")
        deadline = time.monotonic() + 60  # a hang check only: the runner records the 250 after the smarthost has it
        while "0 messages in the queue" not in self.admin(self.configs[1], "queue", "list") and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn("0 messages in the queue", self.admin(self.configs[1], "queue", "list"))
        self.assertEqual(len(handler.received), 1)
        self.assertIn(b"Subject: outbound", handler.received[0])
        stop_server(self, second)
        self.assertEqual(len(handler.received), 1)  # exactly once


OUTBOUND = b"From: alice@example.org\r\nTo: carol@remote.example\r\nSubject: outbound\r\n\r\nacross servers\r\n"

