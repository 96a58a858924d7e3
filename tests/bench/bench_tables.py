"""Reading the Markdown tables of the bench reports, for their smoke tests."""

from __future__ import annotations

NUMBER = r"[\d,]+(?:\.\d+)?"  # 1,234 or 0.410
# A cell of the rounds: a number, maybe with their min..max (or a count in parentheses).
VALUE = rf"{NUMBER}(?: \({NUMBER}(?:\.\.{NUMBER})?\))?"


def rows(stdout: str, header: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header starts with `header`, by first cell."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    table: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        name, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        table[name] = cells
    return table
