"""cyrusmail.mime checked against the Dovecot and Cyrus answers in the shared corpus.

For every message of ``../shared/corpus`` (see its README) and each server
that accepted it: ENVELOPE, BODYSTRUCTURE and BODY are compared as parsed
values (quoting and the case of case-insensitive tokens aside), and every
section the server returned is compared by length and SHA-256.  Where we
knowingly differ, ``tests/data/mime_divergences.json`` says so and why;
a listed difference that has gone away fails too, so the table stays true.
"""

from __future__ import annotations

import hashlib
import json
import sys
import unittest
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_mime_sexp import normalise_body, read_sexp

from cyrusmail.mime import MessageInfo, header_fields, parse
from cyrusmail.mime.headers import header_end

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
DIVERGENCES = Path(__file__).resolve().parent / "data" / "mime_divergences.json"
FIELDS_KEY = "HEADER.FIELDS (From To Subject Date Message-ID)"


def _load_divergences() -> dict[tuple[str, str, str], dict[str, Any]]:
    table = json.loads(DIVERGENCES.read_text())["divergences"]
    return {(entry["message"], entry["item"], server): entry
            for entry in table for server in entry["differs_from"]}


def _section(info: MessageInfo, data: bytes, key: str) -> bytes | None:
    """Our answer to ``BODY[key]``, the way the FETCH layer will compute it."""
    if key == FIELDS_KEY:
        start, end = info.section_range((), "HEADER.FIELDS")
        return header_fields(data[start:end], [b"From", b"To", b"Subject", b"Date", b"Message-ID"],
                             exclude=False)
    numbers: list[int] = []
    text = ""
    pieces = key.split(".") if key else []
    for index, piece in enumerate(pieces):
        if not piece.isdigit():
            text = ".".join(pieces[index:])
            break
        numbers.append(int(piece))
    found = info.section_range(tuple(numbers), text)
    return None if found is None else data[found[0]:found[1]]


def munge_8bit_header(data: bytes) -> bytes:
    """What Cyrus stores with ``munge8bit: yes``: 8-bit header bytes become ``X``."""
    end = header_end(data, 0, len(data))
    return bytes(byte if byte < 0x80 else 0x58 for byte in data[:end]) + data[end:]


def _ours(data: bytes) -> dict[str, Any]:
    info = parse(data)
    return {
        "info": info,
        "envelope": read_sexp(info.envelope_wire()),
        "bodystructure": normalise_body(read_sexp(info.bodystructure_wire())),
        "body": normalise_body(read_sexp(info.body_wire())),
    }


@unittest.skipUnless((CORPUS / "oracle").is_dir(),
                     f"reference corpus not found at {CORPUS} (see the issue 3 brief)")
class CorpusOracleTests(unittest.TestCase):
    """Our answers equal the servers' unless the divergence table says otherwise."""

    def _records(self) -> list[tuple[str, dict[str, Any]]]:
        records = []
        for path in sorted((CORPUS / "oracle").glob("*.json")):
            if path.name.startswith("_"):
                continue
            records.append((path.stem, json.loads(path.read_text())))
        return records

    def _check(self, name: str, server: str, item: str, ours: Any, theirs: Any,
               divergences: dict[tuple[str, str, str], dict[str, Any]], seen: set) -> None:
        key = (name, item, server)
        with self.subTest(message=name, server=server, item=item):
            if key in divergences:
                seen.add(key)
                self.assertNotEqual(ours, theirs, "listed as a divergence but now agrees")
            else:
                self.assertEqual(ours, theirs)

    def test_against_dovecot_and_cyrus(self) -> None:
        divergences = _load_divergences()
        seen: set[tuple[str, str, str]] = set()
        records = self._records()
        self.assertEqual(len(records), 96)
        compared = 0
        for name, record in records:
            original = (CORPUS / "messages" / record["message"]).read_bytes()
            for server, answer in sorted(record["servers"].items()):
                if "rejected" in answer:
                    continue
                data = original if answer["stored_unchanged"] else munge_8bit_header(original)
                ours = _ours(data)
                self._check(name, server, "size", ours["info"].size, answer["rfc822_size"],
                            divergences, seen)
                for item in ("envelope", "bodystructure", "body"):
                    theirs = read_sexp(answer[item].encode("latin-1"))
                    if item != "envelope":
                        theirs = normalise_body(theirs)
                    self._check(name, server, item, ours[item], theirs, divergences, seen)
                for key, expected in answer["sections"].items():
                    got = _section(ours["info"], data, key)
                    got_digest = None if got is None else (len(got), hashlib.sha256(got).hexdigest())
                    theirs_digest = (expected["length"], expected["sha256"])
                    self._check(name, server, "section:" + key, got_digest, theirs_digest,
                                divergences, seen)
                compared += 1
        self.assertEqual(compared, 96 + 93)
        self.assertEqual(set(divergences) - seen, set(), "divergence entries that match nothing")

    def test_divergence_table_is_complete(self) -> None:
        for entry in json.loads(DIVERGENCES.read_text())["divergences"]:
            with self.subTest(entry=(entry["message"], entry["item"])):
                self.assertIn(entry["we_follow"], ("cyrus", "dovecot", "neither"))
                self.assertTrue(entry["reason"])
                self.assertTrue((CORPUS / "messages" / (entry["message"] + ".eml")).exists())

    def test_wire_forms_are_deterministic_and_survive_the_blob(self) -> None:
        for path in sorted((CORPUS / "messages").glob("*.eml")):
            data = path.read_bytes()
            first, second = parse(data), parse(data)
            with self.subTest(message=path.name):
                self.assertEqual(first.to_bytes(), second.to_bytes())
                again = MessageInfo.from_bytes(first.to_bytes())
                self.assertEqual(again.bodystructure_wire(), first.bodystructure_wire())
                self.assertEqual(again.envelope_wire(), first.envelope_wire())
                self.assertEqual(again.section_range((1,), ""), first.section_range((1,), ""))
