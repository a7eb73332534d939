"""Timestamps on trioswap's own log lines, in llama-swap's `logTimeFormat` layouts.

Each name is one of Go's `time` layout constants (https://pkg.go.dev/time#pkg-constants),
rendered as Go renders it: English names whatever the locale, `_2` a space-padded day, `MST` the
zone's abbreviation, `Z07:00` a `Z` for UTC. Python's clock has microseconds, so the nanosecond
layouts end in `000`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _day(t: datetime) -> str:
    return DAYS[t.weekday()][:3]


def _month(t: datetime) -> str:
    return MONTHS[t.month - 1]


def _rfc3339_offset(t: datetime) -> str:
    """Go's `Z07:00`."""
    if not t.utcoffset():
        return "Z"
    offset = f"{t:%z}"
    return f"{offset[:3]}:{offset[3:5]}"


def _fraction(t: datetime, digits: int) -> str:
    return f"{t.microsecond:06d}000"[:digits]


def _trimmed_fraction(t: datetime) -> str:
    """Go's `.999999999`: trailing zeros dropped, and the dot with them when nothing is left."""
    digits = f"{t.microsecond:06d}".rstrip("0")
    return f".{digits}" if digits else ""


def _stamp(t: datetime) -> str:
    return f"{_month(t)} {t.day:2d} {t:%H:%M:%S}"


LAYOUTS: dict[str, Callable[[datetime], str]] = {
    "ansic": lambda t: f"{_day(t)} {_stamp(t)} {t.year}",
    "unixdate": lambda t: f"{_day(t)} {_stamp(t)} {t:%Z %Y}",
    "rubydate": lambda t: f"{_day(t)} {_month(t)} {t:%d %H:%M:%S %z %Y}",
    "rfc822": lambda t: f"{t:%d} {_month(t)} {t:%y %H:%M %Z}",
    "rfc822z": lambda t: f"{t:%d} {_month(t)} {t:%y %H:%M %z}",
    "rfc850": lambda t: f"{DAYS[t.weekday()]}, {t:%d}-{_month(t)}-{t:%y %H:%M:%S %Z}",
    "rfc1123": lambda t: f"{_day(t)}, {t:%d} {_month(t)} {t:%Y %H:%M:%S %Z}",
    "rfc1123z": lambda t: f"{_day(t)}, {t:%d} {_month(t)} {t:%Y %H:%M:%S %z}",
    "rfc3339": lambda t: f"{t:%Y-%m-%dT%H:%M:%S}{_rfc3339_offset(t)}",
    "rfc3339nano": lambda t: f"{t:%Y-%m-%dT%H:%M:%S}{_trimmed_fraction(t)}{_rfc3339_offset(t)}",
    "kitchen": lambda t: f"{t.hour % 12 or 12}:{t:%M}{'PM' if t.hour >= 12 else 'AM'}",
    "stamp": _stamp,
    "stampmilli": lambda t: f"{_stamp(t)}.{_fraction(t, 3)}",
    "stampmicro": lambda t: f"{_stamp(t)}.{_fraction(t, 6)}",
    "stampnano": lambda t: f"{_stamp(t)}.{_fraction(t, 9)}",
}


class LogFormatter(logging.Formatter):
    """`[TIMESTAMP ]LEVEL message`: the timestamp in a `logTimeFormat` layout, none for ""."""

    def __init__(self, time_format: str) -> None:
        self._layout = LAYOUTS.get(time_format)
        stamp = "%(asctime)s " if self._layout else ""
        super().__init__(f"{stamp}%(levelname)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        assert self._layout is not None  # only called when the format has %(asctime)s
        # Local time with its zone, as Go's time.Now() gives it.
        return self._layout(datetime.fromtimestamp(record.created).astimezone())
