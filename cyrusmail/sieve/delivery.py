"""Sieve at final delivery: run the recipient's active script and turn its result into a plan.

:class:`SieveFilter` is asked by :class:`~cyrusmail.delivery.local.LocalDelivery`
for every message to one of a user's own mailboxes (LMTP, submission's
local recipients, the queue's local retries and redirects).  It reads
the active script (none: no plan, the message goes where it would have
gone), runs it, and returns a :class:`Plan`: a refusal (reject and
ereject are both refused in the protocol, RFC 5429 section 2.1: LMTP
answers that recipient ``550 5.7.1`` with the script's reason;
submission's sender gets it as a DSN), or the mailboxes to store into
with their flags, and the redirects and vacation reply to send once the
message is stored.  Local delivery does the storing (however the store
writes), then calls :meth:`Plan.after_stored`.

Never losing mail: a script that cannot be read or compiled, or that
fails while it runs, gives the plan of the implicit keep (the message as
it arrived, to the mailbox it was addressed to) and a log line; a
fileinto whose mailbox does not exist (without ``:create``) or cannot be
made falls back to that mailbox too.  A redirect is not sent when the
message has already passed this recipient (a ``Delivered-To`` of its
address, which every redirected copy gets) or has passed
:data:`MAX_HOPS` hops: it is kept instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cyrusmail import logs
from cyrusmail.sieve import vacation
from cyrusmail.sieve.commands import Script, compile_script
from cyrusmail.sieve.interpreter import (
    Discard,
    Environment,
    FileInto,
    Keep,
    Limits,
    Redirect,
    Reject,
    Result,
    Vacation,
    evaluate,
)
from cyrusmail.sieve.message import SieveMessage
from cyrusmail.sieve.scripts import ScriptError, ScriptStore
from cyrusmail.sieve.syntax import SieveSyntaxError
from cyrusmail.smtp import codes
from cyrusmail.smtp.codes import Reply
from cyrusmail.store.errors import StoreError

#: Octets of a message's start read to find its header.
HEADER_LIMIT = 256 * 1024
#: Received and Delivered-To fields a message may carry before a redirect is taken for a loop.
MAX_HOPS = 50
#: Compiled scripts kept, by their text's digest.
COMPILED_CACHE = 256
_ATOM = re.compile(r'[^(){ %*"\\\]\x00-\x1f\x7f]+')
_SYSTEM_FLAGS = {"\\seen": "\\Seen", "\\answered": "\\Answered", "\\flagged": "\\Flagged",
                 "\\deleted": "\\Deleted", "\\draft": "\\Draft"}


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope of one delivery: the reverse-path (None for ``<>``) and this recipient."""

    sender: str | None
    recipient: str


@dataclass(frozen=True)
class Store:
    """Put the message into ``folder`` (None: where it was addressed) with these IMAP flags."""

    folder: str | None
    flags: tuple[str, ...] = ()
    create: bool = False


@dataclass
class Plan:
    refusal: Reply | None = None
    message: object = None  # the staged message to store (an edited copy, or the one delivered)
    stores: list[Store] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)
    _edited: object = None

    def after_stored(self) -> None:
        """Send the redirects and the vacation reply (once the message is safely stored)."""
        for action in self.after:
            try:
                action()
            except Exception:  # noqa: BLE001 - the message is delivered; a failed reply is only logged
                logs.log.failure("sieve: a redirect or vacation reply failed")

    def close(self) -> None:
        if self._edited is not None:
            self._edited.discard()
            self._edited = None


def system_flag_or_keyword(flag: str) -> str | None:
    """The flag as the store takes it (``\\Seen``, a keyword), or None for one that cannot be set."""
    if flag.startswith("\\"):
        return _SYSTEM_FLAGS.get(flag.lower())
    return flag if _ATOM.fullmatch(flag) and len(flag) <= 250 else None


