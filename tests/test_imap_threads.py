"""THREAD's algorithms (RFC 5256 3) on message keys, and the thread-list wire form.

The REFERENCES rows are imaptest's thread scripts (which Dovecot passes) and
cases for each step of the algorithm: dummies and their pruning, loops,
duplicate and missing Message-IDs, subject merging, and date ordering.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cyrusmail.imap.threads import (
    Message,
    Node,
    ordered_subject,
    references,
    thread_list,
)
from cyrusmail.slices import run_all


def m(number: int, date: float = 0, mid: str | None = None, refs: tuple[str, ...] = (),
      subject: str = "", reply: bool = False) -> Message:
    return Message(number, number, date, subject, reply, mid, refs)


def threaded(messages: list[Message]) -> str:
    return thread_list(run_all(references(messages)))


# (what it checks, messages in mailbox order, THREAD REFERENCES answer)
REFERENCES = [
    ("no messages", [], ""),
    ("a single message", [m(1, mid="a@b")], "(1)"),
    ("imaptest thread: a truncated chain is not relinked into a loop",
     [m(1, 17, "a@b"), m(2, 15, "b@b", ("a@b", "c@b")), m(3, 16, "c@b", ("b@b",))], "(3 2)(1)"),
    ("imaptest thread, after the expunge",
     [m(1, 15, "b@b", ("a@b", "c@b")), m(2, 16, "c@b", ("b@b",))], "(2 1)"),
    ("imaptest thread2: a duplicate Message-ID is made unique",
     [m(1, 0, "a@b"), m(2, 0, "a@b")], "(1)(2)"),
    ("imaptest thread3: then merged by subject, the reply below",
     [m(1, 0, "a@b", subject="FOO"), m(2, 1, "a@b", subject="FOO", reply=True)], "(1 2)"),
    ("imaptest thread4: a lone dummy at the top gives up its only child",
     [m(1, 0, "a@b", subject="FOO"), m(2, 1, "b@b", ("c@b",), subject="FOO", reply=True)], "(1 2)"),
    ("imaptest thread5",
     [m(1, 17, "1@b"), m(2, 15, "2@b", ("1@b",)), m(3, 15, "3@b", ("1@b",)), m(4, 15, "4@b", ("2@b",))],
     "(1 (2 4)(3))"),
    ("imaptest thread5: parents expunged, lone dummies pruned",
     [m(1, 15, "3@b", ("1@b",)), m(2, 15, "4@b", ("2@b",))], "(1)(2)"),
    ("imaptest thread5: a dummy with two children stays at the top",
     [m(1, 15, "3@b", ("1@b",)), m(2, 15, "4@b", ("2@b",)), m(3, 15, "5@b", ("2@b",))], "(1)((2)(3))"),
    ("imaptest thread6: no Message-IDs, one missing parent",
     [m(1, 15, None, ("a@b",)), m(2, 16, None, ("a@b",))], "((1)(2))"),
    ("imaptest thread7: the duplicate gets its own place",
     [m(1, 0, "a@b"), m(2, 0, "b@b", ("a@b",)), m(3, 0, "c@b", ("b@b",)), m(4, 0, "b@b", ("a@b",))],
     "(1 (2 3)(4))"),
    ("imaptest thread7: a dummy filled by the message that comes later",
     [m(1, 0, "a@b"), m(2, 0, "c@b", ("b@b",)), m(3, 0, "b@b", ("a@b",))], "(1 3 2)"),
    ("a dummy inside a thread is replaced by its children",
     [m(1, 0, "a@x"), m(2, 1, "c@x", ("a@x", "b@x")), m(3, 2, "d@x", ("a@x", "b@x"))], "(1 (2)(3))"),
    ("a reference loop between two messages",
     [m(1, 0, "a@x", ("b@x",)), m(2, 1, "b@x", ("a@x",))], "(2 1)"),
    ("a message referring to itself",
     [m(1, 0, "a@x", ("a@x",))], "(1)"),
    ("references link each to the next, not just to the message",
     [m(3, 2, "c@x", ("a@x", "b@x")), m(1, 0, "a@x"), m(2, 1, "b@x", ("a@x",))], "(1 2 3)"),
    ("a message's own references decide its parent (1.B): none, no parent",
     [m(3, 2, "c@x", ("a@x", "b@x")), m(1, 0, "a@x"), m(2, 1, "b@x")], "(1)(2 3)"),
    ("an existing parent link of a reference is kept (1.A)",
     [m(1, 0, "p@x"), m(2, 1, "q@x"), m(3, 2, "c@x", ("p@x", "c2@x")), m(4, 3, "d@x", ("q@x", "c2@x"))],
     "(1 (3)(4))(2)"),
    ("siblings in sent-date order, ties in mailbox order",
     [m(1, 0, "a@x"), m(2, 9, "b@x", ("a@x",)), m(3, 5, "c@x", ("a@x",)), m(4, 5, "d@x", ("a@x",))],
     "(1 (3)(4)(2))"),
    ("threads in the date order of their first message; a dummy goes by its first child",
     [m(1, 5, "a@x"), m(2, 9, "b@x", ("zz@x",)), m(3, 1, "c@x", ("zz@x",))], "((3)(2))(1)"),
    # step 5: subjects
    ("two non-replies of one subject get a dummy parent",
     [m(1, 0, "a@x", subject="S"), m(2, 1, "b@x", subject="S")], "((1)(2))"),
    ("a reply goes below the non-reply of its subject",
     [m(1, 0, "a@x", subject="S", reply=True), m(2, 1, "b@x", subject="S")], "(2 1)"),
    ("two replies: a dummy",
     [m(1, 0, "a@x", subject="S", reply=True), m(2, 1, "b@x", subject="S", reply=True)], "((1)(2))"),
    ("a message joins a dummy of its subject",
     [m(1, 0, "a@x", ("z@x",), subject="S"), m(2, 1, "b@x", ("z@x",), subject="S"),
      m(3, 2, "c@x", subject="S")], "((1)(2)(3))"),
    ("two dummies of one subject become one",
     [m(1, 0, "a@x", ("y@x",), subject="S"), m(2, 1, "b@x", ("y@x",), subject="S"),
      m(3, 2, "c@x", ("z@x",), subject="S"), m(4, 3, "d@x", ("z@x",), subject="S")],
     "((1)(2)(3)(4))"),
    ("an empty subject never merges",
     [m(1, 0, "a@x"), m(2, 1, "b@x")], "(1)(2)"),
    ("subjects only merge threads at the top",
     [m(1, 0, "a@x", subject="S"), m(2, 1, "b@x", ("a@x",), subject="T"),
      m(3, 2, "c@x", subject="T")], "(1 2)(3)"),
]


class ReferencesTests(TestCase):
    def test_table(self) -> None:
        for what, messages, answer in REFERENCES:
            self.assertEqual(threaded(messages), answer, what)

    def test_deep_chain_needs_no_recursion(self) -> None:
        depth = 5000
        messages = [m(1, 0, "0@x")] + [
            m(n + 1, n, f"{n}@x", (f"{n - 1}@x",)) for n in range(1, depth)
        ]
        self.assertEqual(threaded(messages), "(" + " ".join(str(n) for n in range(1, depth + 1)) + ")")

    def test_deep_branching_needs_no_recursion(self) -> None:
        """Each message has two replies, one of which goes on: nested lists 3000 deep."""
        messages = [m(1, 0, "0@x")]
        for n in range(1, 3000):
            messages.append(m(2 * n, 2 * n, f"leaf{n}@x", (f"{n - 1}@x",)))
            messages.append(m(2 * n + 1, 2 * n + 1, f"{n}@x", (f"{n - 1}@x",)))
        answer = threaded(messages)
        self.assertTrue(answer.startswith("(1 (2)(3 (4)(5 (6)(7"), answer[:40])
        self.assertEqual(answer.count("("), answer.count(")"))

    def test_costs_are_yielded(self) -> None:
        """Work for run_in_slices: one cost at least per message."""
        steps = list(_costs(references([m(n, n, f"{n}@x") for n in range(1, 50)])))
        self.assertGreaterEqual(len(steps), 49)
        self.assertTrue(all(cost >= 0 for cost in steps))


def _costs(steps):
    while True:
        try:
            yield next(steps)
        except StopIteration:
            return


class OrderedSubjectTests(TestCase):
    def test_imaptest_thread_orderedsubject2(self) -> None:
        """Sorted by subject then date; the first of each subject is the parent of the rest;
        threads in the date order of their first message."""
        messages = [m(1, 10, subject="A"), m(2, 9, subject="B"), m(3, 8, subject="A"),
                    m(4, 7, subject="B"), m(5, 30, subject="A"), m(6, 29, subject="B"),
                    m(7, 28, subject="A"), m(8, 27, subject="B")]
        self.assertEqual(thread_list(run_all(ordered_subject(messages))), "(4 (2)(8)(6))(3 (1)(7)(5))")

    def test_two_and_one(self) -> None:
        messages = [m(1, 0, subject="X"), m(2, 1, subject=""), m(3, 2, subject="X"), m(4, 3, subject="")]
        self.assertEqual(thread_list(run_all(ordered_subject(messages))), "(1 3)(2 4)")

    def test_ties_in_mailbox_order(self) -> None:
        messages = [m(n, 0, subject=subject) for n, subject in enumerate("BABC", 1)]
        self.assertEqual(thread_list(run_all(ordered_subject(messages))), "(1 3)(2)(4)")


class ThreadListTests(TestCase):
    def test_rfc_5256_example(self) -> None:
        """RFC 5256's example answer ``(2)(3 6 (4 23)(44 7 96))``."""
        def node(number: int, *children: Node) -> Node:
            made = Node(m(number))
            for child in children:
                made.adopt(child)
            return made

        forest = [node(2), node(3, node(6, node(4, node(23)), node(44, node(7, node(96)))))]
        self.assertEqual(thread_list(forest), "(2)(3 6 (4 23)(44 7 96))")

    def test_dummy_at_the_top(self) -> None:
        dummy = Node()
        for number in (3, 5):
            dummy.adopt(Node(m(number)))
        self.assertEqual(thread_list([dummy, Node(m(7))]), "((3)(5))(7)")
