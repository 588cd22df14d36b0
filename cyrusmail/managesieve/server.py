"""The ManageSieve factory the service registry names (``managesieve``, port 4190)."""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import ServerFactory

from cyrusmail.managesieve import wire
from cyrusmail.managesieve.session import IDLE_TIMEOUT, ManageSieveSession
from cyrusmail.protocols import ServerContext
from cyrusmail.sieve.scripts import scripts_of


class ManageSieveFactory(ServerFactory):
    """One :class:`ManageSieveSession` per connection."""

    noisy = False

    def __init__(self, context: ServerContext, service: str, clock=None, idle_timeout: float = IDLE_TIMEOUT):
        self.context = context
        self.service = service
        self.scripts = scripts_of(context)
        self.idle_timeout = idle_timeout
        if clock is None:
            clock = context.reactor
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock

    def buildProtocol(self, addr) -> ManageSieveSession:
        session = ManageSieveSession(self.context, self.service, self.scripts, self.clock, self.idle_timeout)
        session.factory = self
        return session

    def refusal(self, text: str) -> bytes:
        """The greeting of a connection over a cap."""
        return wire.response("BYE", text, "TRYLATER")


def make_factory(context: ServerContext, service: str) -> IProtocolFactory:
    """The registry's builder for ``managesieve``."""
    return ManageSieveFactory(context, service)
