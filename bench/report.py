"""What every bench's report is made of: progress lines, the heading, percentiles, numbers,
cells and Markdown tables, so that the same column means the same in every report.

A percentile is interpolated linearly between the two closest ranks (numpy's default,
`statistics.quantiles(method="inclusive")`); a cell is the median of the rounds, with their
min..max when they differ.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

ABSENT = "-"  # a cell without a value


def progress(bench: str, message: str) -> None:
    """Tell the person waiting what `bench` is doing (stderr, so stdout stays the report)."""
    print(f"{bench}: {message}", file=sys.stderr, flush=True)


def heading(command: Sequence[str], versions: Iterable[str] = ()) -> list[str]:
    """A report's first lines: the command that made it, then when and on what it ran (cores,
    system, Python and `versions`)."""
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    where = [f"{os.cpu_count()} cores", f"{platform.system()} {platform.machine()}"]
    on = ", ".join([when, *where, f"Python {platform.python_version()}", *versions])
    return ["```sh", shlex.join(command), "```", "", f"{on}."]


def machine() -> dict[str, object]:
    """The machine a run measured on, as the --json reports give it."""
    return {
        "cores": os.cpu_count(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, interpolated linearly between the two
    closest ranks."""
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def number(value: float | None) -> str:
    """Whole numbers as they are, others to three significant digits: 0, 0.410, 12.3, 4,210;
    "-" for None."""
    if value is None:
        return ABSENT
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:#.3g}".rstrip(".")  # 99.96 gives "100."


def cell(
    values: Sequence[float], show: Callable[[float], str] = number, *, always_range: bool = False
) -> str:
    """The median, with min..max when the rounds differ (or always); "-" without values."""
    if not values:
        return ABSENT
    median = show(statistics.median(values))
    low, high = show(min(values)), show(max(values))
    return median if low == high and not always_range else f"{median} ({low}..{high})"


def verdict(met: bool) -> str:
    """met, or **missed** in bold."""
    return "met" if met else "**missed**"


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: the first column (names) left-aligned, the others (numbers)
    right-aligned."""
    lines = [f"| {' | '.join(columns)} |", f"|---|{'---:|' * (len(columns) - 1)}"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return lines
