"""The embedded durable bus: a log table and group offsets in the service's own database.

    bus = LocalBus(db, prefix="handoff.", partitions=4)
    await bus.start()
    await bus.publish("touchpoints", events)           # committed to the log when it returns
    async with db.transaction() as conn:
        await bus.publish_in(conn, "lead-events", events)   # atomically with the caller's state

Like Kafka: a topic has partitions (key -> crc32 % partitions, so one key keeps its order); each
partition is an append-only sequence of offsets; a consumer group stores one committed offset per
partition. Offsets are handed out under a row lock on ``bus_partitions``, so they become visible in
order and a reader never skips a slower writer's message. Group members hold partitions by lease
(``bus_offsets.owner``/``lease_until``) and heartbeat through ``bus_members``; a member that dies
(kill -9) loses its partitions when the lease runs out, and whoever takes them resumes from the last
committed offset. Nothing acknowledged is lost: ``publish`` returns only after the commit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, and_, delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.bus.base import Bus, BusUnavailable, CommitFailed, Consumer, Message, partition_for
from services.db.bulk import insert_many
from services.db.database import Database
from services.db.dialect import insert_ignore, upsert
from services.db.models import bus_log, bus_members, bus_offsets, bus_partitions
from services.events import TOPICS, Outgoing, utcnow

_LOG_COLUMNS = ("topic", "partition", "offset", "key", "value", "headers", "created_at")


class LocalBus(Bus):
    def __init__(
        self,
        db: Database,
        *,
        prefix: str = "handoff.",
        partitions: int = 4,
        poll_interval: float = 0.05,
        lease_seconds: float = 10.0,
    ) -> None:
        self.db = db
        self.prefix = prefix
        self.partitions = partitions
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=lease_seconds)
        self._waiters: set[asyncio.Event] = set()
        db.on_commit(self._on_commit)

    def topic(self, name: str) -> str:
        return self.prefix + name

    async def start(self) -> None:
        rows = [{"topic": self.topic(t), "partition": p, "next_offset": 0}
                for t in TOPICS for p in range(self.partitions)]
        async with self.db.transaction() as conn:
            await conn.execute(insert_ignore(conn, bus_partitions), rows)

    async def stop(self) -> None:
        self._wake()

    async def ping(self) -> None:
        await self.db.ping()

    async def publish(self, topic: str, events: Sequence[Outgoing], *, gathered: bool = False) -> None:
        if not events:
            return
        try:
            async with self.db.transaction() as conn:
                await self.publish_in(conn, topic, events)
        except (SQLAlchemyError, OSError) as exc:
            raise BusUnavailable(f"the embedded bus could not store the events: {exc}") from exc

    async def publish_in(self, conn: AsyncConnection, topic: str, events: Sequence[Outgoing]) -> None:
        """Append ``events`` inside the caller's transaction: durable exactly when it commits."""
        if not events:
            return
        full = self.topic(topic)
        by_partition: dict[int, list[Outgoing]] = defaultdict(list)
        for event in events:
            by_partition[partition_for(event.key, self.partitions)].append(event)
        counts = {partition: len(batch) for partition, batch in by_partition.items()}
        ends = await _claim_offsets(conn, full, counts)
        now = utcnow()
        rows: list[tuple[Any, ...]] = []
        for partition in sorted(by_partition):
            batch = by_partition[partition]
            first = ends[partition] - len(batch)
            rows += [(full, partition, first + i, e.key, e.value(), e.headers(), now) for i, e in enumerate(batch)]
        # One executemany through the driver: Core's per-row parameter handling cost more than the insert.
        await insert_many(conn, bus_log, _LOG_COLUMNS, rows)
        conn.info["bus_published"] = True

    def _on_commit(self, flags: dict[str, Any]) -> None:
        if flags.get("bus_published"):
            self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    def consumer(self, group: str, topics: Sequence[str]) -> LocalConsumer:
        return LocalConsumer(self, group, topics)


