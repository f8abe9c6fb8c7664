"""The ``notifier`` service: the assignment consumer, the SLA clock and the delivery worker."""

from __future__ import annotations

import httpx

from services.consumer import ConsumerRunner
from services.runtime import Container, ServicePart


def build(container: Container) -> ServicePart:
    from notifier.consumer import NotifierHandler
    from notifier.deliveries import DELIVERY_BATCH, DeliveryWorker
    from notifier.http_lanes import HttpLanes
    from notifier.timers import SlaClock

    runner = ConsumerRunner(container.db, container.bus, NotifierHandler(container.db, container.config))
    container.extras.setdefault("runners", []).append(runner)
    timeout = container.config.crm.timeout_seconds if container.config.crm else 10.0
    tls = httpx.create_ssl_context()  # one for every lane: each client building its own took 50 ms
    lanes = HttpLanes(DELIVERY_BATCH, lambda: httpx.AsyncClient(
        timeout=timeout, verify=tls, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        headers={"User-Agent": "lead-handoff/0.1"}, follow_redirects=False))
    worker = DeliveryWorker(container.db, container.config, lanes, batch=DELIVERY_BATCH)
    clock = SlaClock(container.db, container.config, tick=container.settings.sla_tick_seconds)
    container.extras["delivery_worker"] = worker
    return ServicePart(name="notifier", tasks=[runner.run, clock.run, worker.run], on_close=[lanes.aclose])
