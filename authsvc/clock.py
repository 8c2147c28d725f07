"""The one clock of authsvc: integer microseconds since the Unix epoch, injected wherever time is read."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Micros = int
"""A point in time (microseconds since 1970-01-01T00:00:00Z) or a span of time in microseconds."""

Clock = Callable[[], Micros]
"""Returns now; tests hand in a clock they move by hand."""

MICROS_PER_SECOND = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)


def system_clock() -> Micros:
    """The wall clock."""
    return time.time_ns() // 1000


def to_datetime(micros: Micros) -> datetime:
    """An aware UTC datetime for a point in time, exact to the microsecond."""
    return _EPOCH + timedelta(microseconds=micros)


def iso(micros: Micros | None, timespec: str = "auto") -> str | None:
    """A point in time as ISO 8601 text in UTC (None for None), as the CLI, the audit log and the console show it."""
    return None if micros is None else to_datetime(micros).isoformat(timespec=timespec)


def from_datetime(value: datetime) -> Micros:
    """The point in time of an aware datetime, exact to the microsecond."""
    return (value - _EPOCH) // _ONE_MICRO


def seconds_to_micros(seconds: float) -> Micros:
    """A JWT NumericDate (which may carry a fraction of a second) in microseconds."""
    if isinstance(seconds, int):
        return seconds * MICROS_PER_SECOND
    return round(seconds * MICROS_PER_SECOND)


def micros_to_seconds(micros: Micros) -> int | float:
    """A JWT NumericDate for a point in time: an integer when whole, else with a microsecond fraction."""
    whole, fraction = divmod(micros, MICROS_PER_SECOND)
    return whole if fraction == 0 else micros / MICROS_PER_SECOND
