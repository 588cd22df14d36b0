"""Random MIME trees, written by the stdlib ``email`` package, read back by us.

Hypothesis builds trees of multiparts (with boundaries that are prefixes of
one another), message/rfc822 parts and leaves in 7bit, quoted-printable and
base64; ``email`` serialises them with CRLF.  For every part our section
must be exactly the bytes ``email``'s own parser finds, the transfer
decoding must give back what was put in, and BODYSTRUCTURE must list the
same types in the same shape.
"""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
import sys
import unittest
from email.generator import BytesGenerator
from email.message import Message
from io import BytesIO
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_mime_sexp import read_sexp

from cyrusmail.mime import MessageInfo, body_text, parse
from cyrusmail.mime.text import decode_transfer

POLICY = email.policy.compat32.clone(linesep="\r\n")
_LINE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .,=-", min_size=0, max_size=40) \
    .filter(lambda line: not line.startswith("-") and not line.startswith("From "))
_TEXT = st.lists(_LINE, min_size=0, max_size=6).map("\r\n".join)


@st.composite
def leaves(draw: st.DrawFn) -> tuple[Message, bytes]:
    """A leaf part and the decoded bytes it must give back."""
    encoding = draw(st.sampled_from(["7bit", "quoted-printable", "base64"]))
    part = Message()
    if encoding == "base64" and draw(st.booleans()):
        raw = draw(st.binary(max_size=300))
        part["Content-Type"] = "application/octet-stream"
    else:
        raw = draw(_TEXT).encode("ascii")
        part["Content-Type"] = 'text/plain; charset="us-ascii"'
    part["Content-Transfer-Encoding"] = encoding
    if encoding == "base64":
        payload = base64.encodebytes(raw).decode("ascii").replace("\n", "\r\n").rstrip("\r\n")
    elif encoding == "quoted-printable":
        payload = "\r\n".join(quopri.encodestring(line).decode("ascii")
                              for line in raw.split(b"\r\n"))
    else:
        payload = raw.decode("ascii")
    part.set_payload(payload)
    return part, raw


def trees(boundary_stem: str) -> st.SearchStrategy[tuple[Message, object]]:
    """Message trees; ``expected`` mirrors the tree with the decoded leaf bytes."""

    def extend(children: st.SearchStrategy) -> st.SearchStrategy:
        @st.composite
        def multipart(draw: st.DrawFn) -> tuple[Message, object]:
            kids = draw(st.lists(children, min_size=1, max_size=4))
            part = Message()
            subtype = draw(st.sampled_from(["mixed", "alternative", "related"]))
            suffix = draw(st.text(alphabet="abcXYZ019'()+_,./:=?", min_size=1, max_size=12))
            boundary = boundary_stem + suffix
            part["Content-Type"] = f'multipart/{subtype}; boundary="{boundary}"'
            for kid, _ in kids:
                part.attach(kid)
            part.set_boundary(boundary)
            return part, [expected for _, expected in kids]

        @st.composite
        def rfc822(draw: st.DrawFn) -> tuple[Message, object]:
            inner, expected = draw(children)
            inner["Subject"] = "inner " + draw(st.text(alphabet="abc ", max_size=8))
            part = Message()
            part["Content-Type"] = "message/rfc822"
            part.attach(inner)
            return part, ("message", expected)

        return multipart() | rfc822()

    return st.recursive(leaves(), extend, max_leaves=8)


def make_boundaries_unique(message: Message) -> None:
    """Append a depth-first number to each boundary: distinct, yet b1 is a prefix of b10."""
    counter = 0

    def walk(part: Message) -> None:
        nonlocal counter
        if part.is_multipart():
            if part.get_content_maintype() == "multipart":
                counter += 1
                part.set_boundary(part.get_boundary() + str(counter))
            for child in part.get_payload():
                walk(child)

    walk(message)


def serialise(message: Message) -> bytes:
    out = BytesIO()
    BytesGenerator(out, policy=POLICY, mangle_from_=False).flatten(message)
    return out.getvalue()


def _child_count(body: list) -> int:
    count = 0
    while count < len(body) and isinstance(body[count], list):
        count += 1
    return count


