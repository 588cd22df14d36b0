"""SequenceSet: parsing, late ``*`` resolution, bounded iteration."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from cyrusmail.imap.sequence import (
    MAX_NUMBER,
    SAVED,
    STAR,
    SequenceSet,
    SequenceSetError,
    compact,
)

PARSED = [
    ("1", ((1, 1),), None),
    ("1:3", ((1, 3),), None),
    ("3:1", ((1, 3),), None),
    ("1,2,3,5", ((1, 3), (5, 5)), None),
    ("5:7,1:6", ((1, 7),), None),
    ("*", (), STAR),
    ("*:4", (), 4),
    ("4:*", (), 4),
    ("9:*,2:*,*", (), 2),
    ("1:4294967295", ((1, MAX_NUMBER),), None),
    ("2,4:*", ((2, 2),), 4),
]

INVALID = [
    "",
    "0",
    "0:5",
    "1:0",
    "-1",
    "1,",
    ",1",
    "1::2",
    "1:2:3",
    "a",
    "4294967296",
    "1 2",
    "01",
    "*:*:*",
    "$,1",
    "1:$",
    "$$",
]


class ParseTests(TestCase):
    def test_table(self) -> None:
        for text, ranges, star_from in PARSED:
            parsed = SequenceSet.parse(text)
            self.assertEqual(
                (parsed.ranges, parsed.star_from), (ranges, star_from), text
            )

    def test_invalid(self) -> None:
        for text in INVALID:
            self.assertRaises(SequenceSetError, SequenceSet.parse, text)

    def test_str_round_trip(self) -> None:
        for text, _, _ in PARSED:
            parsed = SequenceSet.parse(text)
            self.assertEqual(SequenceSet.parse(str(parsed)), parsed)
        self.assertEqual(str(SequenceSet.parse("3:1,*")), "1:3,*")
        self.assertEqual(bytes(SequenceSet.parse("7:*")), b"7:*")

    def test_from_numbers(self) -> None:
        self.assertEqual(str(SequenceSet.from_numbers([5, 1, 2, 3, 9])), "1:3,5,9")
        self.assertRaises(SequenceSetError, SequenceSet.from_numbers, [0])

    def test_highest(self) -> None:
        self.assertEqual(SequenceSet.parse("1:5,9").highest, 9)
        self.assertEqual(SequenceSet.parse("1,12:*").highest, 12)
        self.assertIsNone(SequenceSet.parse("*").highest)


class SavedTests(TestCase):
    """``$`` (RFC 5182): a set of its own, empty to anyone but the session."""

    def test_parse(self) -> None:
        self.assertIs(SequenceSet.parse("$"), SAVED)
        self.assertTrue(SAVED.saved)
        self.assertEqual(str(SAVED), "$")

    def test_holds_nothing_as_a_plain_set(self) -> None:
        self.assertEqual(SAVED.resolve(10), ())
        self.assertFalse(SAVED.contains(1, 10))
        self.assertEqual(list(SAVED.select([1, 2, 3])), [])


class CompactTests(TestCase):
    def test_table(self) -> None:
        for numbers, text in (
            ([], ""),
            ([4], "4"),
            ([1, 2, 3, 7], "1:3,7"),
            ([1, 2, 3, 7, 5, 6], "1:3,7,5:6"),  # order kept, as sorted results need
            ([9, 8, 7], "9,8,7"),
            ([3, 4, 4], "3:4,4"),
        ):
            with self.subTest(numbers=numbers):
                self.assertEqual(compact(numbers), text)

    @given(st.sets(st.integers(1, 200)))
    def test_same_as_from_numbers_when_ascending(self, numbers: set[int]) -> None:
        self.assertEqual(compact(sorted(numbers)), str(SequenceSet.from_numbers(numbers)))


class ResolveTests(TestCase):
    def test_star_is_maximum(self) -> None:
        self.assertEqual(SequenceSet.parse("*").resolve(7), ((7, 7),))
        self.assertEqual(SequenceSet.parse("3:*").resolve(7), ((3, 7),))

    def test_star_below_low_end(self) -> None:
        """RFC 3501 6.4.8: 559:* includes the last message when 559 > max."""
        self.assertEqual(SequenceSet.parse("559:*").resolve(10), ((10, 10),))

    def test_clipped_to_maximum(self) -> None:
        self.assertEqual(SequenceSet.parse("1:4294967295").resolve(3), ((1, 3),))
        self.assertEqual(SequenceSet.parse("5:9").resolve(3), ())

    def test_empty_mailbox(self) -> None:
        for text in ("*", "1:*", "1", "1:4294967295"):
            self.assertEqual(SequenceSet.parse(text).resolve(0), ())
            self.assertEqual(list(SequenceSet.parse(text).members(0)), [])
            self.assertFalse(SequenceSet.parse(text).contains(1, 0))

    def test_merges_star_with_explicit(self) -> None:
        self.assertEqual(SequenceSet.parse("1:4,5:*").resolve(9), ((1, 9),))

    def test_contains(self) -> None:
        s = SequenceSet.parse("2:4,8,20:*")
        self.assertEqual(
            [n for n in range(1, 12) if s.contains(n, 11)], [2, 3, 4, 8, 11]
        )
        self.assertFalse(s.contains(12, 11))

    def test_members_bounded_by_mailbox(self) -> None:
        """1:4294967295 against 5 messages yields five numbers, at once."""
        self.assertEqual(
            list(SequenceSet.parse("1:4294967295").members(5)), [1, 2, 3, 4, 5]
        )

    def test_select_existing_uids(self) -> None:
        s = SequenceSet.parse("1:4294967295")
        uids = [3, 90, 4000000000]
        self.assertEqual(list(s.select(uids)), uids)
        self.assertEqual(
            list(SequenceSet.parse("4:100,*").select(uids)), [90, 4000000000]
        )
        self.assertEqual(list(SequenceSet.parse("*").select([])), [])

    @given(
        st.lists(
            st.tuples(st.integers(1, 60), st.integers(1, 60)), min_size=1, max_size=8
        ),
        st.one_of(st.none(), st.integers(1, 60), st.just(STAR)),
        st.integers(0, 50),
    )
    def test_matches_naive_model(
        self, pairs: list[tuple[int, int]], star: int | None, maximum: int
    ) -> None:
        parts = [f"{low}:{high}" for low, high in pairs]
        if star is not None:
            parts.append("*" if star == STAR else f"{star}:*")
        s = SequenceSet.parse(",".join(parts))
        expected = set()
        for low, high in pairs:
            expected |= set(range(min(low, high), max(low, high) + 1))
        if star is not None and maximum:
            expected |= set(range(min(star, maximum), maximum + 1))
        expected = {n for n in expected if 1 <= n <= maximum}
        self.assertEqual(list(s.members(maximum)), sorted(expected))
        self.assertEqual({n for n in range(62) if s.contains(n, maximum)}, expected)
