"""Running a checked Sieve script against one delivery: tests are evaluated, actions collected.

Nothing is delivered here.  :func:`evaluate` returns a :class:`Result`: the
actions in script order (:class:`Keep`, :class:`FileInto`,
:class:`Redirect`, :class:`Discard`, :class:`Reject`, :class:`Vacation`),
whether the implicit keep still stands (RFC 5228 section 2.10.2) and the
flags it gets, and the message with any editheader changes.
:mod:`cyrusmail.sieve.delivery` carries them out.

A runtime error (a limit reached, an include that cannot be found,
reject together with keep, two vacation actions, an address that is not
one after variables are put in) ends the run: the result is then only the
implicit keep of the message as it arrived, with the reason in
:attr:`Result.error`.  The limits (:class:`Limits`) bound the actions and
redirects one message can cause, include depth, the length of a
variable, and the work a run may do (each test, command and comparison
counts, long strings more), so that no script can hold delivery up.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from cyrusmail.sieve import matching
from cyrusmail.sieve.commands import (
    ACTIONS_CANCELLING_KEEP,
    ADDRESS_HEADERS,
    Call,
    Script,
)
from cyrusmail.sieve.dates import date_part, parse_date, zone_of
from cyrusmail.sieve.message import (
    PROTECTED_HEADERS,
    Address,
    SieveMessage,
    addresses_of,
    split_address,
    valid_address,
)
from cyrusmail.sieve.syntax import SieveSyntaxError


class SieveRuntimeError(Exception):
    """The run cannot go on; the message is kept instead (see the module docstring)."""


@dataclass(frozen=True)
class Limits:
    max_actions: int = 32
    max_redirects: int = 4
    max_include_depth: int = 10
    max_variable_length: int = 4096
    max_variables: int = 256
    max_work: int = 500_000  # tests, commands and comparisons; each 4 KiB of a compared string counts one more


# -- actions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Keep:
    flags: tuple[str, ...]


@dataclass(frozen=True)
class FileInto:
    mailbox: str
    flags: tuple[str, ...]
    create: bool = False
    copy: bool = False


@dataclass(frozen=True)
class Redirect:
    address: str
    copy: bool = False


@dataclass(frozen=True)
class Discard:
    pass


@dataclass(frozen=True)
class Reject:
    reason: str
    extended: bool  # ereject


@dataclass(frozen=True)
class Vacation:
    reason: str
    days: int | None = None
    subject: str | None = None
    sender: str | None = None  # :from
    addresses: tuple[str, ...] = ()
    mime: bool = False
    handle: str | None = None


@dataclass
class Environment:
    """What a run may know beyond the message: the envelope, the user, the clock, the mailboxes."""

    envelope_from: str  # "" for the null reverse-path
    envelope_to: str
    now: datetime.datetime  # timezone-aware
    mailbox_exists: Callable[[str], bool] = lambda name: False
    #: (name, global) -> the script's text, or None when there is no such script.
    load_script: Callable[[str, bool], str | None] = lambda name, is_global: None


@dataclass
class Result:
    actions: list = field(default_factory=list)
    implicit_keep: bool = True
    keep_flags: tuple[str, ...] = ()
    message: SieveMessage | None = None
    error: str | None = None


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|[0-9]+)\}")
_FLAG_VARIABLE = "__imap4flags__"


@dataclass
class _Context:
    """One script being run (the main one, or an included one)."""

    script: Script
    variables: dict[str, str] = field(default_factory=dict)
    matches: list[str] = field(default_factory=list)
    declared_global: set[str] = field(default_factory=set)


def evaluate(script: Script, message: SieveMessage, environment: Environment, limits: Limits = Limits(),
             compile_included: Callable[[str], Script] | None = None) -> Result:
    """Run ``script`` for one message (see the module docstring)."""
    run = _Run(message, environment, limits, compile_included)
    try:
        run.run_script(_Context(script))
    except _Stop:
        pass
    except SieveRuntimeError as error:
        return Result(actions=[], implicit_keep=True, keep_flags=(), message=None, error=str(error))
    return run.result()


class _Run:
    def __init__(self, message: SieveMessage, environment: Environment, limits: Limits,
                 compile_included: Callable[[str], Script] | None) -> None:
        self.message = message
        self.env = environment
        self.limits = limits
        self.compile_included = compile_included
        self.actions: list = []
        self.implicit_keep = True
        self.globals: dict[str, str] = {}
        self.included_once: set[tuple[str, bool]] = set()
        self.depth = 0
        self.work = 0
        self.redirects = 0
        self.context: _Context | None = None

    def result(self) -> Result:
        return Result(self.actions, self.implicit_keep, self.flags_of(None), self.message)

    def charge(self, units: int = 1) -> None:
        self.work += units
        if self.work > self.limits.max_work:
            raise SieveRuntimeError(f"the script did more than {self.limits.max_work} steps of work")

    # -- scripts and blocks -----------------------------------------------------------

    def run_script(self, context: _Context) -> None:
        outer, self.context = self.context, context
        try:
            self.block(context.script.commands)
        except _Return:
            pass
        finally:
            self.context = outer

    def block(self, calls: list[Call]) -> None:
        taken = False
        for call in calls:
            self.charge()
            if call.name == "if":
                taken = self.test(call.tests[0])
                if taken:
                    self.block(call.block)
            elif call.name == "elsif":
                if not taken:
                    taken = self.test(call.tests[0])
                    if taken:
                        self.block(call.block)
            elif call.name == "else":
                if not taken:
                    self.block(call.block)
            else:
                COMMANDS[call.name](self, call)

    # -- strings and variables -----------------------------------------------------------

    def expand(self, text: str) -> str:
        if not self.context.script.uses_variables or "${" not in text:
            return text
        self.charge(1 + len(text) // 4096)
        expanded = _VARIABLE.sub(self._variable_value, text)
        return expanded[: self.limits.max_variable_length * 16]

    def _variable_value(self, match: re.Match) -> str:
        name = match.group(1)
        if name.isdigit():
            index = int(name)
            matches = self.context.matches
            return matches[index] if index < len(matches) else ""
        name = name.lower()
        if "." in name:
            namespace, _, rest = name.partition(".")
            if namespace != "global":
                return match.group(0)  # an unknown namespace is left as written
            return self.globals.get(rest, "")
        return self.lookup(name)

    def lookup(self, name: str) -> str:
        context = self.context
        if name in context.declared_global:
            return self.globals.get(name, "")
        return context.variables.get(name, "")

    def assign(self, name: str, value: str) -> None:
        name = name.lower()
        value = value[: self.limits.max_variable_length]
        context = self.context
        if name.startswith("global."):
            table, name = self.globals, name[len("global."):]
        elif name in context.declared_global:
            table = self.globals
        else:
            table = context.variables
        if name not in table and len(table) >= self.limits.max_variables:
            raise SieveRuntimeError(f"more than {self.limits.max_variables} variables")
        table[name] = value

    def strings(self, values) -> list[str]:
        return [self.expand(value) for value in values]

    # -- matching --------------------------------------------------------------------

    def compare(self, call: Call, values: list[str], keys: list[str], count: int | None = None) -> bool:
        """The test's verdict for ``values`` against ``keys`` with its match type and comparator."""
        comparator = call.tags.get("comparator", "i;ascii-casemap")
        match = call.tags.get("match", ":is")
        self.charge(len(values) * max(1, len(keys)) + sum(len(value) for value in values) // 4096)
        if isinstance(match, tuple) and match[0] == ":count":
            number = str(len(values) if count is None else count)
            return any(matching.relation_holds(number, key, match[1], comparator) for key in keys)
        captured: list[str] = []
        found = matching.match_any(values, keys, match, comparator, captured)
        if found and match == ":matches" and self.context.script.uses_variables:
            self.context.matches = captured
        return found

    # -- tests -------------------------------------------------------------------------

    def test(self, call: Call) -> bool:
        self.charge()
        return TESTS[call.name](self, call)

    def address_values(self, call: Call, addresses: list[Address]) -> list[str]:
        part = call.tags.get("address_part", ":all")
        values = []
        for address in addresses:
            if part == ":all":
                values.append(address.all)
            elif part == ":localpart":
                values.append(address.localpart)
            elif part == ":domain":
                values.append(address.domain)
            else:
                user, plus, detail = address.localpart.partition("+")
                if part == ":user":
                    values.append(user)
                elif plus:
                    values.append(detail)
        return values

    # -- flags (RFC 5232) ------------------------------------------------------------

    def flags_of(self, names) -> tuple[str, ...]:
        if names is None:
            names = (_FLAG_VARIABLE,)
        elif isinstance(names, str):
            names = (names,)
        flags: list[str] = []
        for name in names:
            source = self.globals.get(_FLAG_VARIABLE, "") if name == _FLAG_VARIABLE else self.lookup(name.lower())
            flags = merge_flags(flags, source.split())
        return tuple(flags)

    def set_flags(self, name: str | None, flags: list[str]) -> None:
        text = " ".join(flags)
        if name is None:
            self.globals[_FLAG_VARIABLE] = text[: self.limits.max_variable_length]
        else:
            self.assign(self.expand(name), text)

    # -- actions -----------------------------------------------------------------------

    def add_action(self, action) -> None:
        if len(self.actions) >= self.limits.max_actions:
            raise SieveRuntimeError(f"more than {self.limits.max_actions} actions")
        kinds = {type(existing) for existing in self.actions}
        if isinstance(action, Reject) and (kinds & {Reject, Keep, FileInto, Redirect, Vacation}):
            raise SieveRuntimeError("reject cannot be combined with keep, fileinto, redirect, vacation or reject")
        if Reject in kinds and isinstance(action, (Keep, FileInto, Redirect, Vacation)):
            raise SieveRuntimeError("reject cannot be combined with keep, fileinto, redirect or vacation")
        if isinstance(action, Vacation) and Vacation in kinds:
            raise SieveRuntimeError("only one vacation action per message")
        if action in self.actions and isinstance(action, (FileInto, Redirect, Keep)):
            return  # RFC 5228 2.10.3: the same delivery twice is done once
        self.actions.append(action)


def merge_flags(flags: list[str], more) -> list[str]:
    """``flags`` with ``more`` added, each flag once (compared without case), in order."""
    seen = {flag.lower() for flag in flags}
    merged = list(flags)
    for flag in more:
        if flag and flag.lower() not in seen:
            seen.add(flag.lower())
            merged.append(flag)
    return merged


def _split_flags(values: list[str]) -> list[str]:
    return merge_flags([], (flag for value in values for flag in value.split()))


# -- the commands ----------------------------------------------------------------------


def _stop(run: _Run, call: Call) -> None:
    raise _Stop()


def _keep(run: _Run, call: Call) -> None:
    flags = call.tags.get("flags")
    chosen = tuple(_split_flags(run.strings(flags))) if flags is not None else run.flags_of(None)
    run.add_action(Keep(chosen))


def _discard(run: _Run, call: Call) -> None:
    run.add_action(Discard())
    run.implicit_keep = False


def _redirect(run: _Run, call: Call) -> None:
    address = run.expand(call.args[0]).strip()
    if not valid_address(address):
        raise SieveRuntimeError(f"redirect to {address[:100]!r}: not an address")
    run.redirects += 1
    if run.redirects > run.limits.max_redirects:
        raise SieveRuntimeError(f"more than {run.limits.max_redirects} redirects")
    copy = "copy" in call.tags
    run.add_action(Redirect(address, copy))
    if not copy:
        run.implicit_keep = False


def _fileinto(run: _Run, call: Call) -> None:
    mailbox = run.expand(call.args[0])
    flags = call.tags.get("flags")
    chosen = tuple(_split_flags(run.strings(flags))) if flags is not None else run.flags_of(None)
    copy = "copy" in call.tags
    run.add_action(FileInto(mailbox, chosen, "create" in call.tags, copy))
    if not copy:
        run.implicit_keep = False


def _reject(run: _Run, call: Call) -> None:
    run.add_action(Reject(run.expand(call.args[0]), call.name == "ereject"))
    run.implicit_keep = False


def _vacation(run: _Run, call: Call) -> None:
    tags = call.tags
    subject = tags.get("subject")
    sender = tags.get("from")
    handle = tags.get("handle")
    run.add_action(Vacation(
        reason=run.expand(call.args[0]),
        days=tags.get("days"),
        subject=None if subject is None else run.expand(subject),
        sender=None if sender is None else run.expand(sender),
        addresses=tuple(run.strings(tags.get("addresses", ()))),
        mime="mime" in tags,
        handle=None if handle is None else run.expand(handle),
    ))


def _flag_command(run: _Run, call: Call) -> None:
    name, flags = call.args
    given = _split_flags(run.strings(flags))
    current = list(run.flags_of(None if name is None else run.expand(name)))
    if call.name == "setflag":
        result = given
    elif call.name == "addflag":
        result = merge_flags(current, given)
    else:
        gone = {flag.lower() for flag in given}
        result = [flag for flag in current if flag.lower() not in gone]
    run.set_flags(name, result)


_MODIFIER_ORDER = (":lower", ":upper", ":lowerfirst", ":upperfirst", ":quotewildcard", ":length")


def _set(run: _Run, call: Call) -> None:
    name, value = call.args
    value = run.expand(value)
    for modifier in _MODIFIER_ORDER:
        if "modifier:" + modifier not in call.tags:
            continue
        if modifier == ":lower":
            value = value.lower()
        elif modifier == ":upper":
            value = value.upper()
        elif modifier == ":lowerfirst":
            value = value[:1].lower() + value[1:]
        elif modifier == ":upperfirst":
            value = value[:1].upper() + value[1:]
        elif modifier == ":quotewildcard":
            value = matching.quote_wildcards(value)
        else:
            value = str(len(value))
    run.assign(name, value)


def _addheader(run: _Run, call: Call) -> None:
    name, value = run.expand(call.args[0]), run.expand(call.args[1])
    if name.lower() in PROTECTED_HEADERS:
        return  # RFC 5293 section 7: the trace and loop guards stay as they are
    if not re.fullmatch(r"[!-9;-~]+", name) or len(name) + len(value) > 998:
        raise SieveRuntimeError(f"addheader {name[:60]!r}: not a header field this script may add")
    run.message.add(name, value, "last" in call.tags)


def _deleteheader(run: _Run, call: Call) -> None:
    name = run.expand(call.args[0])
    if name.lower() in PROTECTED_HEADERS:
        return
    patterns = call.args[1]
    keys = None if patterns is None else run.strings(patterns)

    def keep(text: str) -> bool:
        return keys is not None and not run.compare(call, [text], keys)

    run.message.delete(name, call.tags.get("index"), "last" in call.tags, keep)


def _include(run: _Run, call: Call) -> None:
    name = run.expand(call.args[0])
    is_global = call.tags.get("location") == ":global"
    key = (name, is_global)
    if "once" in call.tags and key in run.included_once:
        return
    if run.depth + 1 > run.limits.max_include_depth:
        raise SieveRuntimeError(f"includes nested more than {run.limits.max_include_depth} deep")
    text = run.env.load_script(name, is_global)
    if text is None:
        if "optional" in call.tags:
            return
        raise SieveRuntimeError(f"include: no {'global' if is_global else 'personal'} script {name[:100]!r}")
    try:
        script = run.compile_included(text) if run.compile_included else None
    except SieveSyntaxError as error:
        raise SieveRuntimeError(f"include {name[:100]!r}: {error}") from None
    if script is None:
        raise SieveRuntimeError("include is not available here")
    run.included_once.add(key)
    run.depth += 1
    try:
        run.run_script(_Context(script))
    finally:
        run.depth -= 1


def _return(run: _Run, call: Call) -> None:
    raise _Return()


def _global(run: _Run, call: Call) -> None:
    run.context.declared_global.update(name.lower() for name in call.args[0])


COMMANDS: dict[str, Callable[[_Run, Call], None]] = {
    "stop": _stop, "keep": _keep, "discard": _discard, "redirect": _redirect, "fileinto": _fileinto,
    "reject": _reject, "ereject": _reject, "vacation": _vacation, "setflag": _flag_command,
    "addflag": _flag_command, "removeflag": _flag_command, "set": _set, "addheader": _addheader,
    "deleteheader": _deleteheader, "include": _include, "return": _return, "global": _global,
}
assert ACTIONS_CANCELLING_KEEP <= set(COMMANDS)


# -- the tests ------------------------------------------------------------------------


def _address(run: _Run, call: Call) -> bool:
    addresses: list[Address] = []
    for name in run.strings(call.args[0]):
        if name.lower() not in ADDRESS_HEADERS:
            continue  # a variable made it a field without addresses: nothing to compare
        for raw in run.message.raw_values(name):
            addresses.extend(addresses_of(raw))
    values = run.address_values(call, addresses)
    return run.compare(call, values, run.strings(call.args[1]))


def _envelope(run: _Run, call: Call) -> bool:
    addresses = []
    for part in run.strings(call.args[0]):
        if part.lower() == "from":
            addresses.append(split_address(run.env.envelope_from))
        elif part.lower() == "to":
            addresses.append(split_address(run.env.envelope_to))
    return run.compare(call, run.address_values(call, addresses), run.strings(call.args[1]))


def _header(run: _Run, call: Call) -> bool:
    values = [value for name in run.strings(call.args[0]) for value in run.message.values(name)]
    return run.compare(call, values, run.strings(call.args[1]))


def _exists(run: _Run, call: Call) -> bool:
    return all(run.message.exists(name) for name in run.strings(call.args[0]))


def _size(run: _Run, call: Call) -> bool:
    limit = call.args[0]
    return run.message.size > limit if call.tags["size"] == ":over" else run.message.size < limit


def _allof(run: _Run, call: Call) -> bool:
    return all(run.test(test) for test in call.tests)


def _anyof(run: _Run, call: Call) -> bool:
    return any(run.test(test) for test in call.tests)


def _not(run: _Run, call: Call) -> bool:
    return not run.test(call.tests[0])


def _body(run: _Run, call: Call) -> bool:
    transform = call.tags.get("transform", ":text")
    if isinstance(transform, tuple):
        transform = tuple(run.strings(transform))
    return run.compare(call, run.message.body(transform), run.strings(call.args[0]))


def _hasflag(run: _Run, call: Call) -> bool:
    names, keys = call.args
    flags = list(run.flags_of(None if names is None else tuple(run.strings(names))))
    return run.compare(call, flags, _split_flags(run.strings(keys)))


def _string(run: _Run, call: Call) -> bool:
    values = run.strings(call.args[0])
    return run.compare(call, values, run.strings(call.args[1]), count=sum(1 for value in values if value))


def _zoned(run: _Run, call: Call, when: datetime.datetime) -> datetime.datetime:
    zone = call.tags.get("zone")
    if zone == ":originalzone":
        return when
    if zone is None:
        return when.astimezone()
    zone = run.expand(zone)
    if not re.fullmatch(r"[+-](?:[01][0-9]|2[0-3])[0-5][0-9]", zone):
        raise SieveRuntimeError(f"zone {zone[:20]!r} is not +hhmm or -hhmm")
    return when.astimezone(zone_of(zone))


def _date(run: _Run, call: Call) -> bool:
    name, part, keys = run.expand(call.args[0]), run.expand(call.args[1]), run.strings(call.args[2])
    values = []
    for text in run.message.values(name):
        if name.lower() == "received":
            text = text.rpartition(";")[2]
        when = parse_date(text.strip())
        if when is not None:
            value = date_part(_zoned(run, call, when), part)
            if value is not None:
                values.append(value)
    return bool(values) and run.compare(call, values, keys)


def _currentdate(run: _Run, call: Call) -> bool:
    part, keys = run.expand(call.args[0]), run.strings(call.args[1])
    value = date_part(_zoned(run, call, run.env.now), part)
    return value is not None and run.compare(call, [value], keys)


def _mailboxexists(run: _Run, call: Call) -> bool:
    return all(run.env.mailbox_exists(name) for name in run.strings(call.args[0]))


TESTS: dict[str, Callable[[_Run, Call], bool]] = {
    "address": _address, "envelope": _envelope, "header": _header, "exists": _exists, "size": _size,
    "allof": _allof, "anyof": _anyof, "not": _not, "true": lambda run, call: True,
    "false": lambda run, call: False, "body": _body, "hasflag": _hasflag, "string": _string,
    "date": _date, "currentdate": _currentdate, "mailboxexists": _mailboxexists,
}