class GeneratedTreeTests(unittest.TestCase):
    """Our sections equal what ``email`` parses from the bytes ``email`` wrote."""

    def _check_part(self, info: MessageInfo, data: bytes, path: tuple[int, ...],
                    theirs: Message, expected: object, ours_body: list) -> None:
        start, end = info.section_range(path, "")
        if theirs.get_content_maintype() == "multipart":
            self.assertIsInstance(expected, list)
            self.assertEqual(_child_count(ours_body), len(theirs.get_payload()))
            for index, (child, child_expected) in enumerate(zip(theirs.get_payload(), expected), 1):
                self._check_part(info, data, path + (index,), child, child_expected,
                                 ours_body[index - 1])
            return
        if theirs.get_content_type() == "message/rfc822":
            self.assertEqual(ours_body[:2], [b"MESSAGE", b"RFC822"])
            inner = theirs.get_payload()[0]
            header_start, header_end = info.section_range(path, "HEADER")
            self.assertEqual(data[header_start:header_end].split(b"\r\n\r\n")[0],
                             serialise(inner).split(b"\r\n\r\n")[0])
            _, inner_expected = expected
            inner_body = ours_body[8]
            if inner.get_content_maintype() == "multipart":
                for index, (child, child_expected) in enumerate(
                        zip(inner.get_payload(), inner_expected), 1):
                    self._check_part(info, data, path + (index,), child, child_expected,
                                     inner_body[index - 1])
            else:
                self._check_part(info, data, path + (1,), inner, inner_expected, inner_body)
            return
        raw_payload = theirs.get_payload(decode=False).encode("ascii")
        self.assertEqual(data[start:end], raw_payload)
        encoding = theirs["Content-Transfer-Encoding"].encode("ascii")
        self.assertEqual(decode_transfer(data[start:end], encoding), expected)
        self.assertEqual(ours_body[5], encoding.upper())
        self.assertEqual(ours_body[6], end - start)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(["b", "=_", "boundary", "x'y"]).flatmap(trees),
           st.text(alphabet="abc ", max_size=10))
    def test_sections_reproduce_email_parts(self, tree: tuple[Message, object], subject: str) -> None:
        message, expected = tree
        message["Subject"] = subject
        make_boundaries_unique(message)
        data = serialise(message)
        theirs = email.message_from_bytes(data, policy=POLICY)
        info = parse(data)
        again = MessageInfo.from_bytes(info.to_bytes())
        ours_body = read_sexp(again.bodystructure_wire())
        if theirs.get_content_maintype() == "multipart":
            self._check_part(again, data, (), theirs, expected, ours_body)
            self.assertEqual(len(theirs.get_payload()), _child_count(ours_body))
        else:
            self._check_part(again, data, (1,), theirs, expected, ours_body)
        header_start, header_end = again.section_range((), "HEADER")
        self.assertEqual(data[header_start:header_end], data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
        self.assertEqual(again.section_range((), "TEXT"), (header_end, len(data)))
        body_text(data, again)  # never raises on anything we can write

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2000))
    def test_arbitrary_bytes_never_raise(self, data: bytes) -> None:
        info = parse(data)
        read_sexp(info.bodystructure_wire())
        read_sexp(info.envelope_wire())
        read_sexp(info.body_wire())
        self.assertEqual(info.size, len(data))
        body_text(data, info)
        info.search_headers()

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from([
        b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/plain\r\n", b"--b\r\n", b"--b--\r\n", b"--bb\r\n", b"\r\n", b"\n",
        b"text\r\n", b"Subject: s\r\n", b"From: <a@b>\r\n", b" folded\r\n", b"=?x?q?y?=\r\n",
    ]), max_size=40).map(b"".join))
    def test_mime_shaped_noise_gives_consistent_ranges(self, data: bytes) -> None:
        info = parse(data)
        body = read_sexp(info.bodystructure_wire())
        for path in [(), (1,), (1, 1), (2,), (1, 2), (2, 1), (1, 1, 1)]:
            for text in ("", "MIME", "HEADER", "TEXT"):
                found = info.section_range(path, text)
                if found is not None:
                    self.assertLessEqual(0, found[0])
                    self.assertLessEqual(found[0], found[1])
                    self.assertLessEqual(found[1], len(data))
        self.assertIsInstance(body, list)
