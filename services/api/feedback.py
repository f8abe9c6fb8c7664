"""Sales' feedback: ``POST /v1/leads/{lead_id}/feedback`` (bearer token) and the CRM's signed callback.

::

    POST /v1/leads/3f2a.../feedback   {"type": "contacted", "rep_id": "anna"}
        -> 202 {"lead_id": "3f2a...", "stage": "contacted"}
    POST /v1/leads/3f2a.../feedback   {"type": "rejected", "rep_id": "anna", "reason": "no budget"}
        -> 202 {"lead_id": "3f2a...", "stage": "recycled"}
    POST /webhooks/crm/webhook        X-Handoff-Signature: t=...,v1=...
        {"email": "jane@acme.com", "type": "contacted", "rep_id": "anna", "at": "2026-11-22T10:05:00Z"}
        or {"events": [{...}, {...}]}  -> 202 {"applied": 2, "failed": 0, "results": [...]}

The CRM callback is signed like the ``generic`` source (:mod:`services.signing`) with the secret(s)
in the environment variable named by ``crm.secret_env`` (comma-separated for rotation); its channel
is ``crm:<kind>``. The effects are :func:`services.feedback.apply_feedback`'s, one transaction each.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.config import Crm
from services.feedback import FeedbackError, FeedbackResult, apply_feedback, record_feedback
from services.http.auth import RequireToken
from services.http.deps import ContainerDep
from services.http.errors import ApiError
from services.http.links import FEEDBACK_LINKS, ok_links
from services.leads import find_lead_ids
from services.runtime import Container
from services.signing import SIGNATURE_HEADER, verify

__all__ = ["apply_feedback", "build_router", "read_body"]

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 500
Kind = Literal["accepted", "contacted", "rejected", "won", "lost"]


class FeedbackIn(BaseModel):
    """The body of ``POST /v1/leads/{lead_id}/feedback``."""

    model_config = ConfigDict(extra="ignore")

    type: Kind = Field(description="accepted | contacted | rejected | won | lost")
    rep_id: str | None = Field(default=None, max_length=100, description="who says so (default: the owner)")
    reason: str | None = Field(default=None, description="why; required for rejected")
    at: datetime | None = Field(default=None, description="when it happened (default: now)")


class CrmFeedbackIn(FeedbackIn):
    """One CRM callback event: :class:`FeedbackIn` plus the lead, by id or by email."""

    lead_id: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=320)

    @model_validator(mode="after")
    def _needs_lead(self) -> CrmFeedbackIn:
        if not (self.lead_id and self.lead_id.strip()) and not (self.email and self.email.strip()):
            raise ValueError("give the lead as 'lead_id' or 'email'")
        return self


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` bytes (before it is all read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_body", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_body", "the body must be a JSON object")
    return body


def _api_error(exc: FeedbackError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, exc.details)


def crm_secrets(crm: Crm, environ: dict[str, str] | None = None) -> list[str]:
    """The callback signing secrets: the comma-separated values of the ``crm.secret_env`` variable."""
    env = os.environ if environ is None else environ
    if not crm.secret_env:
        return []
    return [part.strip() for part in env.get(crm.secret_env, "").split(",") if part.strip()]


def parse_crm_events(body: dict[str, Any]) -> list[CrmFeedbackIn]:
    """One event or ``{"events": [...]}``; 422 naming every bad field (``events.3.type``)."""
    batch = "events" in body
    raw_events = body["events"] if batch else [body]
    if not isinstance(raw_events, list) or not raw_events:
        raise ApiError(422, "invalid_payload", "invalid fields: events",
                       [{"field": "events", "message": "a non-empty list of feedback events"}])
    if len(raw_events) > MAX_EVENTS:
        raise ApiError(422, "invalid_payload", "invalid fields: events",
                       [{"field": "events", "message": f"at most {MAX_EVENTS} events per call"}])
    events: list[CrmFeedbackIn] = []
    details: list[dict[str, str]] = []
    for index, raw in enumerate(raw_events):
        prefix = f"events.{index}." if batch else ""
        try:
            events.append(CrmFeedbackIn.model_validate(raw))
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err.get("loc", ()))
                details.append({"field": (prefix + field).rstrip(".") or "body",
                                "message": str(err.get("msg", "invalid")).removeprefix("Value error, ")})
    if details:
        fields = ", ".join(dict.fromkeys(d["field"] for d in details))
        raise ApiError(422, "invalid_payload", f"invalid fields: {fields}", details)
    return events


async def _apply_crm_event(container: Container, event: CrmFeedbackIn, channel: str) -> FeedbackResult:
    async with container.db.transaction() as conn:
        lead_id = event.lead_id.strip() if event.lead_id and event.lead_id.strip() else None
        if lead_id is None:
            found = await find_lead_ids(conn, email=event.email)
            if not found:
                raise FeedbackError(404, "lead_not_found", f"no lead has the email {event.email!r}; "
                                    "send the lead_id from the CRM push instead")
            lead_id = found[0]
        return await record_feedback(conn, lead_id, event.type, event.rep_id, event.reason, event.at, channel)


def build_router() -> APIRouter:
    router = APIRouter(tags=["feedback"])

    @router.post(
        "/v1/leads/{lead_id}/feedback", status_code=202, dependencies=[RequireToken], response_model=None,
        summary="Sales' word on a lead: contacted, accepted, rejected (with reason), won, lost",
        responses={**ok_links(202, "The feedback is recorded; the lead's stage", FEEDBACK_LINKS),
                   404: {"description": "unknown lead"}, 409: {"description": "illegal for the lead's stage"}},
    )
    async def post_feedback(
        lead_id: str, body: Annotated[FeedbackIn, Body()], container: ContainerDep
    ) -> dict[str, Any]:
        try:
            async with container.db.transaction() as conn:
                result = await record_feedback(conn, lead_id, body.type, body.rep_id, body.reason, body.at,
                                               "api")
        except FeedbackError as exc:
            raise _api_error(exc) from None
        return {"lead_id": result.lead_id, "stage": result.stage}

    @router.post(
        "/webhooks/crm/{crm}", status_code=202, response_model=None,
        summary="The CRM's signed callback carrying sales' feedback",
        responses={401: {"description": "bad or missing signature"}, 404: {"description": "unknown CRM"}},
    )
    async def crm_callback(crm: str, request: Request, container: ContainerDep) -> dict[str, Any]:
        config = container.config.crm
        if config is None or crm != config.kind:
            hint = f"this service takes POST /webhooks/crm/{config.kind}" if config else "no crm configured"
            raise ApiError(404, "unknown_crm", f"no CRM callback {crm!r}; {hint}")
        secrets = crm_secrets(config)
        if not secrets:
            where = f"the environment variable {config.secret_env}" if config.secret_env else "crm.secret_env"
            raise ApiError(401, "unauthorized", f"CRM callbacks are refused: no signing secret in {where}")
        raw = await read_body(request)
        problem = verify(raw, request.headers.get(SIGNATURE_HEADER), secrets, now=time.time())
        if problem is not None:
            raise ApiError(401, "bad_signature", problem)
        body = parse_json_object(raw)
        events = parse_crm_events(body)
        channel = f"crm:{config.kind}"
        if "events" not in body:
            try:
                result = await _apply_crm_event(container, events[0], channel)
            except FeedbackError as exc:
                raise _api_error(exc) from None
            return {"lead_id": result.lead_id, "stage": result.stage}
        # A batch: each event stands alone, so one unknown lead does not block the others (a CRM
        # retrying the whole batch is harmless: repeats are no-ops).
        results: list[dict[str, Any]] = []
        for index, event in enumerate(events):
            try:
                done = await _apply_crm_event(container, event, channel)
                results.append({"index": index, "lead_id": done.lead_id, "stage": done.stage})
            except FeedbackError as exc:
                results.append({"index": index, "error": {"code": exc.code, "message": exc.message,
                                                          "status": exc.status}})
        failed = sum(1 for r in results if "error" in r)
        return {"applied": len(results) - failed, "failed": failed, "results": results}

    return router
