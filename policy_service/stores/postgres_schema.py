"""The PostgreSQL store's tables and statements: migrations, row mapping, the list query."""

from __future__ import annotations

from policy_service.groups.store import FullGroupsCursor
from policy_service.stores.state_rows import key_tuple

# Schema versions, applied in order; schema_migrations records each one applied. The key
# columns use the "C" collation: bytewise UTF-8 order, which is code-point order, so pages
# come in the same order as from SQLite (BINARY) and as Python sorts str, whatever the
# database's default collation is. "full" is a reserved word in PostgreSQL: always quoted.
# Never edit an applied version: append a new one.
MIGRATIONS = (
    """
    CREATE TABLE group_state (
        sdk_app_id BIGINT NOT NULL,
        group_id TEXT COLLATE "C" NOT NULL,
        topic_id TEXT COLLATE "C" NOT NULL,
        "full" BOOLEAN NOT NULL,
        full_since_ms BIGINT,
        last_event_time_ms BIGINT NOT NULL,
        full_event_count BIGINT NOT NULL,
        destroyed BOOLEAN NOT NULL DEFAULT FALSE,
        last_event_kind SMALLINT NOT NULL DEFAULT 1,
        PRIMARY KEY (sdk_app_id, group_id, topic_id)
    );
    CREATE INDEX group_state_full_since
        ON group_state (full_since_ms, sdk_app_id, group_id, topic_id) WHERE "full";
    CREATE INDEX group_state_app_full_since
        ON group_state (sdk_app_id, full_since_ms, group_id, topic_id) WHERE "full";
    """,
    # The change log: a row per changed state, numbered by an identity column (gaps are
    # allowed: a rolled-back insert burns its number; version 4 numbers them otherwise).
    # change_log_state holds one row, the newest sequence pruning deleted.
    # group_state_destroyed lets pruning find old destroyed states without reading the table.
    # "Full for longer than" needs no index of its own: an upper bound on full_since_ms ends a
    # range of the two full_since indexes (as list_full_query words it; tests EXPLAIN it).
    """
    ALTER TABLE group_state ADD COLUMN clear_reason TEXT NOT NULL DEFAULT '';
    CREATE INDEX group_state_destroyed ON group_state (last_event_time_ms) WHERE destroyed;
    CREATE TABLE group_state_change (
        sequence BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        change_time_ms BIGINT NOT NULL,
        sdk_app_id BIGINT NOT NULL,
        group_id TEXT COLLATE "C" NOT NULL,
        topic_id TEXT COLLATE "C" NOT NULL,
        "full" BOOLEAN NOT NULL,
        full_since_ms BIGINT,
        last_event_time_ms BIGINT NOT NULL,
        full_event_count BIGINT NOT NULL,
        destroyed BOOLEAN NOT NULL,
        last_event_kind SMALLINT NOT NULL,
        clear_reason TEXT NOT NULL,
        forgotten BOOLEAN NOT NULL
    );
    CREATE INDEX group_state_change_time ON group_state_change (change_time_ms);
    CREATE TABLE change_log_state (pruned_through BIGINT NOT NULL);
    CREATE UNIQUE INDEX change_log_state_one_row ON change_log_state ((TRUE));
    INSERT INTO change_log_state (pruned_through) VALUES (0);
    """,
    # Rate-limit slots and the decision log; neither is part of the change log.
    # rate_limit_slot_bucket counts a bucket's window, rate_limit_slot_stamped finds old
    # slots to prune. shadow_rule_ids is a JSON array in text, as in SQLite; request_json is
    # text, not JSONB, so that it reads back exactly as written. The decision indexes serve
    # newest-first listing, unfiltered or with an application or operator (as
    # list_decisions_query words it; tests EXPLAIN it).
    """
    CREATE TABLE rate_limit_slot (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        bucket TEXT COLLATE "C" NOT NULL,
        stamped_ms BIGINT NOT NULL
    );
    CREATE INDEX rate_limit_slot_bucket ON rate_limit_slot (bucket, stamped_ms);
    CREATE INDEX rate_limit_slot_stamped ON rate_limit_slot (stamped_ms);
    CREATE TABLE creation_decision (
        decision_id TEXT COLLATE "C" PRIMARY KEY,
        decided_at_ms BIGINT NOT NULL,
        sdk_app_id BIGINT NOT NULL,
        operator_account TEXT COLLATE "C" NOT NULL,
        effect TEXT COLLATE "C" NOT NULL,
        error_code BIGINT NOT NULL,
        error_info TEXT NOT NULL,
        rule_id TEXT COLLATE "C" NOT NULL,
        reason TEXT NOT NULL,
        policy_revision TEXT NOT NULL,
        shadow_rule_ids TEXT NOT NULL,
        latency_us BIGINT NOT NULL,
        request_json TEXT NOT NULL
    );
    CREATE INDEX creation_decision_time ON creation_decision (decided_at_ms, decision_id);
    CREATE INDEX creation_decision_app_time
        ON creation_decision (sdk_app_id, decided_at_ms, decision_id);
    CREATE INDEX creation_decision_operator_time
        ON creation_decision (operator_account, decided_at_ms, decision_id);
    """,
    # The change log without a lock held through writers' commits (postgres_store's
    # docstring argues it): a change row is inserted with no sequence, numbered only by id
    # (its identity, in insertion order); the sequencer (SEQUENCE_CHANGES) later stamps the
    # public sequence onto committed rows. Existing rows keep their sequences and get ids.
    # group_state_change_pending finds the rows still to number.
    """
    ALTER TABLE group_state_change DROP CONSTRAINT group_state_change_pkey;
    ALTER TABLE group_state_change ALTER COLUMN sequence DROP IDENTITY;
    ALTER TABLE group_state_change ALTER COLUMN sequence DROP NOT NULL;
    ALTER TABLE group_state_change ADD COLUMN id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
    CREATE UNIQUE INDEX group_state_change_sequence ON group_state_change (sequence);
    CREATE INDEX group_state_change_pending ON group_state_change (id) WHERE sequence IS NULL;
    """,
    # The audit trail, and the caller of a decision (empty for one recorded before). The
    # indexes serve newest-first listing, unfiltered or with a caller, an action, an
    # application or a group (as list_audit_query words it). Older replicas ignore both.
    """
    ALTER TABLE creation_decision ADD COLUMN caller TEXT COLLATE "C" NOT NULL DEFAULT '';
    CREATE INDEX creation_decision_caller_time
        ON creation_decision (caller, decided_at_ms, decision_id);
    CREATE TABLE audit_event (
        audit_id TEXT COLLATE "C" PRIMARY KEY,
        occurred_at_ms BIGINT NOT NULL,
        caller TEXT COLLATE "C" NOT NULL,
        action TEXT COLLATE "C" NOT NULL,
        sdk_app_id BIGINT NOT NULL,
        group_id TEXT COLLATE "C" NOT NULL,
        topic_id TEXT COLLATE "C" NOT NULL,
        reason TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL,
        request_id TEXT NOT NULL,
        replica TEXT NOT NULL
    );
    CREATE INDEX audit_event_time ON audit_event (occurred_at_ms, audit_id);
    CREATE INDEX audit_event_caller_time ON audit_event (caller, occurred_at_ms, audit_id);
    CREATE INDEX audit_event_action_time ON audit_event (action, occurred_at_ms, audit_id);
    CREATE INDEX audit_event_app_time ON audit_event (sdk_app_id, occurred_at_ms, audit_id);
    CREATE INDEX audit_event_group_time ON audit_event (group_id, occurred_at_ms, audit_id);
    """,
    # A changed state's two writes, the upsert and its change-log row, as one call, so that
    # record sends them as one statement per state with its other statements in one message
    # (postgres_store's docstring). PL/pgSQL keeps each statement's plan for the session.
    # Integers are bigint (a caller's literal of any size resolves to it, or fails as out
    # of range); last_event_kind is cast back to the column's smallint.
    """
    CREATE FUNCTION write_group_state(
        p_sdk_app_id BIGINT, p_group_id TEXT, p_topic_id TEXT, p_full BOOLEAN,
        p_full_since_ms BIGINT, p_last_event_time_ms BIGINT, p_full_event_count BIGINT,
        p_destroyed BOOLEAN, p_last_event_kind BIGINT, p_clear_reason TEXT,
        p_change_time_ms BIGINT
    ) RETURNS VOID LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO group_state (sdk_app_id, group_id, topic_id, "full", full_since_ms,
            last_event_time_ms, full_event_count, destroyed, last_event_kind, clear_reason)
        VALUES (p_sdk_app_id, p_group_id, p_topic_id, p_full, p_full_since_ms,
            p_last_event_time_ms, p_full_event_count, p_destroyed, p_last_event_kind::smallint,
            p_clear_reason)
        ON CONFLICT (sdk_app_id, group_id, topic_id) DO UPDATE SET
            "full" = EXCLUDED."full",
            full_since_ms = EXCLUDED.full_since_ms,
            last_event_time_ms = EXCLUDED.last_event_time_ms,
            full_event_count = EXCLUDED.full_event_count,
            destroyed = EXCLUDED.destroyed,
            last_event_kind = EXCLUDED.last_event_kind,
            clear_reason = EXCLUDED.clear_reason;
        INSERT INTO group_state_change (change_time_ms, sdk_app_id, group_id, topic_id, "full",
            full_since_ms, last_event_time_ms, full_event_count, destroyed, last_event_kind,
            clear_reason, forgotten)
        VALUES (p_change_time_ms, p_sdk_app_id, p_group_id, p_topic_id, p_full,
            p_full_since_ms, p_last_event_time_ms, p_full_event_count, p_destroyed,
            p_last_event_kind::smallint, p_clear_reason, FALSE);
    END
    $$;
    """,
)

