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


#: The parts that are the date's own fields, as str.format patterns.
_FIELDS = {
    "year": "{0.year:04d}", "month": "{0.month:02d}", "day": "{0.day:02d}",
    "date": "{0.year:04d}-{0.month:02d}-{0.day:02d}",
    "hour": "{0.hour:02d}", "minute": "{0.minute:02d}", "second": "{0.second:02d}",
    "time": "{0.hour:02d}:{0.minute:02d}:{0.second:02d}",
}


def date_part(when: datetime.datetime, part: str) -> str | None:
    """The text of ``part`` for ``when``; None for a part this test does not know."""
    part = part.lower()
    if part in _FIELDS:
        return _FIELDS[part].format(when)
    zone = _zone_text(when)
    if part == "julian":
        return str((when.date() - _MJD_EPOCH).days)
    if part == "iso8601":
        return f"{date_part(when, 'date')}T{date_part(when, 'time')}{zone[:3]}:{zone[3:]}"
    if part == "std11":
        return (f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
                f"{date_part(when, 'time')} {zone}")
    if part == "zone":
        return zone
    if part == "weekday":
        return str((when.weekday() + 1) % 7)
    return None
