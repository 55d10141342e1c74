"""Interleaved rounds, shared by the comparison scenarios (``engine``, ``kafka``, ``http``,
``sqs``, ``kinesis``): the figures they report are meant to hold on a shared, noisy machine.

One measurement says little there: another job's burst halves a 2-second run. So every side
(a baseline and streamfn, or several configurations) runs once per round, the order reversed
every other round (A B, B A, ...) so neither side always runs first, and the report is the
median over rounds with its spread (min-max). A ratio is taken within each round, where both
sides saw about the same load, then summarised the same way. Each run notes the 1-minute load
average when it starts and ends, so a reader sees how busy the machine was, and carries its
CPU seconds per million records (or per 1,000 requests): CPU time is disturbed far less by
other processes than wall-clock throughput, so it is the steadier figure of the two.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_ROUNDS = 5
DEFAULT_MIN_SECONDS = 5.0
#: A run is sized for this many times --min-seconds: a warm-up that times it is itself noisy
#: (on 2 shared cores, 1.2 left a third of the runs just under the minimum).
MARGIN = 1.5


@dataclass(frozen=True)
class Unit:
    """What a scenario counts, and the names its figures carry in the JSON and the table."""

    count: str  # key of the number of items a run handled
    rate: str  # key of items per second
    cpu_per: str  # key of CPU seconds per ``per`` items
    per: int
    label: str  # the table's heading for the rate
    cpu_label: str  # the table's heading for ``cpu_per``


RECORDS = Unit(
    "records", "records_per_s", "cpu_s_per_million", 1_000_000, "records/s", "CPU s/M records"
)
REQUESTS = Unit(
    "requests", "requests_per_s", "cpu_s_per_1000", 1000, "requests/s", "CPU s/1k requests"
)


def add_arguments(
    parser: argparse.ArgumentParser,
    *,
    rounds: int = DEFAULT_ROUNDS,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    extends: str = "the run is flagged short",
) -> None:
    """``--rounds`` and ``--min-seconds``; ``extends`` says, in the help, what the scenario
    does about a run shorter than the minimum."""
    parser.add_argument(
        "--rounds",
        type=_at_least(1, int),
        default=rounds,
        help=f"interleaved rounds, each running every side once, order alternating; median "
        f"and min-max reported (default {rounds})",
    )
    parser.add_argument(
        "--min-seconds",
        type=_at_least(0, float),
        default=min_seconds,
        help=f"seconds a measured run should last at least; below it {extends} "
        f"(default {min_seconds:g}; 0: no minimum)",
    )


def _at_least(low: float, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" error
    return parse


def lengthened(count: int, seconds: float, min_seconds: float, limit: int) -> int:
    """How many items a run needs to last ``min_seconds`` (with :data:`MARGIN`), when
    ``count`` items took ``seconds``; never fewer than ``count``, nor more than ``limit``
    (unless ``count`` already is)."""
    if seconds >= min_seconds:
        return count
    wanted = math.ceil(count * MARGIN * min_seconds / max(seconds, 1e-3))
    return max(count, min(wanted, limit))


def load_1m() -> float:
    """The 1-minute load average: how many runnable processes competed for the CPUs."""
    return round(os.getloadavg()[0], 2)


def order(sides: Sequence[str], round_index: int) -> list[str]:
    """The sides in the order of round ``round_index``: as given, reversed every other round,
    so a slow start (cold caches, a warming broker) or a steady drift does not always fall on
    the same side."""
    return list(sides) if round_index % 2 == 0 else list(reversed(sides))


def run_rounds(
    sides: Sequence[str],
    rounds: int,
    run: Callable[[str, int], dict[str, Any]],
    unit: Unit,
    min_seconds: float,
    *,
    after: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Call ``run(side, round)`` for every side in every round, interleaved, and return its rows
    with ``round``, ``side``, the load average at start and end, the CPU per unit and whether
    the run was shorter than ``min_seconds``. ``after(side)`` runs outside the measurement
    (letting a server settle before the next run)."""
    rows = []
    for index in range(rounds):
        for side in order(sides, index):
            load_start = load_1m()
            row = run(side, index)
            load_end = load_1m()
            rows.append(
                {
                    "round": index,
                    "side": side,
                    **row,
                    **per_unit(row, unit),
                    "load_start": load_start,
                    "load_end": load_end,
                    "short": row["seconds"] < min_seconds,
                }
            )
            if after is not None:
                after(side)
    return rows


def per_unit(row: Mapping[str, Any], unit: Unit) -> dict[str, float]:
    """The CPU seconds per ``unit.per`` items of a row with ``cpu_s`` and the count."""
    count = row[unit.count]
    return {unit.cpu_per: round(row["cpu_s"] * unit.per / count, 3) if count else 0.0}