# The channel every store NOTIFYs on commit of a change; the payload is the schema's name.
CHANGES_CHANNEL = "chat_policy_changes"

COLUMNS = (
    'sdk_app_id, group_id, topic_id, "full", full_since_ms, last_event_time_ms,'
    " full_event_count, destroyed, last_event_kind, clear_reason"
)

# record's statement per changed state (migration 6): every integer cast, so that a literal
# beyond bigint fails as out of range (a value the store refuses), not as a function that
# does not exist, and one at bigint's lower bound (a numeric literal in SQL) is taken.
_BIGINT = "CAST(%s AS bigint)"
WRITE_STATE = (
    f"SELECT write_group_state({_BIGINT}, %s, %s, %s, {_BIGINT}, {_BIGINT}, {_BIGINT}, %s,"
    f" {_BIGINT}, %s, {_BIGINT})"
)

SELECT_GROUP = f"SELECT {COLUMNS} FROM group_state WHERE sdk_app_id = %s AND group_id = %s"

SELECT_ONE = f"{SELECT_GROUP} AND topic_id = %s"

# Unnesting three arrays pairs their elements up: one query for any number of keys.
SELECT_MANY = f"""
    SELECT {COLUMNS} FROM group_state WHERE (sdk_app_id, group_id, topic_id) IN
        (SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[]))
"""

