"""MessageInfo: the cached parse of one message, and its compact blob.

The blob holds the finished wire bytes of ENVELOPE, BODYSTRUCTURE and BODY,
the top-level header (for HEADER.FIELDS, SEARCH HEADER and the decoded
search fields), the sent date, and a table of every entity's byte offsets.
Answering FETCH from it is a slice; nothing is parsed again.

Layout, little-endian::

    b"CMM1" size env_len bs_len body_len header_len node_count sent_ordinal
    envelope bodystructure body top-header
    node_count * (header_start body_start body_end kind child_count)

Nodes are in depth-first order; a message/rfc822 node's one child is the
encapsulated message entity.
"""

from __future__ import annotations

import datetime
import struct
from email.utils import parsedate_tz

from cyrusmail.mime.bodystructure import both_wires
from cyrusmail.mime.headers import iter_fields, unfold
from cyrusmail.mime.structure import LEAF, MESSAGE, MULTIPART, Part, scan
from cyrusmail.mime.text import decode_header_value

_MAGIC = b"CMM1"
_HEAD = struct.Struct("<4sIIIIIIi")
_NODE = struct.Struct("<IIIII")
_TEXT_FLAG = 0x10
_KIND_MASK = 0x0F

SEARCH_FIELDS = ("from", "to", "cc", "bcc", "subject", "date", "message-id",
                 "in-reply-to", "reply-to", "sender")

_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


def _sent_ordinal(header: bytes) -> int:
    """The Date: field's calendar day as a proleptic ordinal, 0 if unusable."""
    for name, value in iter_fields(header):
        if name == b"date":
            try:
                parsed = parsedate_tz(unfold(value).decode("latin-1"))
                if parsed is None:
                    return 0
                return datetime.date(parsed[0], parsed[1], parsed[2]).toordinal()
            except (ValueError, TypeError, OverflowError, IndexError):
                return 0
    return 0


def _flatten(part: Part, out: list[bytes]) -> None:
    stack = [part]
    while stack:
        node = stack.pop()
        kind = node.kind
        if kind == LEAF and node.media_type == b"TEXT":
            kind |= _TEXT_FLAG
        out.append(_NODE.pack(node.header_start, node.body_start, node.body_end,
                              kind, len(node.children)))
        stack.extend(reversed(node.children))


def build_blob(data: bytes) -> bytes:
    """Scan ``data`` and pack everything FETCH and SEARCH need."""
    root = scan(data)
    envelope = root.envelope or b"NIL"
    bodystructure, body = both_wires(root)
    header = data[root.header_start:root.body_start]
    nodes: list[bytes] = []
    _flatten(root, nodes)
    return b"".join([
        _HEAD.pack(_MAGIC, len(data), len(envelope), len(bodystructure), len(body),
                   len(header), len(nodes), _sent_ordinal(header)),
        envelope, bodystructure, body, header, *nodes,
    ])


def fallback_blob(data: bytes) -> bytes:
    """A blob for a message the scanner failed on: one opaque body, no envelope."""
    size = len(data)
    envelope = b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    body = b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "7BIT" %d)' % size
    bodystructure = body[:-1] + b" NIL NIL NIL NIL)"
    return b"".join([
        _HEAD.pack(_MAGIC, size, len(envelope), len(bodystructure), len(body), 0, 1, 0),
        envelope, bodystructure, body, _NODE.pack(0, 0, size, LEAF, 0),
    ])