def medians(runs: Sequence[Mapping[str, Any]], side: str, keys: Sequence[str]) -> dict[str, Any]:
    """One side's median of each of ``keys`` over the rounds, each taken on its own: the shape
    a single run's result had, for readers of older reports."""
    mine = [row for row in runs if row["side"] == side]
    return {"side": side, **{key: spread(row[key] for row in mine)["median"] for key in keys}}


def spread(values: Iterable[float], digits: int = 3) -> dict[str, float]:
    """Median, min and max: the figure to cite and how far the rounds strayed from it."""
    ordered = sorted(values)
    if not ordered:
        return {"median": 0.0, "min": 0.0, "max": 0.0}
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    if digits == 0:  # whole numbers (records/s): ints, not 887392.0
        return {"median": round(median), "min": round(ordered[0]), "max": round(ordered[-1])}
    return {
        "median": round(median, digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
    }


def summarize(
    rows: Sequence[Mapping[str, Any]],
    unit: Unit,
    ratios: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Per side, the spread of throughput and of CPU per unit; per ``(side, baseline)`` pair,
    the spread of the per-round ratios ``throughput`` (side's rate over the baseline's: above
    1, the side is faster) and ``cpu_cost`` (side's CPU per unit over the baseline's: above
    1, the side spends more); and the load average over the runs."""
    sides = list(dict.fromkeys(row["side"] for row in rows))
    by_side = {side: [row for row in rows if row["side"] == side] for side in sides}
    summary: dict[str, Any] = {
        side: {
            unit.rate: spread((row[unit.rate] for row in mine), 0),
            unit.cpu_per: spread(row[unit.cpu_per] for row in mine),
        }
        for side, mine in by_side.items()
    }
    summary["ratios"] = {
        f"{side}/{base}": _ratios(by_side[side], by_side[base], unit) for side, base in ratios
    }
    summary["load"] = {
        "start": rows[0]["load_start"] if rows else None,
        "end": rows[-1]["load_end"] if rows else None,
        "max": max((max(r["load_start"], r["load_end"]) for r in rows), default=None),
        "cpus": os.cpu_count(),
    }
    summary["short_runs"] = sum(bool(row["short"]) for row in rows)
    return summary


def _ratios(
    mine: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]], unit: Unit
) -> dict[str, Any]:
    """Round by round, so each ratio compares two runs that saw about the same machine."""
    by_round = {row["round"]: row for row in base}
    pairs = [(row, by_round[row["round"]]) for row in mine if row["round"] in by_round]
    throughput = [a[unit.rate] / b[unit.rate] for a, b in pairs if b[unit.rate]]
    cost = [a[unit.cpu_per] / b[unit.cpu_per] for a, b in pairs if b[unit.cpu_per]]
    return {
        "throughput": spread(throughput),
        "cpu_cost": spread(cost),
        "per_round": [round(x, 3) for x in throughput],
    }


# -- the compact table -----------------------------------------------------------------------


def _figure(s: Mapping[str, float], fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def render(summary: Mapping[str, Any], unit: Unit, rounds: int, min_seconds: float) -> str:
    """Median (min-max) per side, the ratios, and a line on the load and short runs."""
    sides = [k for k in summary if k not in ("ratios", "load", "short_runs")]
    rate_cells = [_figure(summary[s][unit.rate], ",.0f") for s in sides]
    cpu_cells = [_figure(summary[s][unit.cpu_per], ".3g") for s in sides]
    width = max(len(s) for s in [*sides, "side"])
    rate_w = max(len(c) for c in [*rate_cells, unit.label])
    lines = [
        f"{'side':<{width}}  {unit.label:>{rate_w}}  {unit.cpu_label}",
        *(
            f"{side:<{width}}  {rate:>{rate_w}}  {cpu}"
            for side, rate, cpu in zip(sides, rate_cells, cpu_cells, strict=True)
        ),
    ]
    for name, ratio in summary["ratios"].items():
        per_round = " ".join(f"{x:.2f}" for x in ratio["per_round"])
        lines.append(
            f"{name} = {_figure(ratio['throughput'], '.2f')} by throughput, CPU cost "
            f"{_figure(ratio['cpu_cost'], '.2f')}; per round: {per_round}"
        )
    load = summary["load"]
    lines.append(
        f"median (min-max) of {rounds} interleaved rounds; load avg 1 min {load['start']} at "
        f"start, {load['end']} at end, max {load['max']} on {load['cpus']} CPUs"
    )
    if summary["short_runs"]:
        lines.append(
            f"warning: {summary['short_runs']} runs lasted under --min-seconds {min_seconds:g}: "
            f"too short to mean much on a shared machine"
        )
    return "\n".join(lines)
