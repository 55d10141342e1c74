"""Schedules as EventBridge defines them, and the task that turns them into timed ``Event``
invocations.

Expressions: ``rate(N minute|minutes|hour|hours|day|days)`` (the unit singular for 1, as
EventBridge requires), ``cron(minutes hours day-of-month month day-of-week year)`` with ``*``,
``?``, lists, ranges, ``/`` steps, month and weekday names, ``L`` (last day of the month, or
``5L``: last Thursday), ``W`` (nearest weekday) and ``#`` (``6#3``: third Friday), one of the
two day fields being ``?``; and EventBridge Scheduler's ``at(yyyy-mm-ddThh:mm:ss)``. Rule
schedules run in UTC; a Scheduler schedule in its ``ScheduleExpressionTimezone``, between its
StartDate and EndDate. A rate fires first one period after the worker starts, as a new rule
does after it is created.

The scheduler's clock is injectable (:class:`Clock`), so tests run hours of schedule in no
time without sleeping.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .intrinsics import located

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("streamfn.sam.schedule")

_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {d: i + 1 for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


class Schedule(Protocol):
    def next_after(self, now: float, started: float) -> float | None:
        """The next time (Unix seconds) after ``now`` it fires; None when it never will."""
        ...


@dataclass(frozen=True, slots=True)
class Rate:
    seconds: int
    window: tuple[float | None, float | None] = (None, None)

    def next_after(self, now: float, started: float) -> float | None:
        begin = started if self.window[0] is None else max(started, self.window[0])
        periods = max(0, int((now - begin) // self.seconds)) + 1
        fire = begin + periods * self.seconds
        return _within(fire, self.window)


@dataclass(frozen=True, slots=True)
class At:
    when: float

    def next_after(self, now: float, started: float) -> float | None:
        return self.when if self.when > now else None


@dataclass(frozen=True, slots=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: str  # the day-of-month field, matched per date
    months: frozenset[int]
    weekdays: str  # the day-of-week field, matched per date
    years: frozenset[int] | None
    zone: Any = UTC
    window: tuple[float | None, float | None] = (None, None)

    def next_after(self, now: float, started: float) -> float | None:
        begin = now if self.window[0] is None else max(now, self.window[0] - 1)
        local = datetime.fromtimestamp(begin, self.zone).replace(second=0, microsecond=0)
        day = local.date()
        for _ in range(366 * 5):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        fire = datetime(
                            day.year, day.month, day.day, hour, minute, tzinfo=self.zone
                        ).timestamp()
                        if fire > begin:
                            return _within(fire, self.window)
            day += timedelta(days=1)
        return None

    def _day_matches(self, day: Any) -> bool:
        if day.month not in self.months or (self.years is not None and day.year not in self.years):
            return False
        if self.days != "?":
            return _day_of_month(self.days, day)
        return _day_of_week(self.weekdays, day)


def _within(fire: float, window: tuple[float | None, float | None]) -> float | None:
    return None if window[1] is not None and fire > window[1] else fire


def _day_of_month(field: str, day: Any) -> bool:
    last = calendar.monthrange(day.year, day.month)[1]
    for part in field.split(","):
        if part == "L":
            if day.day == last:
                return True
        elif part.endswith("W"):
            target = last if part == "LW" else min(int(part[:-1]), last)
            if day.day == _nearest_weekday(day.year, day.month, target, last):
                return True
        elif day.day in _values(part, 1, 31, {}):
            return True
    return False


def _nearest_weekday(year: int, month: int, target: int, last: int) -> int:
    weekday = calendar.weekday(year, month, target)  # Monday 0
    if weekday == 5:
        return target - 1 if target > 1 else target + 2
    if weekday == 6:
        return target + 1 if target < last else target - 2
    return target


def _day_of_week(field: str, day: Any) -> bool:
    weekday = (day.weekday() + 1) % 7 + 1  # SUN=1 ... SAT=7
    last = calendar.monthrange(day.year, day.month)[1]
    for part in field.split(","):
        if part.endswith("L") and part != "L":
            if weekday == _weekday(part[:-1]) and day.day + 7 > last:
                return True
        elif part == "L":
            if weekday == 7:
                return True
        elif "#" in part:
            wanted, nth = part.split("#")
            if weekday == _weekday(wanted) and (day.day - 1) // 7 + 1 == int(nth):
                return True
        elif weekday in _values(part, 1, 7, _DAYS):
            return True
    return False


def _weekday(text: str) -> int:
    return _DAYS[text.upper()] if text.upper() in _DAYS else int(text)


def _values(part: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    """The values one comma-separated part of a cron field stands for."""

    def number(text: str) -> int:
        value = names[text.upper()] if text.upper() in names else int(text)
        if not low <= value <= high:
            raise ValueError(f"{text} is not within {low}-{high}")
        return value

    base, _, step_text = part.partition("/")
    step = int(step_text) if step_text else 1
    if step < 1:
        raise ValueError(f"step {step_text} is not >= 1")
    if base == "*":
        start, end = low, high
    elif "-" in base:
        first, second = base.split("-")
        start, end = number(first), number(second)
    else:
        start = number(base)
        end = high if step_text else start
    if start > end:  # a range through the wrap-around (e.g. FRI-MON)
        return frozenset([*range(start, high + 1, step), *range(low, end + 1, step)])
    return frozenset(range(start, end + 1, step))


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        values |= _values(part, low, high, names or {})
    return frozenset(values)


def _check_days(field: str, special: str, low: int, high: int, names: dict[str, int]) -> None:
    """Parse a day field once, so a bad one fails at load time rather than when it runs."""
    if field == "?":
        return
    for part in field.split(","):
        stripped = part.rstrip(special) if part not in ("L", "LW") else "1"
        if "#" in stripped:
            wanted, nth = stripped.split("#")
            _values(wanted, low, high, names)
            if not 1 <= int(nth) <= 5:
                raise ValueError(f"{part}: the week must be 1-5")
        else:
            _values(stripped or "1", low, high, names)


def _timestamp(text: str | None, zone: Any, path: str) -> float | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise located(path, f"{text!r} is not an ISO 8601 date and time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).timestamp()


def parse_schedule(
    expression: str,
    timezone: str | None,
    path: str,
    start: str | None = None,
    end: str | None = None,
) -> Schedule:
    """The schedule ``expression`` stands for; a ConfigError naming ``path`` when it is not
    one EventBridge accepts."""
    try:
        zone: Any = ZoneInfo(timezone) if timezone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        raise located(path, f"time zone {timezone!r} is not known") from None
    window = (_timestamp(start, zone, path), _timestamp(end, zone, path))
    rate = _RATE.fullmatch(expression)
    if rate:
        count, unit = int(rate[1]), rate[2]
        if count < 1 or (count == 1) != (not unit.endswith("s")):
            raise located(path, f"{expression!r}: the unit is singular for 1, plural above")
        return Rate(count * _UNIT[unit.rstrip("s")], window)
    if expression.startswith("at(") and expression.endswith(")"):
        when = _timestamp(expression[3:-1], zone, path)
        assert when is not None
        return At(when)
    if expression.startswith("cron(") and expression.endswith(")"):
        fields = expression[5:-1].split()
        if len(fields) != 6:
            raise located(
                path,
                f"{expression!r}: cron takes 6 fields (minutes hours "
                "day-of-month month day-of-week year)",
            )
        minutes, hours, days, months, weekdays, years = fields
        if (days == "?") == (weekdays == "?"):
            raise located(
                path,
                f"{expression!r}: one of day-of-month and day-of-week must be '?', and only one",
            )
        try:
            _check_days(days, "WL", 1, 31, {})
            _check_days(weekdays, "L", 1, 7, _DAYS)
            return Cron(
                _field(minutes, 0, 59),
                _field(hours, 0, 23),
                days,
                _field(months, 1, 12, _MONTHS),
                weekdays,
                None if years == "*" else _field(years, 1970, 2199),
                zone,
                window,
            )
        except (ValueError, KeyError) as exc:
            raise located(path, f"{expression!r}: {exc}") from None
    raise located(path, f"{expression!r} is not rate(...), cron(...) or at(...)")


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, when: float, stop: asyncio.Event) -> None:
        """Return at ``when`` or as soon as ``stop`` is set."""
        ...


class WallClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, when - time.time()))


@dataclass(frozen=True, slots=True)
class Timer:
    """One schedule's target: ``function`` (with ``qualifier``) gets ``payload``, or
    EventBridge's Scheduled Event when it is None."""

    name: str
    arn: str
    function: str
    qualifier: str | None
    schedule: Schedule
    payload: Any