COUNT = (
    'SELECT count(*), count(*) FILTER (WHERE "full"), count(*) FILTER (WHERE destroyed)'
    " FROM group_state"
)

LOG_CHANGE = (
    f"INSERT INTO group_state_change (change_time_ms, {COLUMNS}, forgotten)"
    f" VALUES ({', '.join(['%s'] * 12)})"
)

CHANGES_AFTER = f"""
    SELECT sequence, change_time_ms, {COLUMNS}, forgotten FROM group_state_change
    WHERE sequence > %s ORDER BY sequence LIMIT %s
"""

# The sequencer: numbers up to a batch of committed, not yet numbered changes in id order,
# after the newest sequence ever given (pruning may have deleted it: pruned_through keeps
# it). Run under the sequencer lock, in a transaction of its own. Returns how many it numbered.
SEQUENCE_CHANGES = """
    WITH pending AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n FROM group_state_change
        WHERE sequence IS NULL ORDER BY id LIMIT %(batch)s
    ), head AS (
        SELECT greatest(pruned_through, (SELECT max(sequence) FROM group_state_change)) AS h
        FROM change_log_state
    ), numbered AS (
        UPDATE group_state_change c SET sequence = head.h + pending.n
        FROM pending, head WHERE c.id = pending.id
        RETURNING 1
    )
    SELECT count(*) FROM numbered
"""

