"""Reading a TOML file of ours (a policy, `policy test`'s cases) with every problem located.

A problem reads `FILE:LINE: SUBJECT: message`: a check raises Problem naming the key at fault,
and its caller turns that into the file's own LocatedError, with the key's line from KeyLines.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Set
from pathlib import Path


class LocatedError(ValueError):
    """A file cannot be used; str() reads `FILE:LINE: SUBJECT: message`, each part when known."""

    def __init__(
        self, message: str, *, where: str, line: int | None = None, subject: str = ""
    ) -> None:
        self.message, self.where, self.line = message, where, line
        super().__init__(located(message, where, line, subject))


def located(message: str, where: str, line: int | None = None, subject: str = "") -> str:
    """`FILE:LINE: SUBJECT: message`, the line and the subject only when known."""
    location = f"{where}:{line}" if line else where
    return f"{location}: {subject + ': ' if subject else ''}{message}"


class Problem(Exception):
    """A problem with one key of a table, found before the line it stands on is known."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def read_file(path: Path, error: type[LocatedError]) -> bytes:
    """The file's bytes; error reading `FILE: cannot read: REASON` when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as failure:
        raise error(f"cannot read: {failure.strerror}", where=str(path)) from None


def parse_toml(
    source: bytes, where: str, error: type[LocatedError]
) -> tuple[str, dict[str, object]]:
    """The text (UTF-8, less a byte order mark) and the document of TOML source; error, at
    the line the TOML parser names, when it is neither UTF-8 nor valid TOML."""
    try:
        text = source.decode("utf-8-sig")
        return text, tomllib.loads(text)
    except UnicodeDecodeError as failure:
        raise error(f"not UTF-8: {failure}", where=where) from None
    except tomllib.TOMLDecodeError as failure:
        match = re.search(r"\(at line (\d+)", str(failure))
        line = int(match.group(1)) if match else None
        raise error(f"not valid TOML: {failure}", where=where, line=line) from None


def only_keys(table: Mapping[str, object], allowed: Set[str], prefix: str = "") -> None:
    """Problem naming (with prefix) the first key of table, in sorted order, not in allowed."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed))
        raise Problem(prefix + unknown[0], f"unknown key (expected one of {expected})")


class KeyLines:
    """Where each key of each table starts in a TOML text made of [[ARRAY]] entries: sections
    "" (top level), `ARRAY.N` (the N-th [[ARRAY]], from 0) and any other table by its name. A
    sub-table of an entry ([ARRAY.x]) counts as the entry's key x, its keys as `x.KEY`. The
    text is scanned line by line, not parsed: good enough for messages."""

    _HEADER = re.compile(r"\s*\[(\[)?\s*([A-Za-z0-9_.\"' -]+?)\s*\]")
    _KEY = re.compile(r"\s*[\"']?([A-Za-z0-9_-]+)[\"']?\s*[=.]")

    def __init__(self, text: str, array: str) -> None:
        self._lines: dict[tuple[str, str | None], int] = {}
        section, prefix, entries = "", "", -1
        for number, line in enumerate(text.splitlines(), start=1):
            if header := self._HEADER.match(line):
                name = header.group(2).replace(" ", "")
                prefix = ""
                if header.group(1) and name == array:
                    entries += 1
                    section = f"{array}.{entries}"
                elif name.startswith(f"{array}.") and entries >= 0:
                    section, prefix = f"{array}.{entries}", name.removeprefix(f"{array}.") + "."
                    # [rules.a.b] defines a.b, and a too when no [rules.a] came first.
                    table = prefix[:-1]
                    while table:
                        self._lines.setdefault((section, table), number)
                        table = table.rpartition(".")[0]
                else:
                    section = name
                self._lines.setdefault((section, None), number)
            elif key := self._KEY.match(line):
                self._lines.setdefault((section, prefix + key.group(1)), number)

    def line(self, section: str, key: str | None) -> int | None:
        """The line of key in section, else of the nearest table around it; None if unknown."""
        # A key inside a sub-table ("allowed.Mac") is found at its own line when it has one,
        # else at the sub-table's.
        while key:
            if (section, key) in self._lines:
                return self._lines[(section, key)]
            key = key.rpartition(".")[0]
        return self._lines.get((section, None))
