"""BODYSTRUCTURE and BODY (RFC 3501 section 7.4.2) of a scanned part tree.

The form is Cyrus's: media type, subtype, transfer encoding, parameter
names and disposition type in upper case, parameter values as sent, no
space between the bodies of a multipart.  Text parts without a
Content-Type get ``("CHARSET" "us-ascii")``; parts that name a type but no
charset get only the parameters they have (Cyrus; Dovecot adds a charset).
"""

from __future__ import annotations

from functools import lru_cache

from cyrusmail.imapform import nstring, string
from cyrusmail.mime.params import Params
from cyrusmail.mime.structure import MESSAGE, MULTIPART, Part

# Types, subtypes, encodings and parameter names repeat from part to part.
_token = lru_cache(maxsize=2048)(string)


def _params(params: Params) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_token(name) + b" " + string(value) for name, value in params) + b")"


def _disposition(part: Part) -> bytes:
    if part.disposition is None:
        return b"NIL"
    kind, params = part.disposition
    return b"(" + _token(kind) + b" " + _params(params) + b")"


def _language(part: Part) -> bytes:
    if not part.language:
        return b"NIL"
    if len(part.language) == 1:
        return string(part.language[0])
    return b"(" + b" ".join(string(tag) for tag in part.language) + b")"


def part_wire(part: Part, extensible: bool) -> bytes:
    """The BODYSTRUCTURE (``extensible``) or BODY of ``part``."""
    return both_wires(part)[0 if extensible else 1]


def both_wires(part: Part) -> tuple[bytes, bytes]:
    """``(BODYSTRUCTURE, BODY)`` of ``part``, built in one walk of the tree."""
    if part.kind == MULTIPART:
        wires = [both_wires(child) for child in part.children]
        subtype = _token(part.subtype)
        body = b"(" + b"".join(wire[1] for wire in wires) + b" " + subtype + b")"
        structure = b"(" + b" ".join([
            b"".join(wire[0] for wire in wires), subtype, _params(part.params),
            _disposition(part), _language(part), nstring(part.location),
        ]) + b")"
        return structure, body
    fields = [
        _token(part.media_type), _token(part.subtype), _params(part.params),
        nstring(part.content_id), nstring(part.description), _token(part.encoding),
        b"%d" % part.size,
    ]
    if part.kind == MESSAGE:
        inner = part.children[0]
        inner_structure, inner_body = both_wires(inner)
        envelope = inner.envelope or b"NIL"
        lines = b"%d" % part.lines
        body = b"(" + b" ".join([*fields, envelope, inner_body, lines]) + b")"
        fields += [envelope, inner_structure, lines]
    else:
        if part.media_type == b"TEXT":
            fields.append(b"%d" % part.lines)
        body = b"(" + b" ".join(fields) + b")"
    structure = b"(" + b" ".join([*fields, nstring(part.md5), _disposition(part),
                                  _language(part), nstring(part.location)]) + b")"
    return structure, body
