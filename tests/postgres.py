"""PostgreSQL for the tests: the server they use and a schema of their own per test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class PostgresSchema:
    """A schema of its own for one test: its name and a URL whose search_path is it."""

    name: str
    url: str
    server_url: str

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit connection to the server, in this schema (close it: use `with`)."""
        return psycopg.connect(self.url, autocommit=True)

    @property
    def application_name(self) -> str:
        """The application_name every connection made through `url` reports."""
        return self.name


def without_password(url: str) -> str:
    """The URL for messages: its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def with_params(url: str, **params: str) -> str:
    """The URL with query parameters added (an existing `options` is kept, then ours).

    Percent-encoded with %20 for spaces: libpq does not read `+` as a space.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if "options" in params and query.get("options"):
        params["options"] = f"{query['options']} {params['options']}"
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))
