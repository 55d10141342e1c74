"""The bench tool's PNG: what it draws for a drain, which measures no latency."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


def test_a_plot_without_latencies_has_no_empty_latency_panel(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from streamfn.bench.kit import Histogram, Timeline, plot

    timeline = Timeline()
    timeline.add(10, now=0.0)
    timeline.add(10, now=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns on a legend with nothing in it
        plot(tmp_path / "drain.png", "drain", {"streamfn": timeline}, {"streamfn": Histogram()})
    assert (tmp_path / "drain.png").stat().st_size > 0
