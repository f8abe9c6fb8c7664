"""The delivery worker: sends ``deliveries`` rows (CRM pushes, alerts) with retries, in order per lead.

    worker = DeliveryWorker(db, config, lanes)       # lanes: HttpLanes made at bootstrap (or an
    await worker.run(stop)                           # httpx.AsyncClient, which every send shares)

A row is claimed by moving its ``next_attempt_at`` past the send's timeout (a lease) in a short
transaction (on PostgreSQL it also reads the lead documents to send), then sent outside any
transaction, then its result is recorded:

- 2xx: delivered. 5xx, 408, 429 (``Retry-After`` honoured) and network errors/timeouts: retried with
  exponential backoff and jitter, up to ``crm.max_attempts``. Other 4xx (and exhausted retries): dead
  -- a ``dead_letters`` row, and a ``dead_letter`` alert -- at once.
- Only the oldest pending row of a (target, lead) is eligible, so pushes for one lead arrive in order.
- A per-target circuit breaker stops calling a CRM that keeps failing; its rows wait, none is lost.
- A worker killed mid-send leaves the row pending: once the lease runs out it is sent again with the
  same ``Idempotency-Key``, so the receiver can drop the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from prometheus_client import Counter
from sqlalchemy import and_, bindparam, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased
from sqlalchemy.sql.dml import ReturningUpdate

from notifier.alerts import alert_requests
from notifier.alerts import dead_letter as dead_letter_alert
from notifier.crm import LeadDocumentError, MissingSecret, OutboundRequest, build_crm_requests, send_sequence
from notifier.http_lanes import HttpLanes
from notifier.queue import CRM_TARGET, DIRTY, alert_from_json, enqueue_alert
from notifier.retry import CircuitBreaker, RetryPolicy, decide
from services.config import HandoffConfig
from services.db.arrays import update_rows
from services.db.database import Database
from services.db.dialect import claim
from services.db.models import deliveries
from services.dead_letters import store_dead_letter
from services.events import utcnow
from services.lead_documents import load_lead_documents
from services.outbox import wait_any as _wait_any

log = logging.getLogger(__name__)
DELIVERY_BATCH = 32  # rows claimed per round, all sent at once: the bootstrap gives it as many HTTP lanes
OUTCOMES = Counter("handoff_deliveries_total", "Delivery attempts by target and outcome", ["target", "outcome"])


class Permanent(Exception):
    """The delivery can never succeed as it stands (missing secret, lead gone): dead-letter it."""


@dataclass(frozen=True)
class _Attempt:
    """One send's result, recorded with the rest of its batch."""

    row: dict[str, Any]
    attempt: int
    verdict: str  # delivered | retry | dead
    status: int | None
    reason: str
    retry_at: datetime | None