class Scheduler:
    """A server for :meth:`App.running`: each timer's invocations, queued as ``Event``
    invocations at their times, so the function's async retries and destinations apply."""

    def __init__(self, timers: Sequence[Timer], clock: Clock | None = None) -> None:
        self.timers = list(timers)
        self.clock = clock or WallClock()
        self.fired: list[tuple[str, float]] = []  # (timer name, time), for tests and logs

    async def __call__(self, app: App, stop: asyncio.Event) -> None:
        started = self.clock.now()
        async with asyncio.TaskGroup() as tg:
            for timer in self.timers:
                tg.create_task(self._run(app, timer, started, stop))

    async def _run(self, app: App, timer: Timer, started: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fire = timer.schedule.next_after(self.clock.now(), started)
            if fire is None:
                return
            await self.clock.sleep_until(fire, stop)
            if stop.is_set():
                return
            event = (
                timer.payload if timer.payload is not None else _scheduled_event(app, timer, fire)
            )
            try:
                await app.invoke_async(timer.function, event, qualifier=timer.qualifier)
            except Exception as exc:  # the queue is full, say: the next tick tries again
                log.error(
                    "schedule could not queue its invocation",
                    extra={"schedule": timer.name, "error": f"{type(exc).__name__}: {exc}"},
                )
            self.fired.append((timer.name, fire))


def _scheduled_event(app: App, timer: Timer, fire: float) -> dict[str, Any]:
    """EventBridge's Scheduled Event, as a rule's Lambda target receives it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": app.account_id,
        "time": datetime.fromtimestamp(fire, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": app.region,
        "resources": [timer.arn],
        "detail": {},
    }


def timers_of(plans: Sequence[Any], arn: Callable[[str], str]) -> list[Timer]:
    return [
        Timer(p.logical_id, arn(p.logical_id), p.function, p.qualifier, p.schedule, p.payload)
        for p in plans
        if p.enabled
    ]
