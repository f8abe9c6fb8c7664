"""The senders against a real HTTP server on loopback: failures, timeouts, rate limits, recovery."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from notifier.alerts import alert_requests, breach, resolved, send_alert
from notifier.crm import OutboundRequest, SendResult, build_crm_requests, send_sequence
from notifier.retry import Outcome, RetryPolicy, classify, decide
from services.config import Alerts, Crm, Rep
from services.signing import verify
from tests.support.receiver import Received, Receiver, Reply

from .samples import ASSIGNMENT_ID, ENV, SECRET, TOKEN, crm, lead

START = datetime(2026, 11, 22, 10, 0, 1, tzinfo=UTC)
TIMEOUT = 0.3  # seconds; the stalling receiver never answers, so each timeout costs this much


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


async def push_until_settled(
    client: httpx.AsyncClient, config: Crm, policy: RetryPolicy
) -> list[tuple[SendResult, Outcome, datetime]]:
    """What the delivery worker does, minus the database: build afresh, send, decide, 'wait', repeat."""
    now, history = START, []
    for attempt in range(1, policy.max_attempts + 1):
        requests = build_crm_requests(config, lead(), ASSIGNMENT_ID, environ=ENV, timestamp=int(now.timestamp()))
        result = await send_sequence(client, requests, timeout=TIMEOUT)
        outcome = decide(policy, attempt, result.status, result.error, result.retry_after, now, jitter=0.5)
        history.append((result, outcome, now))
        if outcome.retry_at is None:
            break
        now = outcome.retry_at  # the worker would claim the row again at this time
    return history


async def test_webhook_survives_errors_rate_limits_timeouts_and_resets_then_delivers_once(
    client: httpx.AsyncClient,
) -> None:
    async with Receiver() as receiver:
        receiver.script(
            Reply(500, b'{"error": "boom"}'),
            Reply(429, headers={"Retry-After": "7"}),
            Reply(stall=True),
            Reply(drop=True),
            Reply(503, headers={"Retry-After": "Sun, 22 Nov 2026 11:00:00 GMT"}),
            Reply(200, b'{"ok": true}'),
        )
        history = await push_until_settled(client, crm("webhook", receiver.url("/leads")), RetryPolicy())
        arrived = receiver.requests

    verdicts = [outcome.verdict for _, outcome, _ in history]
    assert verdicts == ["retry"] * 5 + ["delivered"]
    results = [result for result, _, _ in history]
    assert [r.status for r in results] == [500, 429, None, None, 503, 200]
    assert results[0].error == '{"error": "boom"}'
    assert results[2].error is not None and results[2].error.startswith("timeout:")
    assert results[3].error is not None and results[3].error.startswith(("protocol:", "connection:"))
    # 429 with Retry-After 7 s: the next attempt waits at least that long, though the backoff says 1.5 s.
    (_, limited, at429), (_, _, next_at) = history[1], history[2]
    assert next_at - at429 >= timedelta(seconds=7) and limited.retry_at == next_at
    # HTTP-date Retry-After on the 503: honoured too (clamped at an hour).
    _, outcome503, at503 = history[4]
    assert outcome503.retry_at == datetime(2026, 11, 22, 11, tzinfo=UTC)
    assert outcome503.retry_at - at503 > timedelta(minutes=30)  # far beyond the backoff: the date won

    # Every attempt reached the receiver, with one key, a fresh valid signature and the same lead.
    assert len(arrived) == 6
    assert {r.headers["idempotency-key"] for r in arrived} == {f"lead-42:{ASSIGNMENT_ID}"}
    for request, (_, _, sent_at) in zip(arrived, history, strict=True):
        assert (request.method, request.path) == ("POST", "/leads")
        assert verify(request.body, request.headers["x-handoff-signature"], [SECRET], now=sent_at.timestamp()) is None
        assert request.json()["lead"]["id"] == "lead-42"
        assert request.json()["assignment"]["assignment_id"] == ASSIGNMENT_ID
    assert len({orjson.dumps(r.json(), option=orjson.OPT_SORT_KEYS) for r in arrived}) == 1


async def test_webhook_4xx_goes_straight_to_the_dead_letters(client: httpx.AsyncClient) -> None:
    async with Receiver() as receiver:
        receiver.script(Reply(422, b'{"error": "unknown field"}'))
        history = await push_until_settled(client, crm("webhook", receiver.url("/leads")), RetryPolicy())
        assert len(receiver.requests) == 1
    [(result, outcome, _)] = history
    assert outcome.verdict == "dead" and "422" in outcome.reason and "unknown field" in outcome.reason
    assert result.completed == 0 and result.total == 1


async def test_retries_stop_after_max_attempts(client: httpx.AsyncClient) -> None:
    async with Receiver(lambda _r: Reply(502)) as receiver:
        history = await push_until_settled(client, crm("webhook", receiver.url("/")), RetryPolicy(max_attempts=3))
        assert len(receiver.requests) == 3
    assert [o.verdict for _, o, _ in history] == ["retry", "retry", "dead"]
    assert "gave up after 3 attempt(s)" in history[-1][1].reason


async def test_connection_refused_is_retried(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on ``port`` any more.
    requests = build_crm_requests(crm("webhook", f"http://127.0.0.1:{port}/"), lead(), "a", environ=ENV, timestamp=1)
    result = await send_sequence(client, requests, timeout=TIMEOUT)
    assert result.status is None and result.error is not None and result.error.startswith("connection:")
    assert classify(result.status, result.error) == "retry"


async def test_a_request_that_can_never_be_sent_is_dead(client: httpx.AsyncClient) -> None:
    result = await send_sequence(client, [OutboundRequest("POST", "ftp://127.0.0.1/x", {})], timeout=TIMEOUT)
    assert result.error is not None and result.error.startswith("permanent:")
    assert classify(result.status, result.error) == "dead"


def hubspot_api(request: Received) -> Reply:
    if request.path == "/crm/v3/objects/contacts/batch/upsert":
        email = request.json()["inputs"][0]["id"]
        answer = {"status": "COMPLETE", "results": [{"id": "901", "properties": {"email": email}}]}
        return Reply(200, orjson.dumps(answer))
    if request.path == "/crm/v3/objects/notes":
        return Reply(201, b'{"id": "5001"}')
    return Reply(404, b'{"message": "no such endpoint"}')


async def test_hubspot_contact_then_note_with_the_contact_id(client: httpx.AsyncClient) -> None:
    async with Receiver(hubspot_api) as receiver:
        requests = build_crm_requests(crm("hubspot", receiver.url()), lead(), ASSIGNMENT_ID, environ=ENV, timestamp=1)
        result = await send_sequence(client, requests, timeout=TIMEOUT)
        contact, note = receiver.requests
    assert result.ok and result.status == 201 and [a.step for a in result.answers] == ["contact", "note"]
    assert contact.path == "/crm/v3/objects/contacts/batch/upsert"
    assert contact.headers["authorization"] == f"Bearer {TOKEN}"
    assert contact.json()["inputs"][0]["idProperty"] == "email"
    assert note.headers["idempotency-key"] == f"lead-42:{ASSIGNMENT_ID}:note"
    assert note.json()["associations"][0]["to"]["id"] == "901"
    assert "jane.doe@acme.com" in note.json()["properties"]["hs_note_body"]


async def test_hubspot_failure_in_the_first_step_stops_the_sequence(client: httpx.AsyncClient) -> None:
    async with Receiver(hubspot_api) as receiver:
        receiver.script(Reply(503, headers={"Retry-After": "3"}))
        requests = build_crm_requests(crm("hubspot", receiver.url()), lead(), "a", environ=ENV, timestamp=1)
        result = await send_sequence(client, requests, timeout=TIMEOUT)
        assert len(receiver.requests) == 1  # the note never goes out before its contact
    assert (result.status, result.retry_after, result.completed, result.total) == (503, "3", 0, 2)
    assert classify(result.status, result.error) == "retry"


async def test_hubspot_answer_without_an_id_is_a_retryable_protocol_error(client: httpx.AsyncClient) -> None:
    async with Receiver(hubspot_api) as receiver:
        receiver.script(Reply(200, b'{"status": "PENDING", "results": []}'))
        requests = build_crm_requests(crm("hubspot", receiver.url()), lead(), "a", environ=ENV, timestamp=1)
        result = await send_sequence(client, requests, timeout=TIMEOUT)
        assert len(receiver.requests) == 1
    assert result.completed == 1 and result.status is None
    assert result.error == "protocol: step 'note' needs results.0.id from an earlier answer, which lacks it"
    assert classify(result.status, result.error) == "retry"


async def test_salesforce_upsert_then_task_for_the_lead(client: httpx.AsyncClient) -> None:
    def salesforce_api(request: Received) -> Reply:
        if request.method == "PATCH":
            return Reply(201, b'{"id": "00Q5e00000AbCdE", "success": true, "errors": [], "created": true}')
        return Reply(201, b'{"id": "00T5e00000XyZ", "success": true, "errors": []}')

    async with Receiver(salesforce_api) as receiver:
        receiver.script(Reply(stall=True))  # the first try times out
        config = crm("salesforce", receiver.url())
        first = await send_sequence(
            client, build_crm_requests(config, lead(), ASSIGNMENT_ID, environ=ENV, timestamp=1), timeout=TIMEOUT
        )
        second = await send_sequence(
            client, build_crm_requests(config, lead(), ASSIGNMENT_ID, environ=ENV, timestamp=2), timeout=TIMEOUT
        )
        arrived = receiver.requests
    assert classify(first.status, first.error) == "retry" and first.error and first.error.startswith("timeout:")
    assert second.ok
    assert [(r.method, r.path) for r in arrived] == [
        ("PATCH", "/services/data/v60.0/sobjects/Lead/Handoff_Lead_Id__c/lead-42"),
        ("PATCH", "/services/data/v60.0/sobjects/Lead/Handoff_Lead_Id__c/lead-42"),
        ("POST", "/services/data/v60.0/sobjects/Task"),
    ]
    assert arrived[0].headers["idempotency-key"] == arrived[1].headers["idempotency-key"]
    assert arrived[2].json()["WhoId"] == "00Q5e00000AbCdE"
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in arrived)


async def test_alerts_reach_each_sink(client: httpx.AsyncClient) -> None:
    anna = Rep(id="anna", timezone="Europe/Berlin", manager="maria")
    due = datetime(2026, 11, 22, 14, tzinfo=UTC)
    async with Receiver() as receiver:
        sinks = Alerts.model_validate({
            "webhook": {"url": receiver.url("/alerts")},
            "pagerduty": {"url": receiver.url("/v2/enqueue"), "routing_key_env": "PD_ROUTING_KEY"},
            "slack": {"url": receiver.url("/slack")},
        })
        receiver.script(Reply(429, headers={"Retry-After": "2"}))  # PagerDuty-style throttle on the first call
        outbound = []
        for alert in (
            breach(id="t1", action="alert_manager", lead_id="L1", rep=anna, due_at=due, at=due),
            breach(id="t2", action="page_oncall", lead_id="L1", rep=anna, due_at=due, at=due),
            resolved(id="t3", lead_id="L1", rep_id="anna", due_at=due, at=due),
        ):
            requests, problems = alert_requests(sinks, alert, ENV)
            assert problems == []
            outbound += requests
        results = [await send_alert(client, request, timeout=TIMEOUT) for request in outbound]
        arrived = receiver.requests
    assert [r.status for r in results] == [429, 200, 200, 200, 200, 200]
    assert results[0].retry_after == "2"
    assert [r.path for r in arrived] == ["/alerts", "/slack", "/alerts", "/v2/enqueue", "/alerts", "/v2/enqueue"]
    manager = arrived[1].json()
    assert manager["text"].startswith("@maria") and manager["blocks"]
    trigger, resolve = arrived[3].json(), arrived[5].json()
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == "handoff-lead-L1"
    assert trigger["routing_key"] == "pd-routing-key" and trigger["payload"]["severity"] == "critical"
    assert arrived[2].json()["kind"] == "sla_breach" and arrived[2].json()["action"] == "page_oncall"
    assert arrived[3].headers["idempotency-key"] == "alert:t2:pagerduty"