class DeliveryWorker:
    def __init__(self, db: Database, config: HandoffConfig, client: HttpLanes | httpx.AsyncClient, *,
                 batch: int = DELIVERY_BATCH, idle: float = 0.2, policy: RetryPolicy | None = None,
                 breaker: CircuitBreaker | None = None, environ: dict[str, str] | None = None) -> None:
        self.db = db
        self.config = config
        self.lanes = client if isinstance(client, HttpLanes) else HttpLanes.shared(client)
        self.batch = batch
        self.idle = idle
        max_attempts = config.crm.max_attempts if config.crm else 12
        self.policy = policy or RetryPolicy(max_attempts=max_attempts)
        self.timeout = config.crm.timeout_seconds if config.crm else 10.0
        self._breaker_template = breaker or CircuitBreaker()
        self.breakers: dict[str, CircuitBreaker] = {}
        self.environ = environ
        self._random = random.Random()
        self._wakeup = asyncio.Event()
        self._claim_queries: dict[tuple[str, frozenset[str]], ReturningUpdate[Any]] = {}
        db.on_commit(self._on_commit)

    def _on_commit(self, flags: dict[str, Any]) -> None:
        if flags.get(DIRTY):  # queued in this process: send now rather than at the next idle tick
            self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Cleared before the round claims: a row this process queues meanwhile wakes the next round
            # at once. A round that found less than a full batch left nothing due behind it, so the
            # next one waits for such a wake-up (or the idle tick: retries, other processes' rows)
            # instead of claiming again at once, which found nothing about every other time.
            self._wakeup.clear()
            try:
                sent = await self.run_once()
            except Exception as exc:  # database away: rows wait in the table
                log.warning("delivery worker: %s", exc)
                sent = 0
            if sent < self.batch:
                await _wait_any(stop, self._wakeup, self.idle)

    def _breaker(self, target: str) -> CircuitBreaker:
        return self.breakers.get(target, self._breaker_template)

    async def run_once(self) -> int:
        now = utcnow()
        # On PostgreSQL the lead documents are read in the claim's transaction: a read on a second
        # connection cost four more round trips per cycle (checkout, BEGIN, COMMIT, ROLLBACK). SQLite's
        # one writer is not held while they are read: the embedded services share it.
        requests: list[list[OutboundRequest] | Permanent] = []
        async with self.db.transaction() as conn:
            rows = await self._claim(conn, now)
            if rows and self.db.is_postgres:
                requests = await self._requests_for(conn, rows)
        if rows and not self.db.is_postgres:
            async with self.db.read() as conn:
                requests = await self._requests_for(conn, rows)
        for target in {r["target"] for r in rows}:
            self.breakers[target] = self._breaker(target).trial_started(now)
        if rows:
            # Sent concurrently, recorded together: one transaction per batch, not one per row (a commit
            # per CRM push was most of the worker's database time). Until it commits, the rows' lease
            # keeps them from being sent twice; a crash before it re-sends them with the same key.
            await self._record(list(await asyncio.gather(*(
                self._deliver(row, prepared) for row, prepared in zip(rows, requests, strict=True)))))
        return len(rows)

    async def _claim(self, conn: AsyncConnection, now: datetime) -> list[dict[str, Any]]:
        """Lease the due rows (their lead's oldest pending one each), up to ``batch``: one statement that
        picks them and moves their ``next_attempt_at`` past the send (a SELECT, then an UPDATE naming
        every id, was one more round trip per round and a new prepared statement per count of ids)."""
        blocked = frozenset(t for t in (CRM_TARGET, "alert:webhook", "alert:slack", "alert:pagerduty")
                            if not self._breaker(t).allows(now))
        lease = now + timedelta(seconds=self.timeout * 3 + 5)
        leased = (await conn.execute(self._claim_query(conn, blocked), {"now": now, "lease": lease})).mappings()
        return sorted((dict(r) for r in leased), key=lambda r: r["id"])  # RETURNING promises no order

    def _claim_query(self, conn: AsyncConnection, blocked: frozenset[str]) -> ReturningUpdate[Any]:
        """The claim (due rows, each the oldest pending of its lead, leased until ``lease``), ``now`` and
        ``lease`` parameters; built once per set of blocked targets (building it took 0.6 ms, on every
        round of sends)."""
        key = (conn.dialect.name, blocked)
        query = self._claim_queries.get(key)
        if query is None:
            earlier = aliased(deliveries)
            head_of_line = ~exists().where(and_(
                earlier.c.target == deliveries.c.target, earlier.c.order_key == deliveries.c.order_key,
                earlier.c.status == "pending", earlier.c.id < deliveries.c.id))
            due = select(deliveries.c.id).where(
                deliveries.c.status == "pending", deliveries.c.next_attempt_at <= bindparam("now"), head_of_line)
            if blocked:
                due = due.where(deliveries.c.target.not_in(sorted(blocked)))
            due = claim(conn, due.order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(self.batch))
            query = (update(deliveries).where(deliveries.c.id.in_(due.scalar_subquery()))
                     .values(next_attempt_at=bindparam("lease")).returning(*deliveries.c))
            self._claim_queries[key] = query
        return query

    async def _requests_for(self, conn: AsyncConnection,
                            rows: list[dict[str, Any]]) -> list[list[OutboundRequest] | Permanent]:
        """Each row's requests (or why it can never be sent). The CRM pushes' lead documents are read in
        one set of queries for the whole batch: a document per row, each on its own connection, was a
        third of the notifier's time at 1,000 tp/s (and spilled past the pool into new connections)."""
        lead_ids = [row["payload"]["lead_id"] for row in rows if row["target"] == CRM_TARGET]
        documents: dict[str, dict[str, Any] | None] = {}
        if lead_ids and self.config.crm is not None:
            documents = await load_lead_documents(conn, lead_ids)
        built: list[list[OutboundRequest] | Permanent] = []
        for row in rows:
            try:
                built.append(self._requests(row, documents))
            except Permanent as exc:
                built.append(exc)
            except Exception as exc:  # a row no code path can send (a bug, a mangled payload):
                # dead-letter it rather than fail the claim, which would hold back the rows beside it.
                log.exception("delivery %s: cannot build its requests", row["id"])
                built.append(Permanent(f"cannot build the requests: {type(exc).__name__}: {exc}"))
        return built

    async def _deliver(self, row: dict[str, Any], requests: list[OutboundRequest] | Permanent) -> _Attempt:
        attempt = row["attempts"] + 1
        if isinstance(requests, Permanent):
            return _Attempt(row, attempt, "dead", None, str(requests), None)
        async with self.lanes.lane() as client:
            result = await send_sequence(client, requests, timeout=self.timeout)
        now = utcnow()
        outcome = decide(self.policy, attempt, result.status, result.error, result.retry_after, now,
                         self._random.random())
        if outcome.verdict != "dead" or result.status is None or result.status >= 500:
            self.breakers[row["target"]] = self._breaker(row["target"]).record(outcome.verdict == "delivered", now)
        OUTCOMES.labels(row["target"], outcome.verdict).inc()
        return _Attempt(row, attempt, outcome.verdict, result.status, outcome.reason, outcome.retry_at)

    def _requests(self, row: dict[str, Any], documents: Mapping[str, dict[str, Any] | None]) -> list[OutboundRequest]:
        # os.environ itself, not a copy: copying it for every row was 4 % of the notifier's CPU.
        environ: Mapping[str, str] = self.environ if self.environ is not None else os.environ
        payload = row["payload"]
        if row["target"] == CRM_TARGET:
            if self.config.crm is None:
                raise Permanent("no crm is configured")
            lead = documents.get(payload["lead_id"])
            if lead is None:
                raise Permanent(f"lead {payload['lead_id']} no longer exists")
            try:
                return build_crm_requests(self.config.crm, lead, payload["assignment_id"], environ=environ,
                                          timestamp=int(utcnow().timestamp()))
            except (MissingSecret, LeadDocumentError) as exc:
                raise Permanent(str(exc)) from exc
        alert = alert_from_json(payload["alert"])
        requests, problems = alert_requests(self.config.alerts, alert, environ=environ)
        sink = f"alert:{payload['sink']}"
        chosen = [r for r in requests if r.step == sink]
        if not chosen:
            raise Permanent("; ".join(problems) or f"sink {payload['sink']} is no longer configured")
        return chosen

    async def _record(self, attempts: list[_Attempt]) -> None:
        """Write the attempts' results in one transaction: one UPDATE per verdict, dead letters after."""
        now = utcnow()
        by_verdict: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for a in attempts:
            values: dict[str, Any] = {"id": a.row["id"], "attempts": a.attempt, "last_status": a.status,
                                      "last_error": a.reason[:2000]}
            if a.verdict == "delivered":
                values |= {"status": "delivered", "delivered_at": now, "last_error": None}
            elif a.verdict == "retry":
                values |= {"status": "pending", "next_attempt_at": a.retry_at or now}
            else:
                values |= {"status": "dead"}
            by_verdict[a.verdict].append(values)
        async with self.db.transaction() as conn:
            for rows in by_verdict.values():
                await update_rows(conn, deliveries, "id", rows)
            for a in attempts:
                if a.verdict == "dead":
                    await self._dead(conn, a.row, a.reason, now)

    async def _dead(self, conn: AsyncConnection, row: dict[str, Any], reason: str, now: datetime) -> None:
        log.error("delivery %s to %s is dead: %s", row["id"], row["target"], reason)
        dead_id = await store_dead_letter(
            conn, origin=f"delivery:{row['target']}", error=reason, payload=dict(row["payload"]),
            key=row["order_key"], event_id=row["idempotency_key"], delivery_id=row["id"])
        if row["kind"] != "dead_letter":  # a dead alert about a dead letter would loop forever
            await enqueue_alert(conn, self.config.alerts, dead_letter_alert(
                id=f"dead-{dead_id}", lead_id=row["lead_id"] or "", rep_id=None, reason=reason, at=now,
                details={"delivery_id": row["id"], "target": row["target"], "dead_letter_id": dead_id}), now)


async def replay_delivery(conn: AsyncConnection, delivery_id: int) -> bool:
    """Put a dead delivery back in the queue (``handoff dlq replay``); False if it is not dead."""
    result = await conn.execute(update(deliveries).where(
        deliveries.c.id == delivery_id, deliveries.c.status == "dead",
    ).values(status="pending", attempts=0, next_attempt_at=utcnow(), last_error=None))
    return bool(result.rowcount)
