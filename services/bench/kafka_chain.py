"""The end-to-end ceiling: the same three Kafka hops as the pipeline, with no logic at all.

    figures = await kafka_chain_latency(bootstrap, rate=1000, seconds=5)
    figures["p99_ms"]

A producer sends timestamped messages at ``rate`` per second to topic 1; a consumer (settings of
``KafkaBus``'s consumers: a group, manual commits, ``getmany`` with a 500 ms timeout) forwards each
batch to topic 2 (``acks=all``, awaited, sent at once, like the outbox relay), another forwards to
topic 3, and the last one records when each message arrived. Latency = arrival - send, for every
message.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from typing import Any

from services.bench.results import percentile

HOPS = 3


async def kafka_chain_latency(bootstrap: str, *, rate: float, seconds: float, partitions: int = 6,
                              fetch_max_wait_ms: int = 500) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    topics = [f"bench-chain-{tag}-{i}" for i in range(HOPS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()
    # No linger: ingest and the outbox relays hand their batches over closed (``KafkaBus.publish(...,
    # gathered=True)``), so the services' hops do not wait for it either.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=0,
                                max_batch_size=256 * 1024)
    await producer.start()
    consumers = []
    for i, topic in enumerate(topics):
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-chain-{tag}-{i}",
                                    enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=500,
                                    session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
                                    fetch_max_wait_ms=fetch_max_wait_ms)
        await consumer.start()
        consumers.append(consumer)
    latencies: list[float] = []
    total = int(rate * seconds)
    stop = asyncio.Event()

    async def hop(i: int) -> None:
        consumer = consumers[i]
        while not stop.is_set():
            records = await consumer.getmany(timeout_ms=500, max_records=500)
            batch = [r for rs in records.values() for r in rs]
            if not batch:
                continue
            if i + 1 < HOPS:
                futures = [await producer.send(topics[i + 1], key=r.key, value=r.value) for r in batch]
                await asyncio.gather(*futures)
            else:
                now = time.perf_counter()
                latencies.extend((now - struct.unpack("d", r.value or b"\0" * 8)[0]) * 1000 for r in batch)
            await consumer.commit()
            if len(latencies) >= total:
                stop.set()

    try:
        workers = [asyncio.create_task(hop(i)) for i in range(HOPS)]
        await asyncio.sleep(1.0)  # groups join (partitions assigned) before the clock starts
        start = time.perf_counter()
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0.002:
                await asyncio.sleep(delay)
            await producer.send(topics[0], key=b"%d" % n, value=struct.pack("d", time.perf_counter()))
        try:
            await asyncio.wait_for(stop.wait(), 30.0)
        except TimeoutError:
            pass
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    finally:
        for consumer in consumers:
            await consumer.stop()
        await producer.stop()
    return {"rate": rate, "seconds": seconds, "fetch_max_wait_ms": fetch_max_wait_ms, "messages": total,
            "received": len(latencies), "hops": HOPS,
            "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95),
            "p99_ms": percentile(latencies, 0.99)}