class LocalConsumer(Consumer):
    def __init__(self, bus: LocalBus, group: str, topics: Sequence[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = list(topics)
        self.member_id = uuid.uuid4().hex[:16]
        self._positions: dict[tuple[str, int], int] = {}  # (full topic, partition) -> next offset to read
        self._next_heartbeat = 0.0
        self._wakeup = asyncio.Event()
        self._started = False

    # -- membership -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.bus._waiters.add(self._wakeup)
        self._started = True
        await self._rebalance()

    async def stop(self) -> None:
        self.bus._waiters.discard(self._wakeup)
        if not self._started:
            return
        self._started = False
        try:
            async with self.bus.db.transaction() as conn:
                await conn.execute(update(bus_offsets).where(
                    bus_offsets.c.group_id == self.group, bus_offsets.c.owner == self.member_id
                ).values(owner=None, lease_until=None))
                await conn.execute(delete(bus_members).where(
                    bus_members.c.group_id == self.group, bus_members.c.member_id == self.member_id))
        except (SQLAlchemyError, OSError):
            pass  # the leases run out on their own

    def _all_partitions(self) -> list[tuple[str, int]]:
        return [(self.bus.topic(t), p) for t in sorted(self.topics) for p in range(self.bus.partitions)]

    async def _rebalance(self) -> None:
        """Heartbeat, then take this member's share of the partitions (partition i -> member i % n)."""
        loop = asyncio.get_running_loop()
        now = utcnow()
        until = now + self.bus.lease
        async with self.bus.db.transaction() as conn:
            await conn.execute(upsert(conn, bus_members, ["group_id", "member_id"], ["lease_until"]),
                               [{"group_id": self.group, "member_id": self.member_id, "lease_until": until}])
            await conn.execute(delete(bus_members).where(
                bus_members.c.group_id == self.group, bus_members.c.lease_until < now))
            members = sorted((await conn.execute(select(bus_members.c.member_id).where(
                bus_members.c.group_id == self.group))).scalars())
            partitions = self._all_partitions()
            await conn.execute(insert_ignore(conn, bus_offsets), [
                {"group_id": self.group, "topic": t, "partition": p, "committed": 0} for t, p in partitions])
            mine = {tp for i, tp in enumerate(partitions) if members[i % len(members)] == self.member_id}
            rows = (await conn.execute(select(
                bus_offsets.c.topic, bus_offsets.c.partition, bus_offsets.c.owner,
                bus_offsets.c.lease_until, bus_offsets.c.committed,
            ).where(bus_offsets.c.group_id == self.group, bus_offsets.c.topic.in_({t for t, _ in partitions})))
            ).all()
            held: dict[tuple[str, int], int] = {}
            for topic, partition, owner, lease_until, committed in rows:
                tp = (topic, partition)
                free = owner is None or owner not in members or (lease_until is not None and lease_until < now)
                if tp in mine and (owner == self.member_id or free):
                    held[tp] = committed
                elif owner == self.member_id:  # no longer ours: hand it over
                    await conn.execute(update(bus_offsets).where(*self._pk(tp)).values(
                        owner=None, lease_until=None))
            for tp in held:
                await conn.execute(update(bus_offsets).where(*self._pk(tp)).values(
                    owner=self.member_id, lease_until=until))
        # Partitions newly taken start from the committed offset; kept ones keep their position.
        self._positions = {tp: self._positions.get(tp, committed) for tp, committed in held.items()}
        self._next_heartbeat = loop.time() + self.bus.lease.total_seconds() / 3

    def _pk(self, tp: tuple[str, int]) -> tuple[ColumnElement[bool], ...]:
        return (bus_offsets.c.group_id == self.group, bus_offsets.c.topic == tp[0],
                bus_offsets.c.partition == tp[1])

    def assignment(self) -> set[tuple[str, int]]:
        n = len(self.bus.prefix)
        return {(t[n:], p) for t, p in self._positions}

    # -- reading ----------------------------------------------------------------------------------
    async def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if loop.time() >= self._next_heartbeat:
                await self._rebalance()
            self._wakeup.clear()
            batch = await self._fetch(max_records)
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                return batch
            try:
                await asyncio.wait_for(self._wakeup.wait(), min(remaining, self.bus.poll_interval * 4))
            except TimeoutError:
                pass

    async def _fetch(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        n = len(self.bus.prefix)
        async with self.bus.db.read() as conn:
            for (topic, partition), position in sorted(self._positions.items()):
                if len(out) >= max_records:
                    break
                rows = (await conn.execute(
                    select(bus_log.c.offset, bus_log.c.key, bus_log.c.value, bus_log.c.headers)
                    .where(bus_log.c.topic == topic, bus_log.c.partition == partition,
                           bus_log.c.offset >= position)
                    .order_by(bus_log.c.offset).limit(max_records - len(out))
                )).all()
                for offset, key, value, headers in rows:
                    out.append(Message(topic[n:], partition, offset, key, bytes(value), dict(headers)))
                if rows:
                    self._positions[(topic, partition)] = rows[-1][0] + 1
        return out

    async def commit(self, messages: Sequence[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (self.bus.topic(m.topic), m.partition)
            last[tp] = max(last.get(tp, -1), m.offset + 1)
        if not last:
            return
        lost = []
        async with self.bus.db.transaction() as conn:
            for tp, offset in last.items():
                result = await conn.execute(update(bus_offsets).where(
                    *self._pk(tp), bus_offsets.c.owner == self.member_id,
                ).values(committed=offset))
                if result.rowcount == 0:
                    lost.append(tp)
        if lost:
            for tp in lost:
                self._positions.pop(tp, None)
            raise CommitFailed(f"{self.group}: partitions {lost} were reassigned; the batch will be redelivered")

    async def lag(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        async with self.bus.db.read() as conn:
            rows = (await conn.execute(
                select(bus_offsets.c.topic, bus_offsets.c.partition,
                       bus_partitions.c.next_offset - bus_offsets.c.committed)
                .join(bus_partitions, and_(bus_partitions.c.topic == bus_offsets.c.topic,
                                           bus_partitions.c.partition == bus_offsets.c.partition))
                .where(bus_offsets.c.group_id == self.group)
            )).all()
        n = len(self.bus.prefix)
        for topic, partition, lag in rows:
            out[(topic[n:], partition)] = int(lag)
        return out


async def _claim_offsets(conn: AsyncConnection, topic: str, counts: dict[int, int]) -> dict[int, int]:
    """Advance each partition's ``next_offset`` by its count under the row lock; return the new ends.

    SQLite: one ``UPDATE ... RETURNING`` for every partition (the database has one write lock, so
    the order rows are locked in cannot deadlock; each statement is a trip to the driver's thread).
    PostgreSQL: one statement per partition, in partition order, so that two publishers lock the
    rows in the same order and never deadlock.
    """
    ends: dict[int, int] = {}
    if conn.dialect.name == "sqlite":
        quote = conn.dialect.identifier_preparer.quote
        part, nxt = quote("partition"), quote("next_offset")
        cases = " ".join("WHEN ? THEN ?" for _ in counts)
        sql = (f"UPDATE {quote(bus_partitions.name)} SET {nxt} = {nxt} + CASE {part} {cases} END "
               f"WHERE {quote('topic')} = ? AND {part} IN ({', '.join('?' for _ in counts)}) "
               f"RETURNING {part}, {nxt}")
        params = (*(v for item in counts.items() for v in item), topic, *counts)
        claimed = (await conn.exec_driver_sql(sql, params)).all()
        ends.update(cast(list[tuple[int, int]], claimed))
    else:
        for partition in sorted(counts):
            end = (await conn.execute(
                update(bus_partitions)
                .where(bus_partitions.c.topic == topic, bus_partitions.c.partition == partition)
                .values(next_offset=bus_partitions.c.next_offset + counts[partition])
                .returning(bus_partitions.c.next_offset)
            )).scalar_one_or_none()
            if end is not None:
                ends[partition] = end
    missing = [p for p in sorted(counts) if p not in ends]
    if missing:  # a topic created after start (tests with custom topics)
        await conn.execute(insert_ignore(conn, bus_partitions),
                           [{"topic": topic, "partition": p, "next_offset": counts[p]} for p in missing])
        ends.update((p, counts[p]) for p in missing)
    return ends


__all__ = ["BusUnavailable", "LocalBus", "LocalConsumer"]
