"""Transfer windows: pure time arithmetic, no Airflow, no network.

A window is a set of local times of day, one set for weekdays (Monday to Friday) and one for the
weekend, in an IANA timezone. A range that crosses midnight (``20:00-06:00``) covers, on each day
it applies to, the evening from its start and the early morning up to its end, by the local
calendar: with ``weekdays: "20:00-06:00"`` and ``weekends: all``, Friday evening runs on into the
whole weekend and on to Monday 06:00. Local times are turned into instants with ``zoneinfo``, so a
window follows the clock on daylight-saving days: it opens at the wall-clock time, even when that
day has 23 or 25 hours, and a start time the clock skips opens when the clock jumps past it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
DAY = dt.timedelta(days=1)
MIDNIGHT = dt.time(0, 0)


@dataclass(frozen=True)
class TimeRange:
    """``start <= t < end`` when ``start < end``; else ``t >= start or t < end`` (crosses midnight)."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> TimeRange:
        match = _RANGE.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not a range such as '20:00-06:00'")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError(f"{text!r} holds an hour or minute out of range")
        start = dt.time(h1, m1)
        end = MIDNIGHT if h2 == 24 else dt.time(h2, m2)
        if start == end:
            raise ValueError(f"{text!r} is empty; write 'all' for the whole day")
        return cls(start, end)

    def contains(self, t: dt.time) -> bool:
        if self.start < self.end or self.end == MIDNIGHT:
            return self.start <= t and (self.end == MIDNIGHT or t < self.end)
        return t >= self.start or t < self.end

    def openings(self) -> list[dt.time]:
        """Local times at which this range starts being open on its day."""
        crosses = not (self.start < self.end or self.end == MIDNIGHT)
        return [MIDNIGHT, self.start] if crosses else [self.start]


ALL_DAY = (TimeRange(MIDNIGHT, MIDNIGHT),)


def parse_day_spec(value) -> tuple[TimeRange, ...]:
    """``all``, ``none``, one range ``"20:00-06:00"`` or a list of ranges."""
    if value == "all":
        return ALL_DAY
    if value == "none":
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{value!r} must be 'all', 'none', a range such as '20:00-06:00' or a list of ranges")
    return tuple(TimeRange.parse(v) for v in values)


@dataclass(frozen=True)
class TransferWindow:
    """When a wave may move bytes. Wave start: midnight of ``start`` in ``timezone``."""

    timezone: str = "UTC"
    weekdays: tuple[TimeRange, ...] = ALL_DAY
    weekends: tuple[TimeRange, ...] = ALL_DAY
    start: dt.date | dt.datetime | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def always_open(self) -> bool:
        return self.weekdays == ALL_DAY and self.weekends == ALL_DAY

    def starts_at(self) -> dt.datetime | None:
        if self.start is None:
            return None
        if isinstance(self.start, dt.datetime):
            return self.start if self.start.tzinfo else self.start.replace(tzinfo=self.tz)
        return dt.datetime.combine(self.start, MIDNIGHT, tzinfo=self.tz)

    def _ranges(self, day: dt.date) -> tuple[TimeRange, ...]:
        return self.weekends if day.weekday() >= 5 else self.weekdays

    def in_window(self, at: dt.datetime) -> bool:
        """Whether the clock allows transfers at ``at`` (wave start not considered)."""
        local = _aware(at).astimezone(self.tz)
        return any(r.contains(local.time()) for r in self._ranges(local.date()))

    def is_open(self, at: dt.datetime) -> bool:
        start = self.starts_at()
        return (start is None or _aware(at) >= start) and self.in_window(at)

    def next_open(self, at: dt.datetime) -> dt.datetime:
        """``at`` if transfers may run then, else the first instant after it when they may."""
        at = _aware(at)
        start = self.starts_at()
        if start is not None and at < start:
            at = start
        if self.in_window(at):
            return at
        local_day = at.astimezone(self.tz).date()
        for offset in range(8):
            day = local_day + offset * DAY
            candidates = sorted({t for r in self._ranges(day) for t in r.openings()})
            for opening in candidates:
                # fold=0: a wall time the clock skips maps to the instant the clock jumps past it.
                moment = dt.datetime.combine(day, opening, tzinfo=self.tz).astimezone(dt.UTC)
                if moment > at and self.in_window(moment):
                    return self._back_to_clock_jump(moment, at)
        raise ValueError("the window is never open: give weekdays or weekends at least one range")

    def _back_to_clock_jump(self, moment: dt.datetime, after: dt.datetime) -> dt.datetime:
        """An opening the clock skips (spring forward) opens when the clock jumps, not an hour later."""
        step = dt.timedelta(minutes=1)
        for _ in range(180):
            if moment - step <= after or not self.in_window(moment - step):
                break
            moment -= step
        return moment


def _aware(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: give a timezone-aware instant")
    return at
