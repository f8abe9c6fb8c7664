"""The ``ingest`` service: the HTTP endpoints and the group-commit writer behind them."""

from __future__ import annotations

from services.bus.local import LocalBus
from services.runtime import Container, ServicePart


def build(container: Container) -> ServicePart:
    from ingest.app import IngestApi
    from ingest.writer import EmbeddedSink, KafkaSink, Sink, TouchpointWriter

    sink: Sink
    if isinstance(container.bus, LocalBus):
        sink = EmbeddedSink(container.db, container.bus)
    else:
        sink = KafkaSink(container.db, container.bus)
    writer = TouchpointWriter(sink)
    container.extras["ingest_writer"] = writer
    api = IngestApi(container.config, writer)
    return ServicePart(name="ingest", routers=[api.router()], tasks=[writer.run])
