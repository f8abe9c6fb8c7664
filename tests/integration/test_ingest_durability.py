"""Ingest's promises: an event id counts once across restarts, and no 2xx without durability (503)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.support.infra import Broker, broker_binary, unavailable
from tests.support.pipeline import running_pipeline

pytestmark = pytest.mark.integration


def touchpoints(n: int) -> dict[str, list[dict[str, str]]]:
    return {"touchpoints": [{"event_id": f"restart-{i}", "type": "page_view", "anonymous_id": f"v{i}"}
                            for i in range(n)]}


async def test_an_event_id_counts_once_across_restarts(
    database_url: str, bus_kind: str, maybe_broker: Broker | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_pipeline(database_url, bus_kind, maybe_broker, services={"ingest"},
                                monkeypatch=monkeypatch) as p:
        r = await p.client.post("/v1/touchpoints/batch", json=touchpoints(10), headers=p.auth())
        assert r.json() == {"accepted": 10, "duplicates": 0}
    # A new process on the same database: the ids are remembered.
    async with running_pipeline(database_url, bus_kind, maybe_broker, services={"ingest"},
                                monkeypatch=monkeypatch) as p:
        r = await p.client.post("/v1/touchpoints/batch", json=touchpoints(12), headers=p.auth())
        assert r.status_code == 202
        assert r.json() == {"accepted": 2, "duplicates": 10}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_stopped_broker_gives_503_never_a_false_2xx(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = broker_binary()
    if binary is None:
        unavailable("no Kafka-protocol broker binary")
    broker = Broker(str(binary), Path(tempfile.mkdtemp(prefix="handoff-503-")))
    broker.start()
    try:
        async with running_pipeline(database_url, "kafka", broker, services={"ingest"},
                                    monkeypatch=monkeypatch) as p:
            ok = await p.client.post("/v1/touchpoints", headers=p.auth(),
                                     json={"event_id": "before", "type": "page_view", "anonymous_id": "x"})
            assert ok.status_code == 202
            broker.stop()
            started = time.monotonic()
            r = await p.client.post("/v1/touchpoints", headers=p.auth(),
                                    json={"event_id": "during", "type": "page_view", "anonymous_id": "x"})
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"].isdigit()
            assert r.json()["error"]["code"] == "unavailable"
            assert time.monotonic() - started < 60
            # The refused id was not remembered: when the client retries later it is accepted, not a duplicate.
            broker.start()
            await p.container.bus.start()  # the memory broker lost its topics: create them again
            retry = await p.client.post("/v1/touchpoints", headers=p.auth(),
                                        json={"event_id": "during", "type": "page_view", "anonymous_id": "x"})
            assert retry.status_code == 202 and retry.json() == {"accepted": 1, "duplicates": 0}
    finally:
        broker.stop()
