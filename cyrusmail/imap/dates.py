"""The one zone in which the IMAP server shows and compares internal dates.

The index keeps a message's internal date as seconds since the epoch, so
the zone it arrived with is gone.  FETCH INTERNALDATE shows it in
:data:`ZONE`, and SEARCH BEFORE/ON/SINCE compare its calendar day in the
same zone, so that a client that reads a date from one can search with
it.  UTC is deterministic and the same on every host of a cluster (RFC 3501
allows any zone; Stalwart also answers in UTC).
"""

from __future__ import annotations

import datetime

ZONE = datetime.UTC

_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


def internal_datetime(timestamp: float) -> datetime.datetime:
    """The internal date as an aware datetime in :data:`ZONE`."""
    return datetime.datetime.fromtimestamp(timestamp, ZONE)


def internal_day(timestamp: float) -> datetime.date:
    """The calendar day SEARCH BEFORE/ON/SINCE compare."""
    return internal_datetime(timestamp).date()


def date_time_wire(timestamp: float) -> bytes:
    """RFC 3501 ``date-time``, quoted: ``" 7-Jul-1996 02:44:25 +0000"``.

    The day is two characters with a leading space (``date-day-fixed``);
    month names are English whatever the locale.
    """
    when = internal_datetime(timestamp)
    offset = when.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    text = (
        f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} "
        f'{sign}{minutes // 60:02d}{minutes % 60:02d}"'
    )
    return text.encode("ascii")
