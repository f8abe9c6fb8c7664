"""The ingest HTTP API (contract section 3, "Ingest").

    POST /v1/touchpoints            one touchpoint        Bearer <source write key> | X-Handoff-Signature
    POST /v1/touchpoints/batch      {"touchpoints": [..]} (at most 500)
    POST /v1/track|identify|page|alias|batch     Segment HTTP Tracking API (Basic, write key as user)
    POST /webhooks/{source_id}      the source's native payload, signed the source's way

A 2xx is sent only once every touchpoint of the request is durable (the writer's group commit);
a bus or database that cannot take them gives 503 with ``Retry-After``. Bad input of any shape is a
4xx with the contract's JSON error body, never a 5xx.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from ingest import metrics
from ingest.adapters import adapter_for, segment
from ingest.body import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    IngestError,
    Unauthorized,
    UnknownSource,
    decode_body,
    parse_json,
    refuse_nul,
)
from ingest.schemas import TouchpointIn, to_touchpoints
from ingest.signatures import (
    verify_basic_write_key,
    verify_generic,
    verify_hubspot_v3,
    verify_mautic,
    verify_write_key_bearer,
)
from ingest.writer import TouchpointWriter, Unavailable, WriteResult
from services.config import HandoffConfig, Source
from services.events import Touchpoint, utcnow
from services.http.direct import DirectRoute
from services.http.errors import ORJSONResponse, error_response

RETRY_AFTER_SECONDS = "2"


class Accepted(BaseModel):
    accepted: int
    duplicates: int


class SegmentOk(BaseModel):
    success: bool


class ErrorBody(BaseModel):
    error: dict[str, Any]


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why}
    for code, why in ((400, "body is not JSON"), (401, "bad or missing key/signature"), (404, "unknown source"),
                      (413, "body over 1 MiB (after decompression)"), (415, "unsupported Content-Encoding"),
                      (422, "schema errors, each field named"), (503, "not durable: retry after Retry-After"))
}
_TOUCHPOINT_SCHEMA = TouchpointIn.model_json_schema()
_BATCH_SCHEMA = {"type": "object", "required": ["touchpoints"], "properties": {
    "touchpoints": {"type": "array", "items": _TOUCHPOINT_SCHEMA, "minItems": 1, "maxItems": 500}}}
_ANY_JSON = {"type": "object", "additionalProperties": True}


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def read_raw_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refusing more than ``limit`` bytes as it streams in (no unbounded buffer)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class IngestApi:
    """The endpoints over one config and one writer (built once per process by ``ingest.service``)."""

    def __init__(self, config: HandoffConfig, writer: TouchpointWriter) -> None:
        self.config = config
        self.writer = writer
        self._secrets: dict[str, tuple[tuple[str | None, ...], list[str]]] = {}

    def secrets(self, source: Source) -> list[str]:
        """``source.secrets()``, parsed again only when its environment variables change (a rotation)."""
        raw = tuple(os.environ.get(name) for name in source.secret_env_names())
        cached = self._secrets.get(source.id)
        if cached is not None and cached[0] == raw:
            return cached[1]
        found = source.secrets()
        self._secrets[source.id] = (raw, found)
        return found

    # -- authentication ------------------------------------------------------------------------
    def _bearer_or_signed_source(self, request: Request, body: bytes) -> Source:
        signature = request.headers.get("x-handoff-signature")
        if signature is not None:
            reason = "no generic source is configured"
            for source in self.config.sources:
                if source.kind == "generic":
                    reason = verify_generic(body, signature, self.secrets(source), time.time()) or ""
                    if not reason:
                        return source
            raise Unauthorized(f"signature refused: {reason}")
        header = request.headers.get("authorization")
        for source in self.config.sources:
            if verify_write_key_bearer(header, self.secrets(source)) is None:
                return source
        raise Unauthorized("send 'Authorization: Bearer <source write key>' or an X-Handoff-Signature header")

    def _segment_source(self, request: Request) -> Source:
        header = request.headers.get("authorization")
        reason = "no segment source is configured"
        for source in self.config.sources:
            if source.kind == "segment":
                reason = verify_basic_write_key(header, self.secrets(source)) or ""
                if not reason:
                    return source
        raise Unauthorized(reason)

    def _webhook_source(self, request: Request, source_id: str, body: bytes) -> Source:
        source = self.config.source(source_id)
        if source is None:
            raise UnknownSource(f"no source {source_id!r} in the config; configured: "
                                f"{', '.join(s.id for s in self.config.sources) or 'none'}")
        secrets = self.secrets(source)
        now = time.time()
        headers = request.headers
        if source.kind == "generic":
            reason = verify_generic(body, headers.get("x-handoff-signature"), secrets, now)
        elif source.kind == "hubspot":
            reason = verify_hubspot_v3(request.method, str(request.url), body,
                                       headers.get("x-hubspot-signature-v3"),
                                       headers.get("x-hubspot-request-timestamp"), secrets, now)
        elif source.kind == "mautic":
            reason = verify_mautic(body, headers.get("webhook-signature"), secrets)
        else:
            reason = verify_basic_write_key(headers.get("authorization"), secrets)
        if reason:
            raise Unauthorized(reason)
        return source

    # -- the shared request path ---------------------------------------------------------------
    async def _handle(
        self,
        request: Request,
        endpoint: str,
        authenticate: Callable[[bytes], Source],
        parse: Callable[[Any, Source, datetime], list[Touchpoint]],
        answer: Callable[[WriteResult], Response],
    ) -> Response:
        started = time.perf_counter()
        source_id = "unknown"
        try:
            raw = await read_raw_body(request)
            body = decode_body(raw, request.headers.get("content-encoding"))
            source = authenticate(body)
            source_id = source.id
            payload = parse_json(body)
            refuse_nul(body, payload)
            touchpoints = parse(payload, source, utcnow())
            result = await self.writer.submit(touchpoints)
        except IngestError as exc:
            metrics.refused(source_id, exc.code).inc()
            return error_response(exc.status, exc.code, exc.message, exc.details)
        except Unavailable as exc:
            metrics.refused(source_id, "unavailable").inc()
            return error_response(503, "unavailable", f"the touchpoints are not durable yet: {exc}; retry",
                                  None, {"Retry-After": RETRY_AFTER_SECONDS})
        finally:
            metrics.latency(endpoint).observe(time.perf_counter() - started)
        accepted, duplicates = metrics.outcomes(source_id)
        accepted.inc(result.accepted)
        if result.duplicates:
            duplicates.inc(result.duplicates)
        return answer(result)

    def router(self) -> APIRouter:
        router = APIRouter(tags=["ingest"])

        def accepted(result: WriteResult) -> Response:
            return ORJSONResponse({"accepted": result.accepted, "duplicates": result.duplicates}, status_code=202)

        def segment_ok(_result: WriteResult) -> Response:
            return ORJSONResponse({"success": True}, status_code=200)

        def touchpoint_route(path: str, batch: bool) -> None:
            async def endpoint(request: Request) -> Response:
                return await self._handle(
                    request, path, lambda body: self._bearer_or_signed_source(request, body),
                    lambda payload, source, now: to_touchpoints(payload, source.id, now, batch), accepted)

            router.add_api_route(
                path, endpoint, methods=["POST"], status_code=202, response_model=Accepted,
                responses=_ERRORS, openapi_extra=_body_doc(_BATCH_SCHEMA if batch else _TOUCHPOINT_SCHEMA),
                summary="Send a batch of touchpoints (at most 500)" if batch else "Send one touchpoint",
                operation_id="post_touchpoints_batch" if batch else "post_touchpoint",
                route_class_override=DirectRoute)

        touchpoint_route("/v1/touchpoints", batch=False)
        touchpoint_route("/v1/touchpoints/batch", batch=True)

        for call in ("track", "identify", "page", "alias", "batch"):
            def segment_route(call: str) -> Callable[[Request], Awaitable[Response]]:
                async def endpoint(request: Request) -> Response:
                    return await self._handle(
                        request, f"/v1/{call}", lambda _body: self._segment_source(request),
                        lambda payload, source, now: segment.parse(payload, source.id, now, kind=call),
                        segment_ok)
                return endpoint

            router.add_api_route(f"/v1/{call}", segment_route(call), methods=["POST"], response_model=SegmentOk,
                                 responses=_ERRORS, openapi_extra=_body_doc(_ANY_JSON),
                                 summary=f"Segment HTTP Tracking API: {call}", operation_id=f"segment_{call}",
                                 route_class_override=DirectRoute)

        async def webhook(request: Request, source_id: str) -> Response:
            def parse(payload: Any, source: Source, now: datetime) -> list[Touchpoint]:
                return adapter_for(source.kind)(payload, source.id, now)

            return await self._handle(request, "/webhooks/{source_id}",
                                      lambda body: self._webhook_source(request, source_id, body), parse, accepted)

        router.add_api_route("/webhooks/{source_id}", webhook, methods=["POST"], status_code=202,
                             response_model=Accepted, responses=_ERRORS, openapi_extra=_body_doc(_ANY_JSON),
                             summary="A source's native webhook (generic, hubspot, mautic)",
                             operation_id="post_webhook")
        return router
