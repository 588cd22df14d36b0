"""Store figures: durable appends per second, STATUS and a full index read on 10,000 messages."""

from __future__ import annotations

import statistics
import tempfile
import time

from cyrusmail.store.maildir import MaildirStore

MESSAGE = b"From: a@example.org\r\nSubject: bench\r\n\r\n" + b"x" * 5000 + b"\r\n"


def timed(function, runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = MaildirStore(folder)
        store.provision("bench")
        box = store.mailboxes("bench").open("INBOX")
        count = 200
        start = time.perf_counter()
        for _ in range(count):
            box.append(MESSAGE)
        single = count / (time.perf_counter() - start)
        print(f"append, one durable transaction each: {single:.0f} messages/s")
        for _ in range(10):
            box.append_many([(MESSAGE, None, (), None)] * 1000)
        print(f"mailbox of {box.status().messages} messages")
        print(f"STATUS from the index: {timed(box.status) * 1000:.2f} ms")
        print(f"read every index record: {timed(box.messages) * 1000:.1f} ms")
        print(f"changes_since(top): {timed(lambda: box.changes_since(box.status().highest_modseq)) * 1000:.2f} ms")
        store.close()


if __name__ == "__main__":
    main()