# One statement, so one snapshot: the watermark and the head agree.
CHANGE_LOG_BOUNDS = """
    SELECT pruned_through,
        greatest(pruned_through, (SELECT max(sequence) FROM group_state_change))
    FROM change_log_state
"""

# The outer conditions repeat the inner ones: a row that a concurrent event changed after
# the subquery chose it is checked again, as it is now, before it is deleted.
FORGET_DESTROYED = f"""
    DELETE FROM group_state WHERE (sdk_app_id, group_id, topic_id) IN
        (SELECT sdk_app_id, group_id, topic_id FROM group_state
         WHERE destroyed AND last_event_time_ms < %(before)s
         ORDER BY last_event_time_ms LIMIT %(batch)s)
    AND destroyed AND last_event_time_ms < %(before)s
    RETURNING {COLUMNS}
"""

DELETE_CHANGES = """
    WITH gone AS (
        DELETE FROM group_state_change WHERE sequence IN
            (SELECT sequence FROM group_state_change
             WHERE change_time_ms < %(before)s AND sequence IS NOT NULL
             ORDER BY change_time_ms LIMIT %(batch)s)
        RETURNING sequence
    )
    UPDATE change_log_state
    SET pruned_through = greatest(pruned_through, (SELECT max(sequence) FROM gone))
    RETURNING (SELECT count(*) FROM gone)
"""


# Counts the bucket's window and takes a slot if within the limit (or forced), in one
# statement: one snapshot, taken after the bucket's lock (the statement before it) was
# granted, so it sees every slot the previous holder committed. Returns (count, slot or NULL).
ACQUIRE_SLOT = """
    WITH counted AS (
        SELECT count(*) AS n FROM rate_limit_slot
        WHERE bucket = %(bucket)s AND stamped_ms > %(since)s
    ), taken AS (
        INSERT INTO rate_limit_slot (bucket, stamped_ms)
        SELECT %(bucket)s, %(now)s FROM counted WHERE n < %(limit)s OR %(force)s
        RETURNING id
    )
    SELECT n, (SELECT id FROM taken) FROM counted
"""

# Counts the bucket's window without a lock or a slot (a dry run): it sees every slot whose
# acquire committed before it began.
COUNT_SLOTS = "SELECT count(*) FROM rate_limit_slot WHERE bucket = %s AND stamped_ms > %s"

RELEASE_SLOT = "DELETE FROM rate_limit_slot WHERE id = %s"

DELETE_SLOTS = """
    DELETE FROM rate_limit_slot WHERE id IN
        (SELECT id FROM rate_limit_slot WHERE stamped_ms < %(before)s
         ORDER BY stamped_ms LIMIT %(batch)s)
"""

DELETE_AUDIT_EVENTS = """
    DELETE FROM audit_event WHERE audit_id IN
        (SELECT audit_id FROM audit_event WHERE occurred_at_ms < %(before)s
         ORDER BY occurred_at_ms LIMIT %(batch)s)
"""

DELETE_DECISIONS = """
    DELETE FROM creation_decision WHERE decision_id IN
        (SELECT decision_id FROM creation_decision WHERE decided_at_ms < %(before)s
         ORDER BY decided_at_ms LIMIT %(batch)s)
"""


