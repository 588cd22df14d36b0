"""THREAD's two algorithms (RFC 5256 3): ORDEREDSUBJECT and REFERENCES, and the wire form.

Both take the messages in mailbox order as :class:`Message` values (their
keys come from the index: :class:`~cyrusmail.store.records.SortData`) and
build a forest of :class:`Node`; :func:`thread_list` writes it as the
``thread-list`` of RFC 5256 5.  The builders are generators for
:func:`cyrusmail.slices.run_in_slices`: they yield what each message cost,
so a big mailbox is threaded without stalling other sessions.

Nothing here recurses: a References chain thousands deep is walked with
explicit stacks.  Siblings are ordered by sent date (the internal date when
a message has no usable Date:), then by mailbox order, as Dovecot does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from cyrusmail.slices import Steps

STEP_COST = 3_000
"""The cost of threading one message (see :mod:`cyrusmail.slices`); each
parent link tested for a loop adds :data:`LINK_COST`."""
LINK_COST = 200


class Message(NamedTuple):
    """What threading needs of one message; ``number`` is what the answer shows
    (sequence number or UID), ``order`` its place in the mailbox."""

    number: int
    order: int
    date: float
    subject: str
    reply: bool
    message_id: str | None
    references: tuple[str, ...]


class Node:
    """A message in a thread, or a dummy (``message`` None) standing for one not here."""

    __slots__ = ("children", "message", "parent")

    def __init__(self, message: Message | None = None) -> None:
        self.message = message
        self.parent: Node | None = None
        self.children: list[Node] = []

    def adopt(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def __repr__(self) -> str:
        return f"<Node {self.message.number if self.message else 'dummy'} {self.children!r}>"


def _key(node: Node) -> tuple[float, int]:
    """Sent date then mailbox order; a dummy sorts as its first child."""
    message = node.message if node.message is not None else node.children[0].message
    assert message is not None  # only top-level dummies stay, and they have messages below
    return (message.date, message.order)


# -- ORDEREDSUBJECT -----------------------------------------------------------------


def ordered_subject(messages: list[Message]) -> Steps[list[Node]]:
    """Messages sorted by base subject then sent date; each run of one subject is a
    thread whose first message is the parent of all the others (RFC 5256 3)."""
    ordered = sorted(messages, key=lambda message: (message.subject, message.date, message.order))
    threads: list[Node] = []
    current: Node | None = None
    for message in ordered:
        node = Node(message)
        if current is not None and current.message.subject == message.subject:  # type: ignore[union-attr]
            node.parent = current
            current.children.append(node)
        else:
            current = node
            threads.append(node)
        yield STEP_COST
    threads.sort(key=_key)
    return threads


# -- REFERENCES ------------------------------------------------------------------------


class _Unique:
    """The id of a message with no usable Message-ID, or with one already taken."""

    __slots__ = ()


def references(messages: list[Message]) -> Steps[list[Node]]:
    """The REFERENCES algorithm, steps 1 to 6 of RFC 5256 3."""
    by_id: dict[object, Node] = {}
    # (1) link messages to their references and to their own parent.
    for message in messages:
        cost = STEP_COST
        identifier: object = message.message_id
        if identifier is None or (identifier in by_id and by_id[identifier].message is not None):
            identifier = _Unique()  # the first message with an id keeps it
        node = by_id.get(identifier)
        if node is None:
            node = by_id[identifier] = Node(message)
        else:
            node.message = message  # a dummy made for a reference: this is that message
        parent: Node | None = None
        for reference in message.references:
            referenced = by_id.get(reference)
            if referenced is None:
                referenced = by_id[reference] = Node()
            # (1.A) each reference is the parent of the next, unless that one has
            # a parent already or the link would make a loop.
            if parent is not None and referenced.parent is None:
                loops, steps = _would_loop(parent, referenced)
                cost += steps * LINK_COST
                if not loops:
                    parent.adopt(referenced)
            parent = referenced
        # (1.B) the last reference is this message's parent: an older link is broken
        # first (a truncated References made it), and none is made if it would loop.
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if parent is not None:
            loops, steps = _would_loop(parent, node)
            cost += steps * LINK_COST
            if not loops:
                parent.adopt(node)
        yield cost
    # (2) the root set: everything without a parent.
    root = Node()
    for node in by_id.values():
        if node.parent is None:
            node.parent = root
            root.children.append(node)
    yield len(root.children) * 10
    # (3) prune dummies.
    _prune(root)
    yield len(by_id) * 10
    # (4) order the top level by sent date (a dummy by its earliest child).
    for node in root.children:
        if node.message is None:
            node.children.sort(key=_key)
    root.children.sort(key=_key)
    yield len(root.children) * 50
    # (5) gather threads of the same base subject.
    yield from _merge_subjects(root)
    # (6) order every set of siblings by sent date.
    yield from _sort_siblings(root)
    return root.children


def _would_loop(parent: Node, child: Node) -> tuple[bool, int]:
    """Whether making ``child`` a child of ``parent`` makes a loop (``child`` is
    ``parent`` or one of its ancestors), and how many links were walked."""
    steps = 0
    node: Node | None = parent
    while node is not None:
        if node is child:
            return True, steps
        node = node.parent
        steps += 1
    return False, steps


def _bottom_up(root: Node) -> list[Node]:
    """Every node that has children, each after all of its descendants."""
    order: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(child for child in node.children if child.children)
    order.reverse()  # parents were listed before their children
    return order


def _prune(root: Node) -> None:
    """Step 3: a dummy without children goes; one with children gives them to its
    parent, unless that is the root and it has more than one.  Bottom up, so
    what a dummy hands up has been pruned already."""
    for node in _bottom_up(root):
        kept: list[Node] = []
        for child in node.children:
            if child.message is not None:
                kept.append(child)
            elif not child.children:
                child.parent = None
            elif node is not root or len(child.children) == 1:
                for grandchild in child.children:
                    grandchild.parent = node
                kept.extend(child.children)
                child.children = []
                child.parent = None
            else:
                kept.append(child)
        node.children = kept


def _thread_subject(node: Node) -> Message:
    return node.message if node.message is not None else node.children[0].message  # type: ignore[return-value]


def _merge_subjects(root: Node) -> Steps[None]:
    """Step 5: top-level threads with the same (non-empty) base subject become one."""
    table: dict[str, Node] = {}
    for node in root.children:  # (5.B) one thread per subject: a dummy, else a non-reply
        subject = _thread_subject(node).subject
        if not subject:
            continue
        held = table.get(subject)
        if held is None or held.message is not None and (
            node.message is None or (held.message.reply and not node.message.reply)
        ):
            table[subject] = node
    yield len(root.children) * 100
    kept = list(root.children)
    for node in kept:  # (5.C) merge each other thread of that subject into it
        if node.parent is not root:
            continue  # merged already
        subject = _thread_subject(node).subject
        held = table.get(subject) if subject else None
        if held is None or held is node:
            continue
        if held.message is None and node.message is None:
            for child in list(node.children):
                child.parent = held
                held.children.append(child)
            node.children = []
            node.parent = None
        elif held.message is None or (node.message is not None and node.message.reply
                                      and not held.message.reply):
            node.parent = held
            held.children.append(node)
        else:
            dummy = Node()
            dummy.parent = root
            for member in (held, node):
                member.parent = dummy
                dummy.children.append(member)
            table[subject] = dummy
            kept.append(dummy)
        yield 100
    root.children = [node for node in kept if node.parent is root]


def _sort_siblings(root: Node) -> Steps[None]:
    """Step 6: children before parents, so a dummy's first child is known when it is placed."""
    for node in _bottom_up(root):
        node.children.sort(key=_key)
        yield 50 * len(node.children)


# -- the wire form -----------------------------------------------------------------------


def thread_list(threads: Iterable[Node]) -> str:
    """``(a b (c)(d))(e)...`` for RFC 5256's thread-list: a node with one child
    continues its thread; one with several opens a nested list for each."""
    out: list[str] = []
    # Work items: a node to write as a thread (with its parentheses), or text.
    stack: list[Node | str] = [node for node in reversed(list(threads))]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        out.append("(")
        node: Node | None = item
        tail: list[Node | str] = [")"]
        first = True
        while node is not None:
            if node.message is not None:
                out.append(("" if first else " ") + str(node.message.number))
                first = False
            if len(node.children) == 1:
                node = node.children[0]
                continue
            if node.children:
                if not first:
                    out.append(" ")
                tail = [*node.children, *tail]
            node = None
        stack.extend(reversed(tail))
    return "".join(out)
