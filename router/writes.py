"""What one router batch writes, gathered while it decides and written in a few statements at the end.

Routing decides lead by lead (each assignment changes the rep loads and cursors the next one sees), but
its writes need not go one statement at a time: a qualified lead used to cost a dozen round trips (two
stage moves with their history and stage-chain refresh, the assignment, the cursor, the account owner,
the outbox event). Here they are kept in memory and :meth:`BatchWrites.flush` writes them with one
statement per table, inside the batch's transaction::

    writes = BatchWrites(rows)                  # rows: the batch's locked lead rows, kept current
    writes.move("l1", "engaged", "mql", at=now, cause="demo request", qualified_at=now)
    writes.assignment({"id": ..., "lead_id": "l1", "rep_id": "anna", ...})
    writes.event(Event.new(LEAD_ASSIGNED, ...))
    await writes.flush(conn)                    # before the transaction commits

A caller that must read what is pending (a reassignment ends the lead's current assignment row with
an UPDATE) flushes first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.db.arrays import insert_rows, update_rows
from services.db.dialect import insert_ignore, upsert
from services.db.models import account_owners, assignments, leads, routing_cursors, stage_history
from services.events import ASSIGNMENTS, Event
from services.lead_store import stage_move
from services.outbox import add_events
from services.stage_chain import refresh_stage_chain

# The lead columns routing changes and later events of the same lead in the batch must see.
_TRACKED = ("stage", "owner")


class BatchWrites:
    def __init__(self, rows: MutableMapping[str, Any]) -> None:
        self.rows = rows
        self._clear()

    def _clear(self) -> None:
        self._lead_values: dict[str, dict[str, Any]] = {}
        self._history: list[dict[str, Any]] = []
        self._assignments: list[dict[str, Any]] = []
        self._cursors: dict[str, dict[str, Any]] = {}
        self._owners: dict[str, dict[str, Any]] = {}
        self._events: list[Event] = []

    @property
    def pending(self) -> bool:
        return bool(self._lead_values or self._history or self._assignments or self._cursors or self._owners
                    or self._events)

    def move(self, lead_id: str, from_stage: str | None, to_stage: str, *, at: datetime, cause: str,
             **lead_values: Any) -> None:
        """Move the lead to ``to_stage`` (with any other column values) and add the history row; as
        :func:`services.lead_store.record_stage` does, but written at :meth:`flush`."""
        move_values, history_row = stage_move(lead_id, from_stage, to_stage, at=at, cause=cause, **lead_values)
        values = self._lead_values.setdefault(lead_id, {})
        values.update(move_values)
        self._history.append(history_row)
        row = self.rows.get(lead_id)
        if row is not None:
            self.rows[lead_id] = {**row, **{k: values[k] for k in _TRACKED if k in values}}

    def assignment(self, row: dict[str, Any]) -> None:
        self._assignments.append(row)

    def cursor(self, team: str, cursor: Any, at: datetime) -> None:
        self._cursors[team] = {"team": team, "cursor": cursor, "updated_at": at}

    def account_owner(self, domain: str, rep_id: str, since: datetime) -> None:
        """The account's first owner stays (insert-ignore), within the batch as in the table."""
        self._owners.setdefault(domain, {"company_domain": domain, "rep_id": rep_id, "since": since})

    def event(self, event: Event) -> None:
        self._events.append(event)

    async def flush(self, conn: AsyncConnection) -> None:
        """Write everything gathered so far, one statement per table (per column set for leads)."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for lead_id, values in self._lead_values.items():
            columns = tuple(sorted(values))
            by_columns[columns].append({"id": lead_id, **{c: values[c] for c in columns}})
        for rows in by_columns.values():
            await update_rows(conn, leads, "id", rows)
        if self._history:
            await insert_rows(conn, stage_history, self._history)  # one statement (two rows per assigned lead)
            await refresh_stage_chain(conn, {row["lead_id"] for row in self._history})
        if self._assignments:
            await conn.execute(assignments.insert(), self._assignments)
        if self._cursors:
            await conn.execute(upsert(conn, routing_cursors, ["team"], ["cursor", "updated_at"]),
                               [self._cursors[team] for team in sorted(self._cursors)])
        if self._owners:
            await conn.execute(insert_ignore(conn, account_owners), list(self._owners.values()))
        if self._events:
            await add_events(conn, ASSIGNMENTS, self._events)
        self._clear()
