"""Directories the processes keep their files in: made when missing, refused with the path and
the reason when they cannot hold a file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chat_policy_shared.data_directory import directory_problem
from policy_service.server import open_configured_store
from policy_service.settings import ServiceSettings, SettingsError


def test_a_missing_directory_is_made(tmp_path: Path) -> None:
    """A directory that does not exist yet is made, parents too, and has no problem."""
    directory = tmp_path / "a" / "b"
    assert directory_problem(directory) is None
    assert directory.is_dir()
    assert list(directory.iterdir()) == []  # the file written to check is gone


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    """A file where the directory should be, or where a parent should be, is said so."""
    (tmp_path / "file").write_text("")
    assert directory_problem(tmp_path / "file") == f"{tmp_path / 'file'} is not a directory"
    assert directory_problem(tmp_path / "file" / "sub") == (
        f"cannot create directory {tmp_path / 'file' / 'sub'}: Not a directory"
    )


def test_a_relative_directory_is_shown_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The problem shows where a relative path is, from the working directory."""
    monkeypatch.chdir(tmp_path)
    Path("var").write_text("")
    assert directory_problem(Path("var")) == f"{tmp_path / 'var'} is not a directory"


def test_an_sqlite_file_that_is_no_database_names_the_variable_and_path(tmp_path: Path) -> None:
    """A data directory whose chat-policy.db SQLite cannot open: a SettingsError with the
    variable, the file and SQLite's reason."""
    (tmp_path / "chat-policy.db").write_text("not a database, not even close" * 10)
    with pytest.raises(SettingsError) as raised:
        asyncio.run(open_configured_store(ServiceSettings(data_dir=tmp_path)))
    assert str(raised.value) == (
        f"CHAT_POLICY_DATA_DIR='{tmp_path}': cannot open {tmp_path / 'chat-policy.db'}:"
        " SQLite: file is not a database"
    )


def test_an_sqlite_url_names_its_own_variable(tmp_path: Path) -> None:
    """When CHAT_POLICY_DATABASE_URL places the file, the line names that variable."""
    (tmp_path / "file").write_text("")
    url = f"sqlite:///{tmp_path / 'file' / 'db.sqlite'}"
    with pytest.raises(SettingsError) as raised:
        asyncio.run(
            open_configured_store(ServiceSettings(data_dir=tmp_path / "unused", database_url=url))
        )
    assert str(raised.value) == (
        f"CHAT_POLICY_DATABASE_URL={url!r}: {tmp_path / 'file'} is not a directory"
    )
