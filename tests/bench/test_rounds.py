"""The rounds machinery alone: interleaving, spreads, per-round ratios and the table. No
server and no timing: the runs are made up."""

from __future__ import annotations

import argparse
from typing import Any

from streamfn.bench import rounds


def fake_run(rates: dict[str, list[float]]) -> Any:
    """A run that handles 1,000 records at the given rate (per round), for 0.5 CPU seconds."""

    def run(side: str, index: int) -> dict[str, Any]:
        seconds = 1000 / rates[side][index]
        return {"records": 1000, "seconds": seconds, "records_per_s": rates[side][index],
                "cpu_s": 0.5}  # fmt: skip

    return run


def test_sides_alternate_and_every_run_is_annotated() -> None:
    run = fake_run({"raw": [100, 200, 400], "streamfn": [50, 100, 400]})
    rows = rounds.run_rounds(["raw", "streamfn"], 3, run, rounds.RECORDS, min_seconds=5)
    assert [(r["round"], r["side"]) for r in rows] == [
        (0, "raw"), (0, "streamfn"), (1, "streamfn"), (1, "raw"), (2, "raw"), (2, "streamfn"),
    ]  # fmt: skip
    assert {"load_start", "load_end", "cpu_s_per_million"} <= set(rows[0])
    assert [r["short"] for r in rows] == [False, False, False, False, True, True]  # 10-2.5 s


def test_ratios_are_taken_within_each_round() -> None:
    run = fake_run({"raw": [100, 200, 400], "streamfn": [50, 100, 400]})
    rows = rounds.run_rounds(["raw", "streamfn"], 3, run, rounds.RECORDS, min_seconds=0)
    summary = rounds.summarize(rows, rounds.RECORDS, [("streamfn", "raw")])
    assert summary["raw"]["records_per_s"] == {"median": 200, "min": 100, "max": 400}
    ratio = summary["ratios"]["streamfn/raw"]
    assert ratio["per_round"] == [0.5, 0.5, 1.0]
    assert ratio["throughput"] == {"median": 0.5, "min": 0.5, "max": 1.0}
    assert ratio["cpu_cost"]["median"] == 1.0  # CPU per record is the same on both sides
    assert summary["short_runs"] == 0 and summary["load"]["cpus"]
    text = rounds.render(summary, rounds.RECORDS, 3, 0)
    assert "streamfn/raw = 0.50 (0.50-1.00)" in text and "per round: 0.50 0.50 1.00" in text


def test_spread_of_an_even_count_is_the_middle_pair_average() -> None:
    assert rounds.spread([4.0, 1.0, 3.0, 2.0]) == {"median": 2.5, "min": 1.0, "max": 4.0}
    assert rounds.spread([]) == {"median": 0.0, "min": 0.0, "max": 0.0}


def test_short_runs_are_flagged_in_the_table() -> None:
    run = fake_run({"raw": [1000]})
    rows = rounds.run_rounds(["raw"], 1, run, rounds.RECORDS, min_seconds=5)
    text = rounds.render(rounds.summarize(rows, rounds.RECORDS), rounds.RECORDS, 1, 5)
    assert "warning: 1 runs lasted under --min-seconds 5" in text


def test_options_and_their_defaults() -> None:
    parser = argparse.ArgumentParser()
    rounds.add_arguments(parser, rounds=3, min_seconds=2.0)
    assert vars(parser.parse_args([])) == {"rounds": 3, "min_seconds": 2.0}
    assert vars(parser.parse_args(["--rounds", "1", "--min-seconds", "0"])) == {
        "rounds": 1,
        "min_seconds": 0.0,
    }


def test_a_short_run_is_lengthened_within_the_limit() -> None:
    assert rounds.lengthened(1000, 2.0, 5.0, 100_000) == 3750  # 5 s and the margin
    assert rounds.lengthened(1000, 6.0, 5.0, 100_000) == 1000  # long enough already
    assert rounds.lengthened(1000, 0.0, 5.0, 100_000) == 100_000
    assert rounds.lengthened(200_000, 1.0, 5.0, 100_000) == 200_000  # never shrinks
