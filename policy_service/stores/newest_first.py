"""One page of a record kept newest first (decisions, audit events), the same SQL in both
stores: equality filters, inclusive time bounds, and a keyset cursor.

The order (time, id) descending is an index read backwards; with an equality filter set,
that column is followed by the same order in its own index. The cursor is a row comparison
on the order's columns, so that it bounds the index scan (the page starts at the cursor,
however deep) instead of merely filtering.
"""

from __future__ import annotations

from collections.abc import Sequence


def newest_first_page(
    table: str,
    columns: str,
    order: tuple[str, str],
    equal: Sequence[tuple[str, object]],
    at_least: int | None,
    at_most: int | None,
    after: tuple[int, str] | None,
    limit: int,
    placeholder: str,
) -> tuple[str, list[object]]:
    """SELECT `columns` FROM `table`, the rows whose `equal` columns hold their value (an
    empty value matches anything), whose time (order[0]) is within the inclusive bounds and
    which come after `after` (time, id) in the order (time, id) descending; at most `limit`.
    The SQL and its parameters, with `placeholder` for each."""
    p = placeholder
    time, key = order
    where: list[str] = []
    params: list[object] = []
    for column, value in equal:
        if value:
            where.append(f"{column} = {p}")
            params.append(value)
    if at_least is not None:
        where.append(f"{time} >= {p}")
        params.append(at_least)
    if at_most is not None:
        where.append(f"{time} <= {p}")
        params.append(at_most)
    if after is not None:
        where.append(f"({time}, {key}) < ({p}, {p})")
        params += list(after)
    sql = f"SELECT {columns} FROM {table}"
    if where:
        sql += f" WHERE {' AND '.join(where)}"
    sql += f" ORDER BY {time} DESC, {key} DESC LIMIT {p}"
    return sql, [*params, limit]
