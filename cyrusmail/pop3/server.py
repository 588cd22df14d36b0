"""The POP3 factory the service registry names (``pop3`` and ``pop3s``).

For ``pop3s`` the service builder wraps this factory in TLS, so the
sessions see an ISSLTransport from the start and offer no STLS. Both
factories share one registry of maildrop locks, kept in ``context.extras``.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import ServerFactory

from cyrusmail.pop3 import wire
from cyrusmail.pop3.locks import MaildropLocks
from cyrusmail.pop3.session import IDLE_TIMEOUT, POP3Session
from cyrusmail.protocols import ServerContext

LOCKS_KEY = "pop3.locks"


def shared_locks(context: ServerContext) -> MaildropLocks:
    """The one lock registry of this process's POP3 services (``pop3`` and ``pop3s`` alike)."""
    locks = context.extras.get(LOCKS_KEY)
    if locks is None:
        locks = context.extras[LOCKS_KEY] = MaildropLocks.for_store(context.store)
    return locks


class POP3Factory(ServerFactory):
    """Makes one :class:`POP3Session` per connection."""

    noisy = False  # connections are logged by the session, in cyrusmail's own words

    def __init__(self, context: ServerContext, service: str, locks: MaildropLocks | None = None,
                 idle_timeout: float = IDLE_TIMEOUT):
        self.context = context
        self.service = service
        self.locks = locks if locks is not None else shared_locks(context)
        self.idle_timeout = idle_timeout
        if context.reactor is not None:
            self.reactor = context.reactor
        else:
            from twisted.internet import reactor

            self.reactor = reactor

    def buildProtocol(self, addr) -> POP3Session:
        session = POP3Session(self.context, self.service, self.locks, self.reactor, self.idle_timeout)
        session.factory = self
        return session

    def refusal(self, text: str) -> bytes:
        """The greeting of a connection over a cap (RFC 3206 SYS/TEMP)."""
        return wire.err(text, wire.SYS_TEMP)


def make_factory(context: ServerContext, service: str) -> IProtocolFactory:
    """The registry's builder: a POP3 factory over ``context``."""
    return POP3Factory(context, service)
