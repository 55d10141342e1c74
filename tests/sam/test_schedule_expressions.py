"""Schedule expressions as EventBridge defines them: rate units, cron's six fields with
``L``, ``W`` and ``#``, Scheduler's ``at()`` and time zones, and a clear error otherwise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamfn.errors import ConfigError
from streamfn.sam.schedule import parse_schedule

START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC).timestamp()  # a Monday


def fires(expression: str, count: int = 3, zone: str | None = None) -> list[str]:
    schedule = parse_schedule(expression, zone, "Schedule")
    times, now = [], START
    for _ in range(count):
        found = schedule.next_after(now, START)
        if found is None:
            break
        times.append(datetime.fromtimestamp(found, UTC).strftime("%a %y-%m-%d %H:%M"))
        now = found
    return times


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("rate(1 minute)", "Mon 26-01-05 10:01, Mon 26-01-05 10:02, Mon 26-01-05 10:03"),
        ("rate(2 hours)", "Mon 26-01-05 12:00, Mon 26-01-05 14:00, Mon 26-01-05 16:00"),
        ("cron(0 12 * * ? *)", "Mon 26-01-05 12:00, Tue 26-01-06 12:00, Wed 26-01-07 12:00"),
        (
            "cron(0/30 9-10 ? * MON-FRI *)",
            "Mon 26-01-05 10:30, Tue 26-01-06 09:00, Tue 26-01-06 09:30",
        ),
        ("cron(0 10 L * ? *)", "Sat 26-01-31 10:00, Sat 26-02-28 10:00, Tue 26-03-31 10:00"),
        ("cron(0 9 ? * 6#3 *)", "Fri 26-01-16 09:00, Fri 26-02-20 09:00, Fri 26-03-20 09:00"),
        ("cron(0 9 ? * 6L *)", "Fri 26-01-30 09:00, Fri 26-02-27 09:00, Fri 26-03-27 09:00"),
        ("cron(0 9 17W * ? *)", "Fri 26-01-16 09:00, Tue 26-02-17 09:00, Tue 26-03-17 09:00"),
        (
            "cron(0 8 1 JAN,JUL ? 2026-2027)",
            "Wed 26-07-01 08:00, Fri 27-01-01 08:00, Thu 27-07-01 08:00",
        ),
        ("at(2026-01-05T11:30:00)", "Mon 26-01-05 11:30"),
    ],
)
def test_expressions_fire_when_eventbridge_would(expression: str, expected: str) -> None:
    assert ", ".join(fires(expression)) == expected


def test_a_time_zone_shifts_cron_and_at() -> None:
    assert fires("cron(30 9 ? * MON *)", 2, "Europe/Paris") == [
        "Mon 26-01-12 08:30",
        "Mon 26-01-19 08:30",
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(1 minutes)", "the unit is singular for 1, plural above"),
        ("rate(5 minute)", "the unit is singular for 1, plural above"),
        ("rate(0 minutes)", "the unit is singular for 1"),
        ("cron(0 12 * * *)", "cron takes 6 fields"),
        ("cron(0 12 * * * *)", "one of day-of-month and day-of-week must be '?'"),
        ("cron(0 12 ? * ? *)", "one of day-of-month and day-of-week must be '?'"),
        ("cron(61 12 * * ? *)", "61 is not within 0-59"),
        ("cron(0 9 ? * 6#7 *)", "the week must be 1-5"),
        ("every day", "is not rate(...), cron(...) or at(...)"),
    ],
)
def test_a_bad_expression_is_refused_naming_it(expression: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_schedule(expression, None, "Resources.Tick.Properties.ScheduleExpression")
    assert str(raised.value).startswith("Resources.Tick.Properties.ScheduleExpression: ")
    assert message in str(raised.value)
