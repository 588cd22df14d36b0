"""Date parts for the Sieve date and currentdate tests (RFC 5260 section 4).

A date is a timezone-aware datetime; :func:`date_part` writes the part a
test names as the RFC says (``year`` "2008", ``date`` "2008-04-02",
``julian`` the Modified Julian Day, ``weekday`` 0 for Sunday, ``zone``
"+0100", ``iso8601``, ``std11``...).
"""

from __future__ import annotations

import datetime
import email.utils

_MJD_EPOCH = datetime.date(1858, 11, 17)
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def zone_of(text: str) -> datetime.timezone:
    """``+0100`` -> a fixed zone (the checker has made sure of the form)."""
    sign = -1 if text[0] == "-" else 1
    return datetime.timezone(sign * datetime.timedelta(hours=int(text[1:3]), minutes=int(text[3:5])))


def parse_date(text: str) -> datetime.datetime | None:
    """A Date:-style header value (RFC 5322 date-time), or None if it is not one."""
    parsed = email.utils.parsedate_tz(text)
    if parsed is None:
        return None
    try:
        offset = parsed[9] or 0
        when = datetime.datetime(*parsed[:6], tzinfo=datetime.timezone(datetime.timedelta(seconds=offset)))
    except (ValueError, OverflowError):
        return None
    return when


def _zone_text(when: datetime.datetime) -> str:
    offset = int(when.utcoffset().total_seconds()) // 60
    sign = "-" if offset < 0 else "+"
    return f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"


def date_part(when: datetime.datetime, part: str) -> str | None:
    """The text of ``part`` for ``when``; None for a part this test does not know."""
    part = part.lower()
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
    if part == "julian":
        return str((when.date() - _MJD_EPOCH).days)
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    if part == "iso8601":
        zone = _zone_text(when)
        return when.strftime("%Y-%m-%dT%H:%M:%S") + f"{zone[:3]}:{zone[3:]}"
    if part == "std11":
        return (f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
                f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {_zone_text(when)}")
    if part == "zone":
        return _zone_text(when)
    if part == "weekday":
        return str((when.weekday() + 1) % 7)
    return None
