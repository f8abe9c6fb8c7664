"""Test buses: one that hands a scripted consumer to the runner, one that records what is published."""

from __future__ import annotations

from collections.abc import Sequence

from services.bus.base import Bus, BusUnavailable, Consumer
from services.events import Outgoing


class OneConsumerBus(Bus):
    """Gives every ``consumer()`` call the same consumer (a fake the test scripts); publishes nothing."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, events: Sequence[Outgoing], *, gathered: bool = False) -> None: ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        return self._consumer

    async def ping(self) -> None: ...


class RecordingBus(Bus):
    """Publishes nowhere; remembers what it was given (event ids, their topics, the ``gathered`` flags).
    ``failures``: how many publishes to refuse first with :class:`BusUnavailable` (a broker away)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.published: list[str] = []
        self.topics: list[str] = []
        self.gathered: list[bool] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, events: Sequence[Outgoing], *, gathered: bool = False) -> None:
        if self.failures:
            self.failures -= 1
            raise BusUnavailable("the broker is away")
        self.published += [e.id for e in events]
        self.topics += [topic] * len(events)
        self.gathered.append(gathered)

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        raise NotImplementedError

    async def ping(self) -> None: ...
