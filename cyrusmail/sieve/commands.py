"""What each Sieve command and test takes, and the check that turns a parsed script into a runnable one.

One table, :data:`SPECS`, says for every command and test which
extension it needs (``require``), which tags it takes (each with the
group it belongs to and the kind of argument that follows it), its
positional arguments, and whether it takes tests or a block.
:func:`compile_script` walks the tree from :mod:`cyrusmail.sieve.syntax`
against it and returns a :class:`Script` of :class:`Call` nodes, or
raises :class:`~cyrusmail.sieve.syntax.SieveSyntaxError` naming the line:
an unknown command, a capability used without ``require``, a tag twice,
a missing argument, an ``elsif`` with no ``if``, a comparator that cannot
do substring matches, a malformed address, header name, variable name,
date part or zone, all before the script is ever stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cyrusmail.sieve.syntax import (
    Argument,
    Command,
    Number,
    SieveSyntaxError,
    StringList,
    Tag,
    Test,
    parse,
)

#: Every capability ``require`` may name, as ManageSieve's SIEVE capability lists them.
EXTENSIONS = (
    "fileinto", "reject", "ereject", "envelope", "encoded-character", "imap4flags", "vacation", "body",
    "variables", "copy", "relational", "subaddress", "date", "include", "mailbox", "editheader",
    "comparator-i;ascii-numeric", "comparator-i;octet", "comparator-i;ascii-casemap",
)
COMPARATORS = {"i;octet": None, "i;ascii-casemap": None, "i;ascii-numeric": "comparator-i;ascii-numeric"}
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")
DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601",
              "std11", "zone", "weekday")
#: Header fields the address test may read (RFC 5228 section 5.1: only fields that hold addresses).
ADDRESS_HEADERS = frozenset({
    "from", "sender", "to", "cc", "bcc", "reply-to", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-bcc", "return-path", "delivered-to", "disposition-notification-to",
    "errors-to", "x-original-to", "envelope-to", "x-envelope-to", "x-delivered-to", "original-recipient",
    "mail-followup-to", "mail-reply-to", "list-post",
})
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_VARIABLE_NAME = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ZONE = re.compile(r"[+-](?:[01][0-9]|2[0-3])[0-5][0-9]")


# -- the table -------------------------------------------------------------------


@dataclass(frozen=True)
class TagSpec:
    group: str  # where its value goes in Call.tags; two tags of one group conflict
    takes: str | None = None  # "string", "strings", "number", "relation" or None
    extension: str | None = None


@dataclass(frozen=True)
class Spec:
    kind: str  # "command", "test", "control"
    extension: str | None = None
    tags: dict[str, TagSpec] = field(default_factory=dict)
    positional: tuple[str, ...] = ()  # "string", "strings", "number"
    optional: str | None = None  # "leading" or "trailing": that positional may be left out
    tests: str = "none"  # "none", "one", "list"
    block: bool = False


COMPARATOR = {":comparator": TagSpec("comparator", "string")}
MATCH = {
    ":is": TagSpec("match"), ":contains": TagSpec("match"), ":matches": TagSpec("match"),
    ":count": TagSpec("match", "relation", "relational"), ":value": TagSpec("match", "relation", "relational"),
}
ADDRESS_PART = {
    ":all": TagSpec("address_part"), ":localpart": TagSpec("address_part"), ":domain": TagSpec("address_part"),
    ":user": TagSpec("address_part", extension="subaddress"),
    ":detail": TagSpec("address_part", extension="subaddress"),
}
FLAGS = {":flags": TagSpec("flags", "strings", "imap4flags")}
COPY = {":copy": TagSpec("copy", extension="copy")}
ZONE = {":zone": TagSpec("zone", "string"), ":originalzone": TagSpec("zone")}

SPECS: dict[str, Spec] = {
    # control (RFC 5228 section 3, RFC 6609)
    "require": Spec("control", positional=("strings",)),
    "if": Spec("control", tests="one", block=True),
    "elsif": Spec("control", tests="one", block=True),
    "else": Spec("control", block=True),
    "stop": Spec("control"),
    "include": Spec("control", "include", {
        ":personal": TagSpec("location"), ":global": TagSpec("location"),
        ":once": TagSpec("once"), ":optional": TagSpec("optional")}, ("string",)),
    "return": Spec("control", "include"),
    "global": Spec("control", "include", positional=("strings",)),
    # actions (RFC 5228 section 4 and the extensions)
    "keep": Spec("command", tags=FLAGS),
    "discard": Spec("command"),
    "redirect": Spec("command", tags=COPY, positional=("string",)),
    "fileinto": Spec("command", "fileinto", {**COPY, **FLAGS, ":create": TagSpec("create", extension="mailbox")},
                     ("string",)),
    "reject": Spec("command", "reject", positional=("string",)),
    "ereject": Spec("command", "ereject", positional=("string",)),
    "vacation": Spec("command", "vacation", {
        ":days": TagSpec("days", "number"), ":subject": TagSpec("subject", "string"),
        ":from": TagSpec("from", "string"), ":addresses": TagSpec("addresses", "strings"),
        ":mime": TagSpec("mime"), ":handle": TagSpec("handle", "string")}, ("string",)),
    "setflag": Spec("command", "imap4flags", positional=("string", "strings"), optional="leading"),
    "addflag": Spec("command", "imap4flags", positional=("string", "strings"), optional="leading"),
    "removeflag": Spec("command", "imap4flags", positional=("string", "strings"), optional="leading"),
    "set": Spec("command", "variables", {
        name: TagSpec("modifier:" + name) for name in
        (":lower", ":upper", ":lowerfirst", ":upperfirst", ":quotewildcard", ":length")},
        ("string", "string")),
    "addheader": Spec("command", "editheader", {":last": TagSpec("last")}, ("string", "string")),
    "deleteheader": Spec("command", "editheader", {
        ":index": TagSpec("index", "number"), ":last": TagSpec("last"), **COMPARATOR, **MATCH},
        ("string", "strings"), optional="trailing"),
    # tests (RFC 5228 section 5 and the extensions)
    "address": Spec("test", tags={**COMPARATOR, **ADDRESS_PART, **MATCH}, positional=("strings", "strings")),
    "envelope": Spec("test", "envelope", {**COMPARATOR, **ADDRESS_PART, **MATCH}, ("strings", "strings")),
    "header": Spec("test", tags={**COMPARATOR, **MATCH}, positional=("strings", "strings")),
    "exists": Spec("test", positional=("strings",)),
    "size": Spec("test", tags={":over": TagSpec("size"), ":under": TagSpec("size")}, positional=("number",)),
    "allof": Spec("test", tests="list"),
    "anyof": Spec("test", tests="list"),
    "not": Spec("test", tests="one"),
    "true": Spec("test"),
    "false": Spec("test"),
    "body": Spec("test", "body", {
        **COMPARATOR, **MATCH, ":raw": TagSpec("transform"), ":text": TagSpec("transform"),
        ":content": TagSpec("transform", "strings")}, ("strings",)),
    "hasflag": Spec("test", "imap4flags", {**COMPARATOR, **MATCH}, ("strings", "strings"), optional="leading"),
    "string": Spec("test", "variables", {**COMPARATOR, **MATCH}, ("strings", "strings")),
    "date": Spec("test", "date", {**ZONE, **COMPARATOR, **MATCH}, ("string", "string", "strings")),
    "currentdate": Spec("test", "date", {":zone": TagSpec("zone", "string"), **COMPARATOR, **MATCH},
                        ("string", "strings")),
    "mailboxexists": Spec("test", "mailbox", positional=("strings",)),
}
ACTIONS_CANCELLING_KEEP = frozenset({"fileinto", "redirect", "discard", "reject", "ereject"})


# -- the compiled script -----------------------------------------------------------


@dataclass
class Call:
    """A checked command or test: its tags by group, its positional values, its children."""

    name: str
    line: int
    tags: dict[str, object] = field(default_factory=dict)
    args: list[object] = field(default_factory=list)  # str, tuple[str, ...] or int
    tests: list[Call] = field(default_factory=list)
    block: list[Call] | None = None


@dataclass
class Script:
    commands: list[Call]
    extensions: frozenset[str]

    @property
    def uses_variables(self) -> bool:
        return "variables" in self.extensions


def compile_script(text: str | bytes) -> Script:
    """Parse and check ``text``: a runnable :class:`Script`, or SieveSyntaxError naming the line."""
    tree = parse(text)
    checker = _Checker()
    commands = checker.block(tree, top=True)
    return Script(commands, frozenset(checker.required))


class _Checker:
    def __init__(self) -> None:
        self.required: set[str] = set()

    def error(self, node, message: str) -> SieveSyntaxError:
        return SieveSyntaxError(node.line, message)

    def block(self, commands: list[Command], top: bool = False) -> list[Call]:
        calls: list[Call] = []
        requires_allowed = top
        previous: str | None = None
        for command in commands:
            if command.name == "require":
                if not requires_allowed:
                    raise self.error(command, "require must come before any other command")
                self.require(command)
                previous = "require"
                continue
            requires_allowed = False
            if command.name in ("elsif", "else") and previous not in ("if", "elsif"):
                raise self.error(command, f"{command.name} without a preceding if")
            calls.append(self.node(command, "command"))
            previous = command.name
        return calls

    def require(self, command: Command) -> None:
        self.node(command, "command")
        (names,) = [argument for argument in command.arguments if isinstance(argument, StringList)]
        for name in names.values:
            if name.lower() not in EXTENSIONS:
                raise self.error(command, f"unsupported extension {name!r} (supported: {' '.join(EXTENSIONS)})")
            self.required.add(name.lower())

    def needs(self, node, extension: str | None, what: str) -> None:
        if extension is not None and extension not in self.required:
            raise self.error(node, f'{what} needs require "{extension}"')

    def node(self, node: Command | Test, where: str) -> Call:
        spec = SPECS.get(node.name)
        if spec is None or (where == "test") != (spec.kind == "test"):
            kind = "test" if where == "test" else "command"
            raise self.error(node, f"unknown {kind} {node.name!r}")
        self.needs(node, spec.extension, node.name)
        call = Call(node.name, node.line)
        self.arguments(node, spec, call)
        self.children(node, spec, call)
        check = _EXTRA_CHECKS.get(node.name)
        if check is not None:
            check(self, node, call)
        return call

    def arguments(self, node: Command | Test, spec: Spec, call: Call) -> None:
        arguments = list(node.arguments)
        positional: list[Argument] = []
        index = 0
        while index < len(arguments):
            argument = arguments[index]
            index += 1
            if not isinstance(argument, Tag):
                positional.append(argument)
                continue
            if positional:
                raise self.error(argument, f"tag {argument.name} after the positional arguments of {node.name}")
            tag = spec.tags.get(argument.name)
            if tag is None:
                raise self.error(argument, f"{node.name} takes no tag {argument.name}")
            self.needs(argument, tag.extension, argument.name)
            if tag.group in call.tags or (tag.group == "match" and "match" in call.tags):
                raise self.error(argument, f"{argument.name} conflicts with a tag given before it")
            value: object = argument.name
            if tag.takes is not None:
                if index >= len(arguments):
                    raise self.error(argument, f"{argument.name} needs a {tag.takes}")
                value = self.value(arguments[index], tag.takes, f"the argument of {argument.name}")
                index += 1
                if tag.takes == "relation":
                    if value.lower() not in RELATIONS:
                        raise self.error(argument, f"relation {value!r} is not one of {', '.join(RELATIONS)}")
                    value = (argument.name, value.lower())
            call.tags[tag.group] = value
        wanted = list(spec.positional)
        if spec.optional and len(positional) == len(wanted) - 1:
            wanted = wanted[1:] if spec.optional == "leading" else wanted[:-1]
            call.args.append(None) if spec.optional == "leading" else None
        if len(positional) != len(wanted):
            raise self.error(node, f"{node.name} takes {len(spec.positional)} positional arguments"
                                   f"{' (one optional)' if spec.optional else ''}, not {len(positional)}")
        for argument, kind in zip(positional, wanted):
            call.args.append(self.value(argument, kind, f"an argument of {node.name}"))
        if spec.optional == "trailing" and len(call.args) < len(spec.positional):
            call.args.append(None)

    def value(self, argument: Argument, kind: str, what: str) -> object:
        if kind == "number":
            if not isinstance(argument, Number):
                raise self.error(argument, f"{what} must be a number")
            return argument.value
        if not isinstance(argument, StringList):
            raise self.error(argument, f"{what} must be a string{' list' if kind == 'strings' else ''}")
        values = argument.values
        if "encoded-character" in self.required:
            values = tuple(decode_encoded_characters(value) for value in values)
        if kind == "strings":
            return values
        if argument.bracketed and len(values) != 1:
            raise self.error(argument, f"{what} must be one string, not a list")
        return values[0]

    def children(self, node: Command | Test, spec: Spec, call: Call) -> None:
        if spec.tests == "none" and node.tests:
            raise self.error(node, f"{node.name} takes no test")
        if spec.tests == "one" and (len(node.tests) != 1 or node.test_list):
            raise self.error(node, f"{node.name} takes exactly one test")
        if spec.tests == "list" and not node.test_list:
            raise self.error(node, f"{node.name} takes a list of tests in parentheses")
        call.tests = [self.node(test, "test") for test in node.tests]
        block = getattr(node, "block", None)
        if spec.block and block is None:
            raise self.error(node, f"{node.name} needs a block {{ ... }}")
        if not spec.block and block is not None:
            raise self.error(node, f"{node.name} takes no block")
        if block is not None:
            call.block = self.block(block)
        if "comparator" in call.tags:
            self.comparator(node, call)
        if call.tags.get("comparator") == "i;ascii-numeric" and call.tags.get("match") in (":contains", ":matches"):
            raise self.error(node, f"comparator i;ascii-numeric cannot do {call.tags['match']}")

    def comparator(self, node, call: Call) -> None:
        name = str(call.tags["comparator"]).lower()
        if name not in COMPARATORS:
            raise self.error(node, f"unknown comparator {name!r} (known: {', '.join(COMPARATORS)})")
        self.needs(node, COMPARATORS[name], f"comparator {name}")
        call.tags["comparator"] = name

    # -- literal checks (skipped where a variable may change the text) ---------------

    def constant(self, text: str) -> bool:
        return "variables" not in self.required or "${" not in text


_ENCODED = re.compile(r"\$\{(hex|unicode):([ \t\r\n0-9A-Fa-f]*)\}", re.IGNORECASE)


def decode_encoded_characters(text: str) -> str:
    """RFC 5228 section 2.4.2.4: ``${hex:41 42}`` and ``${unicode:263a}`` in a string.

    A sequence that is not well formed (an empty one, a code point past
    U+10FFFF or a surrogate) stays as written, as the RFC says.
    """
    def replace(match: re.Match) -> str:
        numbers = match.group(2).split()
        if not numbers:
            return match.group(0)
        if match.group(1).lower() == "hex":
            if any(len(number) > 2 for number in numbers):
                return match.group(0)
            return bytes(int(number, 16) for number in numbers).decode("utf-8", "replace")
        points = [int(number, 16) for number in numbers]
        if any(point > 0x10FFFF or 0xD800 <= point <= 0xDFFF for point in points):
            return match.group(0)
        return "".join(chr(point) for point in points)

    return _ENCODED.sub(replace, text) if "${" in text else text


def _check_header_names(checker: _Checker, node, names, address_only: bool = False) -> None:
    for name in names:
        if not checker.constant(name):
            continue
        if not _HEADER_NAME.fullmatch(name):
            raise checker.error(node, f"{name!r} is not a header field name")
        if address_only and name.lower() not in ADDRESS_HEADERS:
            raise checker.error(node, f"{name!r} does not hold addresses (the address test reads only those)")


def _check_address(checker, node, call) -> None:
    _check_header_names(checker, node, call.args[0], address_only=True)


def _check_header(checker, node, call) -> None:
    _check_header_names(checker, node, call.args[0])


def _check_exists(checker, node, call) -> None:
    _check_header_names(checker, node, call.args[0])


def _check_envelope(checker, node, call) -> None:
    for part in call.args[0]:
        if checker.constant(part) and part.lower() not in ("from", "to"):
            raise checker.error(node, f"envelope part {part!r} is not from or to")


def _check_size(checker, node, call) -> None:
    if "size" not in call.tags:
        raise checker.error(node, "size needs :over or :under")


def _check_redirect(checker, node, call) -> None:
    from cyrusmail.sieve.message import valid_address

    if checker.constant(call.args[0]) and not valid_address(call.args[0]):
        raise checker.error(node, f"redirect to {call.args[0]!r}: not an address")


def _check_vacation(checker, node, call) -> None:
    from cyrusmail.sieve.message import valid_address

    days = call.tags.get("days")
    if days is not None and days < 0:
        raise checker.error(node, ":days must not be negative")
    sender = call.tags.get("from")
    if isinstance(sender, str) and checker.constant(sender) and not valid_address(sender, with_name=True):
        raise checker.error(node, f":from {sender!r} is not an address")


def _check_set(checker, node, call) -> None:
    name = call.args[0]
    if not _VARIABLE_NAME.fullmatch(name):
        raise checker.error(node, f"{name!r} is not a variable name")
    if "." in name and not name.lower().startswith("global."):
        raise checker.error(node, f"{name!r}: no namespace {name.split('.')[0]!r}")


def _check_flag_variable(checker, node, call) -> None:
    names = call.args[0]
    if names is None:
        return
    checker.needs(node, "variables", f"{node.name} with a variable name")
    for name in (names,) if isinstance(names, str) else names:
        if not _VARIABLE_NAME.fullmatch(name):
            raise checker.error(node, f"{name!r} is not a variable name")


def _check_addheader(checker, node, call) -> None:
    _check_header_names(checker, node, call.args[:1])


def _check_deleteheader(checker, node, call) -> None:
    _check_header_names(checker, node, call.args[:1])
    if "last" in call.tags and "index" not in call.tags:
        raise checker.error(node, ":last needs :index")
    if call.tags.get("index") == 0:
        raise checker.error(node, ":index counts from 1")


def _check_date(checker, node, call) -> None:
    zone = call.tags.get("zone")
    if isinstance(zone, str) and zone != ":originalzone" and checker.constant(zone) and not _ZONE.fullmatch(zone):
        raise checker.error(node, f"zone {zone!r} is not +hhmm or -hhmm")
    if node.name == "date":
        _check_header_names(checker, node, call.args[:1])
    part = call.args[-2]
    if checker.constant(part) and part.lower() not in DATE_PARTS:
        raise checker.error(node, f"date part {part!r} is not one of {', '.join(DATE_PARTS)}")


def _check_include(checker, node, call) -> None:
    name = call.args[0]
    if checker.constant(name) and ("/" in name or not name or len(name) > 512):
        raise checker.error(node, f"{name!r} is not a script name")


def _check_global(checker, node, call) -> None:
    checker.needs(node, "variables", "global")
    for name in call.args[0]:
        if not _VARIABLE_NAME.fullmatch(name) or "." in name:
            raise checker.error(node, f"{name!r} is not a variable name")


_EXTRA_CHECKS = {
    "address": _check_address, "header": _check_header, "exists": _check_exists, "envelope": _check_envelope,
    "size": _check_size, "redirect": _check_redirect, "vacation": _check_vacation, "set": _check_set,
    "setflag": _check_flag_variable, "addflag": _check_flag_variable, "removeflag": _check_flag_variable,
    "hasflag": _check_flag_variable, "addheader": _check_addheader, "deleteheader": _check_deleteheader,
    "date": _check_date, "currentdate": _check_date, "include": _check_include, "global": _check_global,
}
