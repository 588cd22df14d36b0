"""Test-only stand-ins for cyrusmail.imap.fetch and cyrusmail.imap.search.

Those modules are written on another branch; until they are merged the
session tests install these minimal versions under the same names (and
only when the real ones are missing), following the agreed contract.
"""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass

from cyrusmail.imap import commands as c
from cyrusmail.imap.flags import flags_wire
from cyrusmail.store.records import Flag


def _fetch_module() -> types.ModuleType:
    module = types.ModuleType("cyrusmail.imap.fetch")

    @dataclass(frozen=True)
    class MessageView:
        seq: int
        record: object
        mailbox: object
        recent: bool

    @dataclass(frozen=True)
    class FetchPlan:
        items: tuple
        sets_seen: bool

    @dataclass(frozen=True)
    class FileSlice:
        uid: int
        start: int
        end: int

    class FetchError(Exception):
        code = "UNKNOWN-CTE"

    def plan_fetch(items, uid_command):
        items = tuple(items)
        if uid_command and c.FetchAttribute("UID") not in items:
            items = (c.FetchAttribute("UID"), *items)
        sets_seen = any(
            (isinstance(item, c.FetchBody) and not item.peek)
            or (isinstance(item, c.FetchAttribute) and item.attribute in ("RFC822", "RFC822.TEXT"))
            for item in items
        )
        return FetchPlan(items, sets_seen)

    def render_fetch(plan, view):
        record = view.record
        pieces = [b"* %d FETCH (" % view.seq]
        first = True
        for item in plan.items:
            pieces.append(b"" if first else b" ")
            first = False
            if isinstance(item, c.FetchAttribute):
                name = item.attribute
                if name == "UID":
                    pieces.append(b"UID %d" % record.uid)
                elif name == "FLAGS":
                    pieces.append(b"FLAGS " + flags_wire(record, view.recent))
                elif name == "RFC822.SIZE":
                    pieces.append(b"RFC822.SIZE %d" % record.size)
                elif name == "INTERNALDATE":
                    stamp = time.strftime("%d-%b-%Y %H:%M:%S +0000", time.gmtime(record.internal_date))
                    pieces.append(b'INTERNALDATE "' + stamp.encode() + b'"')
                elif name == "MODSEQ":
                    pieces.append(b"MODSEQ (%d)" % record.modseq)
                elif name in ("RFC822.HEADER", "RFC822.TEXT"):
                    data = view.mailbox.read(record.uid)
                    split = data.find(b"\r\n\r\n")
                    split = len(data) if split < 0 else split + 4
                    if name == "RFC822.HEADER":
                        pieces.append(b"RFC822.HEADER {%d}\r\n" % split + data[:split])
                    else:
                        pieces += [b"RFC822.TEXT {%d}\r\n" % (len(data) - split),
                                   FileSlice(record.uid, split, len(data))]
                elif name in ("RFC822", "RFC822.PEEK"):
                    pieces += [b"RFC822 {%d}\r\n" % record.size, FileSlice(record.uid, 0, record.size)]
                else:
                    pieces.append(name.encode() + b" NIL")
            elif isinstance(item, c.FetchBody) and item.section == c.Section():
                start, end = 0, record.size
                label = b"BODY[]"
                if item.partial is not None:
                    origin, length = item.partial
                    start, end = min(origin, record.size), min(origin + length, record.size)
                    label += b"<%d>" % origin
                pieces += [label + b" {%d}\r\n" % (end - start), FileSlice(record.uid, start, end)]
            elif isinstance(item, c.FetchBody) and item.section in (c.Section(text="HEADER"), c.Section(text="TEXT")):
                data = view.mailbox.read(record.uid)
                split = data.find(b"\r\n\r\n")
                split = len(data) if split < 0 else split + 4
                chosen = data[:split] if item.section.text == "HEADER" else data[split:]
                pieces.append(b"BODY[%s] {%d}\r\n" % (item.section.text.encode(), len(chosen)) + chosen)
            else:
                pieces.append(b"BODY[] NIL")
        pieces.append(b")\r\n")
        return pieces

    module.MessageView = MessageView
    module.FetchPlan = FetchPlan
    module.FileSlice = FileSlice
    module.FetchError = FetchError
    module.plan_fetch = plan_fetch
    module.render_fetch = render_fetch
    return module


def _search_module() -> types.ModuleType:
    module = types.ModuleType("cyrusmail.imap.search")

    class BadCharset(Exception):
        pass

    def check_charset(charset):
        if charset is not None and charset not in ("UTF-8", "US-ASCII"):
            raise BadCharset(charset)

    def matches(key, mailbox, record, seqs, recent, maximum):
        if isinstance(key, c.SearchAll):
            return True
        if isinstance(key, c.SearchAnd):
            return all(matches(k, mailbox, record, seqs, recent, maximum) for k in key.keys)
        if isinstance(key, c.SearchOr):
            return matches(key.left, mailbox, record, seqs, recent, maximum) or matches(
                key.right, mailbox, record, seqs, recent, maximum)
        if isinstance(key, c.SearchNot):
            return not matches(key.key, mailbox, record, seqs, recent, maximum)
        if isinstance(key, c.SearchFlag):
            if key.flag == "\\Recent":
                return record.uid in recent
            bits = {"\\Seen": Flag.SEEN, "\\Answered": Flag.ANSWERED, "\\Flagged": Flag.FLAGGED,
                    "\\Deleted": Flag.DELETED, "\\Draft": Flag.DRAFT}
            if key.flag in bits:
                return bool(record.flags & bits[key.flag])
            return key.flag in record.keywords
        if isinstance(key, c.SearchSequence):
            if key.uid:
                return key.sequence_set.contains(record.uid, max(seqs))
            return key.sequence_set.contains(seqs[record.uid], len(seqs))
        if isinstance(key, c.SearchSize):
            return record.size > key.size if key.relation == "larger" else record.size < key.size
        if isinstance(key, (c.SearchHeader, c.SearchBody, c.SearchText)):
            data = mailbox.read(record.uid)
            head, _, body = data.partition(b"\r\n\r\n")
            value = key.value.lower()
            if isinstance(key, c.SearchHeader):
                for line in head.split(b"\r\n"):
                    name, _, rest = line.partition(b":")
                    if name.strip().upper() == key.field.encode() and value in rest.lower():
                        return True
                return False
            return value in (body if isinstance(key, c.SearchBody) else data).lower()
        if isinstance(key, c.SearchModSeq):
            return record.modseq >= key.modseq
        raise NotImplementedError(key)

    def search(criteria, mailbox, records, seqs, recent):
        maximum = max(seqs) if seqs else 0
        return [record for record in records if matches(criteria, mailbox, record, seqs, recent, maximum)]

    module.BadCharset = BadCharset
    module.check_charset = check_charset
    module.search = search
    return module


def install() -> None:
    """Put the stand-ins in place of modules that do not exist yet."""
    for name, build in (("cyrusmail.imap.fetch", _fetch_module), ("cyrusmail.imap.search", _search_module)):
        try:
            __import__(name)
        except ModuleNotFoundError:
            module = build()
            sys.modules[name] = module
            import cyrusmail.imap as package

            setattr(package, name.rsplit(".", 1)[1], module)


def using_standins() -> bool:
    return getattr(sys.modules.get("cyrusmail.imap.fetch"), "__file__", None) is None
