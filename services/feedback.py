"""Sales' word on a lead (API or CRM callback): stage, history, SLA clock and an event, in one transaction.

::

    async with db.transaction() as conn:
        stage = await apply_feedback(conn, config, lead_id, "contacted", "anna", None, at, "api")

What each type does (contract section 3, stages in section 4):

============  =================  ===============================================================
type          new stage          also
============  =================  ===============================================================
contacted     contacted          first ``contacted_at``; stops the SLA clock
accepted      opportunity        stops the clock (a rep who accepts has made contact)
rejected      recycled           needs a reason; stops the clock; ends the current assignment
won / lost    won / lost         stops the clock if it still runs
============  =================  ===============================================================

Stopping the clock: ``lead_sla.state`` becomes ``met`` when the contact (``at``) came by ``due_at``,
else ``breached``; pending ``sla_timers`` of the lead are cancelled. Feedback never moves a lead
backwards: a late ``contacted`` on an opportunity is recorded without a stage change (CRM callbacks
arrive out of order), and the same type twice keeps the first stage time (no second history row,
no second feedback row). Contradictions (won before the lead reached a rep, rejected after won, ...)
raise :class:`FeedbackError` with status 409 and say why. :func:`decide` holds the rules, pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.config import HandoffConfig
from services.db.dialect import lock
from services.db.models import assignments, feedback, lead_sla, leads, sla_timers
from services.events import LEAD_EVENTS, LEAD_FEEDBACK, Event, LeadFeedback, utcnow
from services.lead_store import record_stage
from services.leads import resolve_row
from services.outbox import add_events

FeedbackType = Literal["accepted", "contacted", "rejected", "won", "lost"]
FEEDBACK_TYPES: tuple[str, ...] = ("accepted", "contacted", "rejected", "won", "lost")
TARGET_STAGE = {"contacted": "contacted", "accepted": "opportunity", "rejected": "recycled",
                "won": "won", "lost": "lost"}
# Stages where a rep holds the lead; feedback is only meaningful from ``sql`` on.
HANDED = ("sql", "contacted", "opportunity")
CLOSED = ("won", "lost")
# Feedback types that mean the rep has reached the buyer (set contacted_at the first time).
CONTACT_TYPES = ("contacted", "accepted", "won", "lost")
# A client clock may run a little ahead; more than this in the future is a mistake worth refusing.
FUTURE_SKEW = timedelta(minutes=5)
MAX_REASON = 2000


class FeedbackError(Exception):
    """Refused feedback: ``status`` 404 (unknown lead), 409 (illegal for the lead's stage), 422 (input)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Decision:
    stage: str  # the lead's stage after the feedback
    changed: bool  # False: recorded, the stage stays (duplicate or late news)


def decide(stage: str, type_: str) -> Decision:
    """The stage after feedback ``type_`` on a lead in ``stage``; ``FeedbackError(409)`` if illegal. Pure."""
    if type_ not in TARGET_STAGE:
        raise FeedbackError(422, "invalid_payload", f"unknown feedback type {type_!r}; use one of "
                            f"{', '.join(FEEDBACK_TYPES)}", [{"field": "type", "message": "unknown type"}])
    target = TARGET_STAGE[type_]
    if stage == target:
        return Decision(stage, False)  # the same news twice: the first stage time stands
    if stage == "recycled":
        raise FeedbackError(409, "illegal_transition",
                            f"the lead was rejected and recycled to nurture, so '{type_}' does not apply; "
                            "it returns to sales when it qualifies again and is assigned")
    if stage not in HANDED and stage not in CLOSED:
        raise FeedbackError(409, "illegal_transition",
                            f"the lead is at stage '{stage}' and was never assigned to a rep (feedback "
                            "applies from stage 'sql' on, once the router has handed it to sales)")
    if stage in CLOSED:
        if type_ in ("contacted", "accepted"):
            return Decision(stage, False)  # late news about a closed lead: recorded, stage kept
        raise FeedbackError(409, "illegal_transition",
                            f"the lead is already closed as '{stage}'; '{type_}' cannot follow it")
    if stage == "opportunity" and type_ == "rejected":
        raise FeedbackError(409, "illegal_transition",
                            "the lead was accepted as an opportunity; close it with 'lost' instead of "
                            "'rejected'")
    if stage == "opportunity" and type_ == "contacted":
        return Decision(stage, False)  # late news: contact happened before the acceptance
    return Decision(target, True)


def check_input(type_: str, reason: str | None, at: datetime, now: datetime) -> None:
    """Input rules the body schema cannot express; ``FeedbackError(422)`` naming the field."""
    if type_ not in TARGET_STAGE:
        decide("sql", type_)  # raises the 422 that lists the types
    if type_ == "rejected" and not (reason and reason.strip()):
        raise FeedbackError(422, "invalid_payload", "invalid fields: reason",
                            [{"field": "reason", "message": "a rejection needs a reason (e.g. 'no "
                              "budget'), so marketing learns why leads are sent back"}])
    if reason is not None and len(reason) > MAX_REASON:
        raise FeedbackError(422, "invalid_payload", "invalid fields: reason",
                            [{"field": "reason", "message": f"at most {MAX_REASON} characters"}])
    if at > now + FUTURE_SKEW:
        raise FeedbackError(422, "invalid_payload", "invalid fields: at",
                            [{"field": "at", "message": f"{at.isoformat()} is in the future; send when it "
                              "happened, or leave 'at' out to mean now"}])


def cause_text(type_: str, rep_id: str | None, reason: str | None, channel: str) -> str:
    """``feedback: rejected by anna (no budget)``, with ``via crm:hubspot`` for CRM callbacks."""
    text = f"feedback: {type_} by {rep_id or 'an unnamed rep'}"
    if reason and reason.strip():
        text += f" ({reason.strip()})"
    if channel != "api":
        text += f" via {channel}"
    return text


def as_utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


async def _stop_clock(conn: AsyncConnection, lead_id: str, at: datetime, now: datetime) -> None:
    """Stop a running SLA clock: met if contact came by the due time, else breached; cancel timers."""
    query = lock(conn, select(lead_sla).where(lead_sla.c.lead_id == lead_id))
    row = (await conn.execute(query)).mappings().first()
    if row is not None and row["stopped_at"] is None and row["state"] in ("running", "breached"):
        met = at <= row["due_at"]
        values: dict[str, Any] = {"state": "met" if met else "breached", "stopped_at": now}
        if not met and row["breached_at"] is None:
            values["breached_at"] = row["due_at"]
        await conn.execute(update(lead_sla).where(lead_sla.c.lead_id == lead_id).values(**values))
    await conn.execute(
        update(sla_timers).where(sla_timers.c.lead_id == lead_id, sla_timers.c.status == "pending")
        .values(status="cancelled")
    )


@dataclass(frozen=True)
class FeedbackResult:
    lead_id: str  # the lead the feedback landed on (the survivor, when the given id was merged away)
    stage: str
    recorded: bool  # False: an exact repeat, nothing written


async def apply_feedback(
    conn: AsyncConnection,
    config: HandoffConfig,
    lead_id: str,
    type: str,
    rep_id: str | None,
    reason: str | None,
    at: datetime | None,
    channel: str,
    *,
    now: datetime | None = None,
) -> str:
    """Apply one piece of feedback inside the caller's transaction; the lead's stage afterwards.

    ``at`` is when it happened (None: now); ``channel`` is ``api`` or ``crm:<kind>``; ``rep_id``
    defaults to the lead's owner. Raises :class:`FeedbackError` (404 unknown lead, 409 illegal for its
    stage, 422 bad input) before writing anything. ``config`` is not read today (the rules need none);
    it keeps the callers stable when a rule comes to depend on it.
    """
    result = await record_feedback(conn, lead_id, type, rep_id, reason, at, channel, now=now)
    return result.stage


async def record_feedback(
    conn: AsyncConnection,
    lead_id: str,
    type: str,
    rep_id: str | None,
    reason: str | None,
    at: datetime | None,
    channel: str,
    *,
    now: datetime | None = None,
) -> FeedbackResult:
    """:func:`apply_feedback`, answering which lead it landed on and whether anything was written."""
    now = as_utc(now) if now is not None else utcnow()
    at = as_utc(at) if at is not None else now
    check_input(type, reason, at, now)
    reason = reason.strip() if reason and reason.strip() else None
    row = await resolve_row(conn, lead_id, for_update=True)
    if row is None:
        raise FeedbackError(404, "lead_not_found", f"no lead with id {lead_id!r}; find a lead's id with "
                            "GET /v1/leads?email=<address>")
    lead = row["id"]
    rep = rep_id.strip() if rep_id and rep_id.strip() else row["owner"]
    decision = decide(row["stage"], type)

    if not decision.changed:
        since = row["assigned_at"] or row["created_at"]
        duplicate = (await conn.execute(
            select(feedback.c.id).where(feedback.c.lead_id == lead, feedback.c.type == type,
                                        feedback.c.at >= since).limit(1)
        )).first()
        if duplicate is not None:
            # A redelivered callback or a double click: nothing new to record.
            return FeedbackResult(lead, str(row["stage"]), False)

    # The stage time never goes back before the previous change (a back-dated report would make a
    # negative time-in-stage); the feedback row keeps the time as reported.
    stage_at = max(at, row["stage_changed_at"])
    values: dict[str, Any] = {"updated_at": now, "version": row["version"] + 1}
    if type in CONTACT_TYPES and row["contacted_at"] is None:
        values["contacted_at"] = stage_at
    if decision.changed:
        await record_stage(conn, lead, row["stage"], decision.stage, at=stage_at,
                           cause=cause_text(type, rep, reason, channel), **values)
    else:
        await conn.execute(update(leads).where(leads.c.id == lead).values(**values))

    await _stop_clock(conn, lead, at, now)
    if type == "rejected":
        await conn.execute(
            update(assignments).where(assignments.c.lead_id == lead, assignments.c.ended_at.is_(None))
            .values(ended_at=now, end_reason=cause_text(type, rep, reason, channel))
        )
    await conn.execute(feedback.insert().values(lead_id=lead, type=type, rep_id=rep, reason=reason, at=at,
                                                channel=channel))
    data = LeadFeedback(lead_id=lead, type=type, rep_id=rep, reason=reason, at=at).model_dump(mode="json")
    data.update(stage=decision.stage, previous_stage=row["stage"], channel=channel)
    source = "api/feedback" if channel == "api" else channel.replace(":", "/", 1)
    event = Event.new(LEAD_FEEDBACK, source=source, key=lead, data=data, time=now)
    await add_events(conn, LEAD_EVENTS, [event])
    return FeedbackResult(lead, decision.stage, True)
