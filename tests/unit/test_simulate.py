"""``handoff simulate``: the journey generator (pure, seeded) and the sender against a fake service."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.adapters import segment
from ingest.schemas import to_touchpoints
from services.settings import Settings
from services.simulate import (
    BATCH,
    FREE_MAIL,
    PATHS,
    QUALIFYING,
    STUDENT,
    Journey,
    SimulationError,
    Simulator,
    Target,
    fit_points,
    journeys,
    resolve_target,
    simulate_command,
)
from tests.support.infra import free_port

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def bodies(journey: Journey) -> list[dict[str, Any]]:
    return [dict(step.body) for step in journey.steps]


def test_same_seed_same_journeys_other_seed_others() -> None:
    assert journeys(60, 7, NOW) == journeys(60, 7, NOW)
    assert journeys(60, 7, NOW) != journeys(60, 8, NOW)
    assert journeys(30, 7, NOW) == journeys(60, 7, NOW)[:30]  # a prefix: more leads, same first ones


def test_a_realistic_mix_of_paths_channels_and_outcomes() -> None:
    plan = journeys(400, 1, NOW)
    paths = Counter(j.path for j in plan)
    assert set(paths) == set(PATHS)
    assert paths["demo-request"] > paths["competitor"]  # weighted, not uniform
    endpoints = Counter(step.endpoint for j in plan for step in j.steps)
    assert set(endpoints) == {BATCH, "/v1/page", "/v1/identify", "/v1/track"}
    assert {j.channel for j in plan} == {"website", "segment"}
    assert len({j.campaign for j in plan}) >= 5 and None in {j.campaign for j in plan}
    countries = Counter(j.persona.country for j in plan)
    assert countries["DE"] and countries["US"]  # EMEA and default routing
    assert any(j.persona.senior for j in plan) and any(not j.persona.senior for j in plan)
    domains = {j.email.split("@")[1] for j in plan if j.email}
    assert domains & set(FREE_MAIL) and "competitor.com" in domains and len(domains - set(FREE_MAIL)) > 20
    kinds = Counter(item.type for j in plan for item in j.feedback)
    assert set(kinds) == {"contacted", "accepted", "rejected", "won", "lost"}
    reasons = {item.reason for j in plan for item in j.feedback if item.type == "rejected"}
    assert {"budget", "no authority", "bad timing"} <= reasons
    assert any(j.expect_sql and not j.feedback for j in plan)  # some are left waiting for a call
    assert any(step.resend for j in plan for step in j.steps)  # a few redeliveries (dedupe)
    types = {step.body.get("type") for j in plan for step in j.steps if step.endpoint == BATCH}
    assert {"page_view", "form_submit", "webinar_attended", "email_unsubscribe"} <= types


def test_identities_per_path() -> None:
    plan = journeys(300, 2, NOW)
    emails = [j.email for j in plan if j.email]
    assert len(emails) == len(set(emails))
    for j in plan:
        if j.path == "anonymous-only":
            assert j.email is None and not j.expect_sql
            for body in bodies(j):
                assert "email" not in body and "userId" not in body
                assert j.anonymous_id in (body.get("anonymous_id"), body.get("anonymousId"))
        if j.path == "browse-then-identify":
            first, *_ = bodies(j)
            assert j.channel == "segment" and first["anonymousId"] == j.anonymous_id and "userId" not in first
            identify = next(b for s, b in zip(j.steps, bodies(j), strict=True) if s.endpoint == "/v1/identify")
            assert identify["traits"]["email"] == j.email and identify["anonymousId"] == j.anonymous_id
            assert identify["userId"]
        if j.path == "competitor":
            assert j.email and j.email.endswith("@competitor.com") and not j.expect_sql
        if j.path == "student":
            assert j.persona.title in STUDENT and j.email and j.email.split("@")[1] in FREE_MAIL
        domain = j.email.split("@")[1] if j.email else ""
        assert j.expect_sql == (j.path in QUALIFYING and j.email is not None and fit_points(j.persona, domain) >= 10)
        if not j.expect_sql:
            assert j.feedback == ()


def test_fit_points_follow_the_example_rules() -> None:
    plan = journeys(200, 4, NOW)
    senior_corporate = next(j for j in plan if j.persona.senior and j.persona.employees >= 50)
    assert fit_points(senior_corporate.persona, "acme.com") == 30
    assert fit_points(senior_corporate.persona, "gmail.com") == 15
    student = next(j for j in plan if j.path == "student")
    assert fit_points(student.persona, "gmail.com") < 0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=1, max_value=40), seed=st.integers(min_value=0, max_value=2**32))
def test_every_message_is_valid_for_ingest_and_in_the_past_month(n: int, seed: int) -> None:
    ids: dict[str, Any] = {}
    for j in journeys(n, seed, NOW):
        times = [step.at for step in j.steps if not step.resend]  # a redelivery repeats an earlier time
        assert times == sorted(times)
        assert NOW - timedelta(days=30, hours=1) <= times[0] and times[-1] < NOW
        for step in j.steps:
            body = dict(step.body)
            event_id = body.get("event_id") or body.get("messageId")
            assert isinstance(event_id, str), f"a message without an id: {body}"
            if step.resend:
                assert ids[event_id] == body  # a redelivery repeats a message exactly
            else:
                assert event_id not in ids
            ids[event_id] = body
            if step.endpoint == BATCH:
                (tp,) = to_touchpoints({"touchpoints": [body]}, "website", NOW, batch=True)
            else:
                (tp,) = segment.parse(body, "segment", NOW, kind=step.endpoint.rsplit("/", 1)[1])
            assert tp.occurred_at == step.at.replace(microsecond=tp.occurred_at.microsecond)
            assert tp.email == (j.email if tp.email else None)


# ---------------------------------------------------------------------------------------------
# The sender, against a fake service (httpx.MockTransport)
# ---------------------------------------------------------------------------------------------

class FakeService:
    def __init__(self, plan: list[Journey]) -> None:
        self.plan = plan
        self.seen: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.feedback: list[tuple[str, dict[str, Any]]] = []
        self.polls = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests[path if not path.endswith("/feedback") else "feedback"] += 1
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if path == BATCH:
            assert request.headers["authorization"] == "Bearer web-key"
            items = json.loads(request.content)["touchpoints"]
            new = [tp for tp in items if tp["event_id"] not in self.seen]
            self.seen |= {tp["event_id"] for tp in items}
            return httpx.Response(202, json={"accepted": len(new), "duplicates": len(items) - len(new)})
        if path in ("/v1/page", "/v1/identify", "/v1/track"):
            assert request.headers["authorization"] == "Basic " + base64.b64encode(b"seg-key:").decode()
            return httpx.Response(200, json={"success": True})
        assert request.headers["authorization"] == "Bearer api-token"
        if path == "/v1/leads":
            self.polls += 1
            wanted = [j for j in self.plan if j.expect_sql]
            shown = wanted if self.polls > 1 else wanted[: len(wanted) // 2]  # routing takes a moment
            items = [{"id": f"lead-{j.index}", "email": j.email, "stage": "sql"} for j in shown]
            return httpx.Response(200, json={"items": items, "next_cursor": None})
        if path.endswith("/feedback"):
            self.feedback.append((path.split("/")[3], json.loads(request.content)))
            return httpx.Response(202, json={})
        if path == "/v1/reports/funnel":
            return httpx.Response(200, json={"totals": {"stages": [{"stage": "won", "current": 3}]}})
        return httpx.Response(404, json={"error": {"message": "no such route"}})


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


async def test_the_sender_delivers_journeys_waits_for_routing_and_plays_sales() -> None:
    plan = journeys(30, 5, NOW)
    fake = FakeService(plan)
    out = io.StringIO()
    target = Target("http://svc", "web-key", "seg-key", "api-token")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as client:
        sim = Simulator(client, target, concurrency=4, out=out, sleep=_no_sleep)
        tally = await sim.run(plan, wait_seconds=30)
    steps = [s for j in plan for s in j.steps]
    resends = sum(1 for s in steps if s.resend)
    assert tally.touchpoints == len(steps)
    assert tally.duplicates == resends and tally.accepted == len(steps) - resends and tally.failed == 0
    assert fake.requests["/v1/identify"] == sum(1 for s in steps if s.endpoint == "/v1/identify")
    assert tally.assigned == sum(1 for j in plan if j.expect_sql) and fake.polls >= 2
    expected = [(f"lead-{j.index}", item.type) for j in plan for item in j.feedback]
    assert sorted((lead, body["type"]) for lead, body in fake.feedback) == sorted(expected)
    assert all(body.get("reason") for _, body in fake.feedback if body["type"] == "rejected")
    text = out.getvalue()
    assert "30/30 journeys (100%)" in text and "  3/30 journeys (10%)" in text
    assert f"{tally.feedback} given" in text and "won 3" in text


async def test_a_refused_write_key_stops_with_a_clear_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200)
        return httpx.Response(401, json={"error": {"message": "write key is not valid for this source"}})

    target = Target("http://svc", "wrong", "wrong", None)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sim = Simulator(client, target, out=io.StringIO(), sleep=_no_sleep)
        refused = r"refused the write key .*(WEBSITE_WEBHOOK_SECRET|SEGMENT_WRITE_KEY)"
        with pytest.raises(SimulationError, match=refused):
            await sim.run(journeys(3, 1, NOW), wait_seconds=1)


def args(**overrides: Any) -> argparse.Namespace:
    return argparse.Namespace(**({"leads": 5, "url": None, "token": None, "seed": 7, "concurrency": 2} | overrides))


def test_an_unreachable_service_exits_1_naming_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code = simulate_command(args(url=url, token="t"), Settings(api_token=None))
    assert code == 1
    assert f"cannot reach the service at {url}" in capsys.readouterr().err


def test_keys_come_from_flags_then_environment_then_the_demo_file(tmp_path: Path) -> None:
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps({"api_token": "demo-token", "url": "http://127.0.0.1:9999",
                                "secrets": {"WEBSITE_WEBHOOK_SECRET": "demo-web", "SEGMENT_WRITE_KEY": "demo-seg"}}))
    settings_ = Settings(api_token=None)
    found = resolve_target(args(), settings_, environ={}, demo_file=demo)
    assert found == Target("http://127.0.0.1:9999", "demo-web", "demo-seg", "demo-token")
    found = resolve_target(args(url="http://x:1/", token="flag"), settings_,
                           environ={"WEBSITE_WEBHOOK_SECRET": "env-web,old-web"}, demo_file=demo)
    assert found == Target("http://x:1", "env-web", "demo-seg", "flag")
    missing = resolve_target(args(), settings_, environ={}, demo_file=tmp_path / "none.json")
    assert missing.url == "http://127.0.0.1:8080" and missing.website_key is None and missing.token is None
