"""The installed chat-policy's version, as its package metadata says (pyproject.toml)."""

from __future__ import annotations

import importlib.metadata

DISTRIBUTION = "chat-policy"


def version() -> str:
    """The version of the installed chat-policy distribution, e.g. "0.1.0"."""
    return importlib.metadata.version(DISTRIBUTION)
