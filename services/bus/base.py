"""The small interface every service depends on (never on aiokafka directly).

    await bus.publish(TOUCHPOINTS, [event])        # durable when it returns, else raises BusUnavailable
    consumer = bus.consumer("scoring", [TOUCHPOINTS])
    await consumer.start()
    try:
        batch = await consumer.poll(timeout=1.0)   # a batch of messages, in order per partition
        ...                                        # process and commit the database transaction
        await consumer.commit(batch)               # then move the group's offsets past the batch
    finally:
        await consumer.stop()

Topic names are the logical ones (``touchpoints``); the bus adds the configured prefix.
Delivery is at-least-once: a batch not committed is delivered again (to this or another member).
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.events import Event, Outgoing


class BusError(Exception):
    """Base of the bus's errors."""


class BusUnavailable(BusError):
    """The bus could not make a message durable (broker or database down): retry later (ingest: 503)."""


class CommitFailed(BusError):
    """The group moved on (rebalance, lost lease): the batch will be delivered again, to someone."""


@dataclass(frozen=True)
class Message:
    topic: str  # logical name, without the prefix
    partition: int
    offset: int
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def event(self) -> Event:
        """The CloudEvent inside; raises ``ValueError`` when the message is malformed (dead-letter it)."""
        return Event.from_wire(self.key, self.value, self.headers)


def partition_for(key: str, partitions: int) -> int:
    """Stable key -> partition for the embedded bus (Kafka uses its own murmur2 partitioner)."""
    return zlib.crc32(key.encode("utf-8")) % partitions


class Consumer(ABC):
    group: str
    topics: Sequence[str]

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Message]:
        """The next batch (possibly empty after ``timeout`` seconds)."""

    @abstractmethod
    async def commit(self, messages: Sequence[Message]) -> None:
        """Mark everything up to and including ``messages`` processed; raises ``CommitFailed``."""

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member holds now (for tests and metrics)."""
        return set()

    async def lag(self) -> dict[tuple[str, int], int]:
        """Messages not yet committed per held partition (metrics)."""
        return {}


class Bus(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def publish(self, topic: str, events: Sequence[Outgoing], *, gathered: bool = False) -> None:
        """Make every event durable on ``topic`` (keyed by ``event.key``), or raise ``BusUnavailable``.

        ``gathered``: the caller gathered ``events`` itself (ingest's group commit) and nothing else
        will join them, so a bus that waits for more messages before sending (Kafka's linger) sends
        them at once."""

    @abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the bus cannot be reached (readiness)."""
