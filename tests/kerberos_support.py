"""A throwaway MIT Kerberos realm on loopback, and a python-gssapi client for the GSSAPI tests.

``KDC(testcase)`` makes the realm ``CYRUSMAIL.TEST`` in a temporary folder
(its own ``krb5.conf`` and ``kdc.conf``, a database made with ``kdb5_util``,
principals added with ``kadmin.local``), starts ``krb5kdc`` on a free
loopback port, points this process's ``KRB5_CONFIG`` and ``KRB5CCNAME`` at
it, and undoes all of that when the test ends.  It has the users
``alice`` and ``bob``, ``carol/admin`` and the service principals
``imap/localhost``, ``pop/localhost`` and ``smtp/localhost``, whose keys are
in :attr:`KDC.keytab`.  ``kdc.kinit("alice")`` gets a ticket as a person
would (``kinit``, the password on standard input).

:class:`SASLClient` is the client side of RFC 4752 over python-gssapi, as
a mail client does it; it can be told to misbehave.

The tests skip, saying what to install, when the MIT KDC or python-gssapi
is missing; CI installs both (``.ci/run``), and there a missing one fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest

REALM = "CYRUSMAIL.TEST"
PASSWORDS = {"alice": "alice-kerberos-pw", "bob": "bob-kerberos-pw", "carol/admin": "carol-kerberos-pw"}
SERVICES = ("imap", "pop", "smtp")
#: Config sections for the servers' tests: enabled (the keytab serves only enabled protocols), but
#: these listeners are never bound (the tests use StringTransports or listen on port 0 themselves).
SECTIONS = {name: {"enabled": "yes", "listen": f"tcp:{port}:interface=127.0.0.1"}
            for name, port in (("imap", 1143), ("pop3", 1110), ("submission", 1587))}
#: How long the KDC may take to start, and a command to finish: hang checks only.
WAIT = 30


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":  # .ci/run installs it: a skip there would hide a broken install
        raise AssertionError(f"{what} (CI installs it in .ci/run)")
    raise SkipTest(what)


def need_kerberos() -> None:
    """Skip (fail on CI) unless python-gssapi and the MIT KDC tools are installed."""
    from cyrusmail.auth import kerberos

    if not kerberos.available():
        _missing("python-gssapi is not installed (apt-get install libkrb5-dev; pip install gssapi)")
    for tool, package in (("krb5kdc", "krb5-kdc"), ("kdb5_util", "krb5-kdc"), ("kadmin.local", "krb5-admin-server"),
                          ("kinit", "krb5-user")):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            _missing(f"{tool} is not installed (apt-get install -y {package})")


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class KDC:
    """The realm, its running KDC and the environment pointing at it (see the module docstring)."""

    def __init__(self, testcase):
        need_kerberos()
        self.folder = Path(testcase.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.port = free_port()
        self.keytab = self.folder / "server.keytab"
        self.config = self.folder / "krb5.conf"
        self.ccache = self.folder / "ccache"
        self._write_profiles()
        self.env = {"KRB5_CONFIG": str(self.config), "KRB5_KDC_PROFILE": str(self.folder / "kdc.conf"),
                    "KRB5CCNAME": f"FILE:{self.ccache}"}
        self._set_environment(testcase)
        self._run(_tool("kdb5_util"), "create", "-s", "-r", REALM, "-P", "master-key-pw")
        for name, password in PASSWORDS.items():
            self.kadmin(f"addprinc -pw {password} {name}")
        for service in SERVICES:
            self.kadmin(f"addprinc -randkey {service}/localhost")
        self.kadmin(f"ktadd -k {self.keytab} " + " ".join(f"{service}/localhost" for service in SERVICES))
        self._start(testcase)

    def _write_profiles(self) -> None:
        self.config.write_text(
            "[libdefaults]\n"
            f"  default_realm = {REALM}\n"
            "  dns_lookup_kdc = false\n  dns_lookup_realm = false\n  rdns = false\n"
            "  dns_canonicalize_hostname = false\n  udp_preference_limit = 1\n"
            f"[realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{self.port}\n  }}\n"
            f"[domain_realm]\n  localhost = {REALM}\n")
        (self.folder / "kdc.conf").write_text(
            f"[kdcdefaults]\n  kdc_listen = 127.0.0.1:{self.port}\n  kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            f"[realms]\n  {REALM} = {{\n"
            f"    database_name = {self.folder / 'principal'}\n"
            f"    key_stash_file = {self.folder / 'stash'}\n"
            f"    acl_file = {self.folder / 'kadm5.acl'}\n  }}\n"
            f"[logging]\n  kdc = FILE:{self.folder / 'kdc.log'}\n")

    def _set_environment(self, testcase) -> None:
        saved = {name: os.environ.get(name) for name in self.env}

        def restore() -> None:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

        os.environ.update(self.env)
        testcase.addCleanup(restore)

    def _run(self, *command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(command, env={**os.environ, **self.env}, input=stdin, capture_output=True, text=True,
                              timeout=WAIT, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")
        return done

    def kadmin(self, query: str) -> None:
        self._run(_tool("kadmin.local"), "-r", REALM, "-q", query)

    def _start(self, testcase) -> None:
        self.process = subprocess.Popen([_tool("krb5kdc"), "-n", "-r", REALM], env={**os.environ, **self.env},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        testcase.addCleanup(self.stop)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"krb5kdc did not start: {self.log()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.folder / "kdc.log"
        return path.read_text() if path.exists() else ""

    def kinit(self, name: str = "alice", password: str | None = None) -> None:
        """Get a ticket-granting ticket into this realm's credential cache, as ``kinit`` does."""
        self._run(_tool("kinit"), f"{name}@{REALM}", stdin=(password or PASSWORDS[name]) + "\n")

    def kdestroy(self) -> None:
        if self.ccache.exists():
            self.ccache.unlink()


class SASLClient:
    """The client side of GSSAPI SASL (RFC 4752 section 3.1) for ``service@host``.

    ``authzid`` goes in the last message; ``layer`` and ``max_size`` are
    what the client chooses (a well-behaved one: 1 and 0); ``mutual``
    asks for mutual authentication (the server then sends its AP-REP
    first).  :meth:`respond` takes a server challenge (octets, or None to
    begin) and gives the response octets.
    """

    def __init__(self, service: str, host: str = "localhost", authzid: str = "", layer: int = 1, max_size: int = 0,
                 mutual: bool = True):
        import gssapi

        flags = gssapi.RequirementFlag.integrity
        if mutual:
            flags |= gssapi.RequirementFlag.mutual_authentication
        self.context = gssapi.SecurityContext(
            name=gssapi.Name(f"{service}@{host}", gssapi.NameType.hostbased_service),
            mech=gssapi.MechType.kerberos, usage="initiate", flags=flags)
        self.authzid, self.layer, self.max_size = authzid, layer, max_size
        self.server_offer: bytes | None = None

    def first(self) -> bytes:
        """The initial response: the AP-REQ."""
        return self.context.step()

    def respond(self, challenge: bytes) -> bytes:
        if not self.context.complete:
            return self.context.step(challenge) or b""
        self.server_offer = self.context.unwrap(challenge).message
        choice = bytes([self.layer]) + self.max_size.to_bytes(3, "big") + self.authzid.encode()
        return self.context.wrap(choice, False).message