class MessageInfo:
    """What FETCH and SEARCH need about one message, read from its blob."""

    __slots__ = (
        "_blob",
        "_body_end",
        "_bs_end",
        "_children",
        "_env_end",
        "_header_end",
        "_node_count",
        "_nodes",
        "_sent",
        "size",
    )

    def __init__(self, blob: bytes) -> None:
        magic, size, env_len, bs_len, body_len, header_len, node_count, sent = \
            _HEAD.unpack_from(blob)
        if magic != _MAGIC:
            raise ValueError("not a cyrusmail MIME cache blob")
        self._blob = blob
        self.size: int = size
        self._env_end = _HEAD.size + env_len
        self._bs_end = self._env_end + bs_len
        self._body_end = self._bs_end + body_len
        self._header_end = self._body_end + header_len
        self._node_count = node_count
        self._sent = sent
        self._nodes: list[tuple[int, int, int, int, int]] | None = None
        self._children: list[list[int]] | None = None

    @classmethod
    def from_bytes(cls, blob: bytes) -> MessageInfo:
        """The info stored by :meth:`to_bytes`."""
        return cls(blob)

    def to_bytes(self) -> bytes:
        """The compact, deterministic blob for the index's MIME-cache slot."""
        return self._blob

    def envelope_wire(self) -> bytes:
        return self._blob[_HEAD.size:self._env_end]

    def bodystructure_wire(self) -> bytes:
        return self._blob[self._env_end:self._bs_end]

    def body_wire(self) -> bytes:
        return self._blob[self._bs_end:self._body_end]

    def header_bytes(self) -> bytes:
        """The top-level header as ``BODY[HEADER]`` returns it."""
        return self._blob[self._body_end:self._header_end]

    # -- the node table ----------------------------------------------------

    def _table(self) -> tuple[list[tuple[int, int, int, int, int]], list[list[int]]]:
        if self._nodes is None:
            nodes = list(_NODE.iter_unpack(
                self._blob[self._header_end:self._header_end + self._node_count * _NODE.size]))
            children: list[list[int]] = [[] for _ in nodes]
            # Depth-first order: rebuild parent links with a stack of open nodes.
            open_nodes: list[list[int]] = []  # [index, children still expected]
            for index, node in enumerate(nodes):
                if open_nodes:
                    parent = open_nodes[-1]
                    children[parent[0]].append(index)
                    parent[1] -= 1
                    if parent[1] == 0:
                        open_nodes.pop()
                if node[4]:
                    open_nodes.append([index, node[4]])
                while open_nodes and open_nodes[-1][1] == 0:
                    open_nodes.pop()
            self._nodes, self._children = nodes, children
        return self._nodes, self._children  # type: ignore[return-value]

    def _message_child(self, node: int, number: int) -> int | None:
        """Part ``number`` of the message entity ``node`` (RFC 3501 6.4.5)."""
        nodes, children = self._table()
        if nodes[node][3] & _KIND_MASK == MULTIPART:
            kids = children[node]
            return kids[number - 1] if number <= len(kids) else None
        return node if number == 1 else None

    def section_range(self, part: tuple[int, ...], text: str = "") -> tuple[int, int] | None:
        """Absolute ``(start, end)`` of ``BODY[part.text]``, None if there is none.

        ``text`` is "", "HEADER", "TEXT", "MIME" or "HEADER.FIELDS[.NOT]" (the
        header's range; filter it with :func:`header_fields`).
        """
        text = text.upper()
        nodes, children = self._table()
        if not part:
            header_start, body_start, body_end = nodes[0][:3]
            if text == "":
                return (header_start, body_end)
            if text in _HEADER_TEXTS:
                return (header_start, body_start)
            if text == "TEXT":
                return (body_start, body_end)
            return None
        node: int | None = None
        for number in part:
            if number < 1:
                return None
            if node is None:
                node = self._message_child(0, number)
            else:
                kind = nodes[node][3] & _KIND_MASK
                if kind == MULTIPART:
                    kids = children[node]
                    node = kids[number - 1] if number <= len(kids) else None
                elif kind == MESSAGE:
                    node = self._message_child(children[node][0], number)
                else:
                    node = None
            if node is None:
                return None
        header_start, body_start, body_end, kind, _ = nodes[node]
        kind &= _KIND_MASK
        if text == "":
            return (body_start, body_end)
        if text == "MIME":
            return (header_start, body_start)
        if kind != MESSAGE:
            return None
        inner = nodes[children[node][0]]
        if text in _HEADER_TEXTS:
            return (inner[0], inner[1])
        if text == "TEXT":
            return (inner[1], inner[2])
        return None

    def text_parts(self) -> list[tuple[int, int, int]]:
        """``(header_start, body_start, body_end)`` of every text/* leaf, in order."""
        nodes, _ = self._table()
        return [node[:3] for node in nodes if node[3] & _TEXT_FLAG]

    def leaf_parts(self) -> list[tuple[int, int, int]]:
        """``(header_start, body_start, body_end)`` of every part that is not a
        multipart or an enclosed message, in order (Sieve's ``body :content``)."""
        nodes, _ = self._table()
        return [node[:3] for node in nodes if node[3] & _KIND_MASK not in (MULTIPART, MESSAGE)]

    # -- header access for SEARCH -------------------------------------------

    def header(self, name: str) -> list[bytes]:
        """Unfolded values of each top-level field called ``name``."""
        wanted = name.lower().encode("ascii", "replace")
        return [unfold(value).lstrip(b" \t") for field, value in iter_fields(self.header_bytes())
                if field == wanted]

    def search_headers(self) -> dict[str, str]:
        """The commonly searched fields, RFC 2047 decoded; repeats joined by a newline."""
        found: dict[str, list[str]] = {}
        for field, value in iter_fields(self.header_bytes()):
            name = field.decode("latin-1")
            if name in SEARCH_FIELDS:
                found.setdefault(name, []).append(
                    decode_header_value(unfold(value).strip(b" \t")))
        return {name: "\n".join(values) for name, values in found.items()}

    def sent_date(self) -> datetime.date | None:
        """The day of the Date: field as written (time and zone ignored), or None."""
        return datetime.date.fromordinal(self._sent) if self._sent > 0 else None

    def __repr__(self) -> str:
        return f"<MessageInfo size={self.size} {self.body_wire()[:60]!r}>"
