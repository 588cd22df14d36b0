"""BODYSTRUCTURE and BODY (RFC 3501 section 7.4.2) of a scanned part tree.

The form is Cyrus's: media type, subtype, transfer encoding, parameter
names and disposition type in upper case, parameter values as sent, no
space between the bodies of a multipart.  Text parts without a
Content-Type get ``("CHARSET" "us-ascii")``; parts that name a type but no
charset get only the parameters they have (Cyrus; Dovecot adds a charset).
"""

from __future__ import annotations

from cyrusmail.imapform import nstring, string
from cyrusmail.mime.params import Params
from cyrusmail.mime.structure import MESSAGE, MULTIPART, Part


def _params(params: Params) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(string(name) + b" " + string(value) for name, value in params) + b")"


def _disposition(part: Part) -> bytes:
    if part.disposition is None:
        return b"NIL"
    kind, params = part.disposition
    return b"(" + string(kind) + b" " + _params(params) + b")"


def _language(part: Part) -> bytes:
    if not part.language:
        return b"NIL"
    if len(part.language) == 1:
        return string(part.language[0])
    return b"(" + b" ".join(string(tag) for tag in part.language) + b")"


def part_wire(part: Part, extensible: bool) -> bytes:
    """The BODYSTRUCTURE (``extensible``) or BODY of ``part``."""
    if part.kind == MULTIPART:
        items = [b"".join(part_wire(child, extensible) for child in part.children),
                 string(part.subtype)]
        if extensible:
            items += [_params(part.params), _disposition(part), _language(part),
                      nstring(part.location)]
        return b"(" + b" ".join(items) + b")"
    items = [
        string(part.media_type), string(part.subtype), _params(part.params),
        nstring(part.content_id), nstring(part.description), string(part.encoding),
        b"%d" % part.size,
    ]
    if part.kind == MESSAGE:
        inner = part.children[0]
        items += [inner.envelope or b"NIL", part_wire(inner, extensible), b"%d" % part.lines]
    elif part.media_type == b"TEXT":
        items.append(b"%d" % part.lines)
    if extensible:
        items += [nstring(part.md5), _disposition(part), _language(part),
                  nstring(part.location)]
    return b"(" + b" ".join(items) + b")"