def list_full_query(
    sdk_app_id: int,
    limit: int,
    after: FullGroupsCursor | None,
    full_since_at_most_ms: int | None = None,
) -> tuple[str, list[object]]:
    """The SQL and parameters of one page of `list_full` (tests EXPLAIN it).

    Without a filter the order (full_since_ms, sdk_app_id, group_id, topic_id) is the index
    group_state_full_since. With one, sdk_app_id is a constant, so the same order is
    (sdk_app_id, full_since_ms, group_id, topic_id), the index group_state_app_full_since;
    the row comparison is written in that index's column order so that it bounds the scan
    (in the other order it would only filter, and a deep page would read every row before it).
    full_since_at_most_ms ends the range: on the leading column of the first index, and after
    the equality on sdk_app_id of the second.
    """
    where: list[str] = ['"full"']
    params: list[object] = []
    at_most = full_since_at_most_ms
    if sdk_app_id:
        order = "sdk_app_id, full_since_ms, group_id, topic_id"
        if after is None:
            where.append("sdk_app_id = %s")
            params.append(sdk_app_id)
        else:
            bound, bound_params = _app_bound(sdk_app_id, after, at_most)
            where.append(bound)
            params += bound_params
            at_most = None  # in the bound already
    else:
        order = "full_since_ms, sdk_app_id, group_id, topic_id"
        if after is not None:
            where.append("(full_since_ms, sdk_app_id, group_id, topic_id) > (%s, %s, %s, %s)")
            params += [after.full_since_ms, *key_tuple(after.key)]
    if at_most is not None:
        where.append("full_since_ms <= %s")
        params.append(at_most)
    query = (
        f"SELECT {COLUMNS} FROM group_state WHERE {' AND '.join(where)} ORDER BY {order} LIMIT %s"
    )
    return query, [*params, limit]


def _app_bound(
    sdk_app_id: int, after: FullGroupsCursor, at_most: int | None
) -> tuple[str, list[object]]:
    """The rows of app `sdk_app_id` after the cursor, as bounds of group_state_app_full_since.

    Not `sdk_app_id = %s AND (sdk_app_id, ...) > (...)`: with an equality on the same column
    PostgreSQL (15) starts the scan at the app's first entry and merely filters by the row
    comparison, reading every earlier row of the app. A lower bound (the row comparison,
    which implies sdk_app_id >= the app) and an upper bound on the app start the scan at
    the cursor instead. With at_most, though, the end of the range is on full_since_ms, and
    a btree stops at a bound on its second column only after an equality on the first (not
    after a row comparison, nor a row upper bound): so the app is an equality and the cursor
    a row of the columns after it, which starts the scan at the cursor too.
    A cursor of another app (page tokens bind the filter, so only by hand) keeps the meaning
    (full_since_ms, sdk_app_id, group_id, topic_id) > cursor.
    """
    cursor_app = after.key.sdk_app_id
    if cursor_app == sdk_app_id:
        _, group_id, topic_id = key_tuple(after.key)
        if at_most is not None:
            bound = (
                "sdk_app_id = %s AND (full_since_ms, group_id, topic_id) > (%s, %s, %s)"
                " AND full_since_ms <= %s"
            )
            return bound, [sdk_app_id, after.full_since_ms, group_id, topic_id, at_most]
        bound = "(sdk_app_id, full_since_ms, group_id, topic_id) > (%s, %s, %s, %s)"
        params: list[object] = [sdk_app_id, after.full_since_ms, group_id, topic_id]
        return f"{bound} AND sdk_app_id <= %s", [*params, sdk_app_id]
    operator = ">=" if sdk_app_id > cursor_app else ">"
    bound = f"sdk_app_id = %s AND full_since_ms {operator} %s"
    if at_most is None:
        return bound, [sdk_app_id, after.full_since_ms]
    return f"{bound} AND full_since_ms <= %s", [sdk_app_id, after.full_since_ms, at_most]
