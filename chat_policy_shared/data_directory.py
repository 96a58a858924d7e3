"""Whether a process can keep its files in a directory (CHAT_POLICY_DATA_DIR, or the one of an
SQLite file), said in one phrase; shared by both deployables.

SQLite's own error for all of these is "unable to open database file", without the path or
the reason: the operating system's answer to a directory made and a file created says both.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def directory_problem(directory: Path) -> str | None:
    """Make `directory` (and its parents) if missing; None if a file can be created in it, else
    what keeps one from being created: the path and the operating system's reason."""
    shown = directory.absolute()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{shown} is not a directory"
    except OSError as error:
        return f"cannot create directory {error.filename or shown}: {error.strerror}"
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".chat-policy-write-check-"):
            pass
    except OSError as error:
        return f"cannot create files in {shown}: {error.strerror}"
    return None