class SieveFilter:
    """Runs users' active scripts at delivery (see the module docstring)."""

    def __init__(self, context, scripts: ScriptStore, limits: Limits, clock=None) -> None:
        self.context = context
        self.scripts = scripts
        self.limits = limits
        self.clock = clock
        self._compiled: OrderedDict[bytes, Script] = OrderedDict()

    def now(self) -> float:
        if self.clock is not None:
            return self.clock.seconds()
        import time

        return time.time()

    def compile(self, text: str) -> Script:
        key = hashlib.sha256(text.encode("utf-8")).digest()
        script = self._compiled.get(key)
        if script is None:
            script = compile_script(text)
            self._compiled[key] = script
            while len(self._compiled) > COMPILED_CACHE:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        return script

    def active_script(self, user: str) -> tuple[str, str] | None:
        """The user's active script (name, text), or None: none, or none that can be read."""
        try:
            return self.scripts.active(user)
        except (ScriptError, StoreError, OSError, *self.scripts.errors):
            logs.log.failure("sieve: cannot read the scripts of {user}; message kept", user=user)
            return None

    def plan(self, staged, user: str, envelope: Envelope, active: tuple[str, str]) -> Plan | None:
        """What the ``active`` script (name, text) makes of this delivery; None when it does not compile."""
        name, text = active
        try:
            script = self.compile(text)
        except SieveSyntaxError as error:
            logs.log.warn("sieve: script {name!r} of {user} does not compile ({error}); message kept",
                          name=name, user=user, error=str(error))
            return None
        header, complete = _read_header(staged)
        message = SieveMessage(staged, header)
        tree = self.context.realm.access.tree(user)
        environment = Environment(
            envelope_from=envelope.sender or "",
            envelope_to=envelope.recipient,
            now=datetime.datetime.fromtimestamp(self.now(), datetime.UTC),
            mailbox_exists=lambda folder: _exists(tree, folder),
            load_script=lambda included, is_global: (
                self.scripts.global_script(included) if is_global else self.scripts.get(user, included)),
        )
        result = evaluate(script, message, environment, self.limits, compile_included=self.compile)
        if result.error is None and result.message is not None and result.message.edited and not complete:
            result = Result(error="header too long to edit")
        if result.error is not None:
            logs.log.warn("sieve: script {name!r} of {user} failed: {error}; message kept",
                          name=name, user=user, error=result.error)
            return Plan(message=staged, stores=[Store(None)])
        return self._plan(staged, user, envelope, result)

    def _plan(self, staged, user: str, envelope: Envelope, result: Result) -> Plan:
        plan = Plan(message=staged)
        for action in result.actions:
            if isinstance(action, Reject):
                reason = " ".join(action.reason.split())[:200] or codes.SIEVE_REJECTED.text
                printable = "".join(char if char.isprintable() else "?" for char in reason)
                plan.refusal = codes.SIEVE_REJECTED.with_text(printable)
                logs.log.info("sieve: {user} refused a message from <{sender}>", user=user,
                              sender=envelope.sender or "")
                return plan
        if result.message is not None and result.message.edited:
            plan._edited = plan.message = _edited_copy(self.context.store, staged, result.message)
        loop = any(isinstance(action, Redirect) for action in result.actions) and _is_loop(
            result.message, envelope.recipient)
        for action in result.actions:
            if isinstance(action, Keep):
                plan.stores.append(Store(None, action.flags))
            elif isinstance(action, FileInto):
                plan.stores.append(Store(action.mailbox, action.flags, action.create))
            elif isinstance(action, Redirect):
                if loop:
                    logs.log.warn("sieve: {user}: redirect to <{to}> not sent, the message loops; kept",
                                  user=user, to=action.address)
                    plan.stores.append(Store(None))
                    continue
                plan.after.append(lambda action=action: self._redirect(plan, envelope, action))
            elif isinstance(action, Vacation):
                plan.after.append(lambda action=action: self._vacation(user, envelope, result.message, action))
            else:
                assert isinstance(action, Discard)
        if result.implicit_keep:
            plan.stores.append(Store(None, result.keep_flags))
        unique: dict[str | None, Store] = {}
        for store in plan.stores:
            unique.setdefault(store.folder, store)
        plan.stores = list(unique.values())
        return plan

    # -- what goes out ---------------------------------------------------------------

    @property
    def queue(self):
        from cyrusmail.delivery.queue import queue_of

        return queue_of(self.context)

    def _redirect(self, plan: Plan, envelope: Envelope, action: Redirect) -> None:
        staged = self.context.store.stage()
        try:
            staged.write(b"Delivered-To: " + envelope.recipient.encode("utf-8") + b"\r\n")
            with open(plan.message.path, "rb") as source:
                while piece := source.read(1 << 20):
                    staged.write(piece)
            staged.finish()
            self.queue.enqueue(None, [action.address], staged, sender=envelope.sender, body="8BITMIME")
        finally:
            staged.discard()
        logs.log.info("sieve: redirected a message for <{rcpt}> to <{to}>", rcpt=envelope.recipient,
                      to=action.address)

    def _vacation(self, user: str, envelope: Envelope, message: SieveMessage, action: Vacation) -> None:
        own = _own_addresses(user, self.context.config.domains) | {envelope.recipient.lower()}
        sender = envelope.sender or ""
        why_not = vacation.refusal(message, sender, own, action)
        if why_not is not None:
            logs.log.info("sieve: {user}: no vacation reply to <{sender}>: {why}", user=user, sender=sender,
                          why=why_not)
            return
        now = self.now()
        if not self.scripts.vacation_due(user, vacation.handle_of(action), sender, now, vacation.period_of(action)):
            logs.log.info("sieve: {user}: <{sender}> was already answered", user=user, sender=sender)
            return
        strict = self.context.config["server"]["check_header_from"]
        if strict and action.sender is not None and not vacation.sends_as(action.sender, own):
            logs.log.info("sieve: {user}: vacation :from {sender!r} is not the user's; the user's address used",
                          user=user, sender=action.sender[:200])
            action = dataclasses.replace(action, sender=None)
        reply = vacation.build_reply(message, action, sender, own, envelope.recipient,
                                     self.context.config.hostname, now, any_from=not strict)
        self.queue.enqueue(None, [sender], reply, sender=None, is_bounce=True, body="8BITMIME")
        logs.log.info("sieve: {user}: vacation reply sent to <{sender}>", user=user, sender=sender)


