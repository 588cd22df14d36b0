"""How fast cyrusmail.mime parses messages and serves cached FETCH answers.

Run from the repository root::

    python bench/mime_bench.py [--corpus ../shared/corpus] [--runs 5]

Prints parse throughput (messages/s, MB/s) on the reference corpus and on a
generated set of typical 5-50 KB multipart messages, and the time to produce
ENVELOPE + BODYSTRUCTURE for 10,000 messages from their cache blobs.  Each
figure is the median of ``--runs`` runs.  Targets (issue 3): >= 2,000
typical messages/s on one core; < 50 ms for 10,000 cached answers.
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cyrusmail.mime import MessageInfo, parse


def typical_messages(count: int, seed: int = 3) -> list[bytes]:
    """Multipart messages of 5-50 KB: text + html alternative, maybe an attachment."""
    rng = random.Random(seed)
    words = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"mail", b"store", b"cyrus",
             b"quarterly", b"report", b"meeting", b"=C3=A9t=C3=A9"]
    messages = []
    for index in range(count):
        target = rng.randint(5_000, 50_000)
        text_size = rng.randint(1_000, max(1_500, target // 3))

        def paragraph(size: int) -> bytes:
            out = bytearray()
            while len(out) < size:
                line = b" ".join(rng.choice(words) for _ in range(10))
                out += line + b"\r\n"
            return bytes(out)

        plain = paragraph(text_size)
        html = b"<html><body><p>" + paragraph(text_size).replace(b"\r\n", b"</p>\r\n<p>") + b"</p></body></html>\r\n"
        header = (
            b"Received: from mx%d.example.net (mx.example.net [192.0.2.%d])\r\n\tby mail.example.com with ESMTPS id %d\r\n"
            b"\tfor <user@example.com>; Tue, 3 Mar 2020 10:00:00 +0100\r\n"
            b"From: \"Sender Number %d\" <sender%d@example.org>\r\n"
            b"To: User <user@example.com>, Other <other@example.com>\r\n"
            b"Cc: list@lists.example.com\r\n"
            b"Subject: =?UTF-8?Q?Quarterly_report_n=C2=B0?= %d\r\n"
            b"Date: Tue, 3 Mar 2020 10:00:%02d +0100\r\n"
            b"Message-ID: <%d.%d@example.org>\r\n"
            b"MIME-Version: 1.0\r\n"
            % (index, index % 250, index, index, index, index, index % 60, index, seed)
        )
        alternative = (
            b"--alt-%d\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n"
            b"--alt-%d\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n--alt-%d--\r\n"
            % (index, plain, index, html, index)
        )
        remaining = target - len(header) - len(alternative)
        if remaining > 2_000:
            raw = rng.randbytes(remaining * 3 // 4)
            encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
            body = (
                b"--mixed-%d\r\nContent-Type: multipart/alternative; boundary=\"alt-%d\"\r\n\r\n%s\r\n"
                b"--mixed-%d\r\nContent-Type: application/pdf; name=\"report-%d.pdf\"\r\n"
                b"Content-Disposition: attachment; filename=\"report-%d.pdf\"\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n%s\r\n--mixed-%d--\r\n"
                % (index, index, alternative, index, index, index, encoded, index)
            )
            top = b"Content-Type: multipart/mixed; boundary=\"mixed-%d\"\r\n\r\n" % index
        else:
            body = alternative
            top = b"Content-Type: multipart/alternative; boundary=\"alt-%d\"\r\n\r\n" % index
        messages.append(header + top + body)
    return messages


def time_parse(messages: list[bytes], runs: int) -> tuple[float, float]:
    """Median messages/s and MB/s for parse() of every message."""
    total_bytes = sum(len(message) for message in messages)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        for message in messages:
            parse(message)
        timings.append(time.perf_counter() - started)
    elapsed = statistics.median(timings)
    return len(messages) / elapsed, total_bytes / elapsed / 1e6


def time_cached_answers(blobs: list[bytes], runs: int) -> float:
    """Median milliseconds for ENVELOPE + BODYSTRUCTURE of every blob."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        for blob in blobs:
            info = MessageInfo.from_bytes(blob)
            info.envelope_wire()
            info.bodystructure_wire()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared" / "corpus")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--typical", type=int, default=1000)
    args = parser.parse_args()

    messages_dir = args.corpus / "messages"
    if messages_dir.is_dir():
        corpus = [path.read_bytes() for path in sorted(messages_dir.glob("*.eml"))]
        rate, mbps = time_parse(corpus, args.runs)
        print(f"corpus:  {len(corpus)} messages, {sum(map(len, corpus)) / 1e6:.2f} MB: "
              f"{rate:,.0f} messages/s, {mbps:.1f} MB/s")
    else:
        print(f"corpus:  not found at {messages_dir}, skipped")

    typical = typical_messages(args.typical)
    rate, mbps = time_parse(typical, args.runs)
    average = sum(map(len, typical)) / len(typical) / 1000
    print(f"typical: {len(typical)} messages, average {average:.1f} KB: "
          f"{rate:,.0f} messages/s, {mbps:.1f} MB/s")

    blobs = [parse(message).to_bytes() for message in typical]
    blobs = (blobs * (10_000 // len(blobs) + 1))[:10_000]
    milliseconds = time_cached_answers(blobs, args.runs)
    average_blob = sum(map(len, blobs)) / len(blobs)
    print(f"cached:  ENVELOPE+BODYSTRUCTURE of 10,000 messages from their blobs: "
          f"{milliseconds:.1f} ms (average blob {average_blob:.0f} bytes)")


if __name__ == "__main__":
    main()
