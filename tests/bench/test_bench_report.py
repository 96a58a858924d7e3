"""bench/report.py: the percentile and cells every bench report uses."""

from __future__ import annotations

import random
import statistics

import pytest

from bench.report import cell, percentile


def test_percentile_interpolates_between_the_closest_ranks() -> None:
    """Between two ranks the percentile lies on the line between their values, not on either
    (nearest rank would give 2 and 10)."""
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert percentile([7.0], 99) == 7.0


def test_percentile_is_statistics_inclusive_quantile() -> None:
    """Every percentile from 1 to 99 is the one statistics.quantiles(method="inclusive") gives."""
    samples = sorted(random.Random(17).expovariate(1.0) for _ in range(1_001))
    quantiles = statistics.quantiles(samples, n=100, method="inclusive")
    for q in range(1, 100):
        assert percentile(samples, q) == pytest.approx(quantiles[q - 1]), q


def test_cell_is_the_median_with_the_range_when_rounds_differ() -> None:
    """A cell: the median, min..max only when they differ (or always when asked), "-" empty."""
    assert cell([2.0, 1.0, 3.0]) == "2 (1..3)"
    assert cell([0.41, 0.41]) == "0.410"
    assert cell([]) == "-"
    assert cell([1.0, 1.0], lambda value: f"{value:.1f}", always_range=True) == "1.0 (1.0..1.0)"