def _own_addresses(user: str, domains: list[str]) -> frozenset[str]:
    from cyrusmail.account import own_addresses

    return own_addresses(user, domains)


def _exists(tree, folder: str) -> bool:
    try:
        return tree.exists(folder)
    except StoreError:
        return False


def _read_header(staged) -> tuple[bytes, bool]:
    """The message's header block with its empty line, and whether it is all there."""
    with open(staged.path, "rb") as source:
        start = source.read(HEADER_LIMIT)
    if start.startswith(b"\r\n"):
        return b"\r\n", True
    end = start.find(b"\r\n\r\n")
    if end >= 0:
        return start[:end + 4], True
    if len(start) < HEADER_LIMIT:
        return start, True  # a message that is all header
    return start[:start.rfind(b"\n") + 1], False


def _edited_copy(store, staged, message: SieveMessage):
    """A new staged message: the edited header, then the body as it came."""
    copy = store.stage()
    try:
        copy.write(message.header_bytes())
        with open(staged.path, "rb") as source:
            source.seek(message.original_header_length)
            while piece := source.read(1 << 20):
                copy.write(piece)
        copy.finish()
    except BaseException:
        copy.discard()
        raise
    return copy


def _is_loop(message: SieveMessage | None, recipient: str) -> bool:
    if message is None:
        return False
    delivered = [value.strip().strip("<>").lower() for value in message.values("delivered-to")]
    hops = len(delivered) + len(message.raw_values("received"))
    return recipient.lower() in delivered or hops > MAX_HOPS
