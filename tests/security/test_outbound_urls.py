"""CRM and alert URLs come from the config only: nothing a request carries can point an outbound call
elsewhere, and a redirect from the CRM is not followed.

A whole pipeline (every service, embedded bus, SQLite) with the CRM and the alert sinks at one loopback
receiver; a second receiver, the trap, is named in every URL-looking field a caller could send
(touchpoint properties and traits, Segment context, HubSpot and Mautic payloads, sales feedback, the
CRM callback, and Host/Forwarded headers). The CRM's first answer is a redirect to the trap. The
trap must get nothing; the configured receiver only calls at the configured paths.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.config import load_config
from services.signing import sign
from tests.support.pipeline import API_TOKEN, SEGMENT_KEY, TEST_SECRETS, WEBSITE_KEY, running_pipeline
from tests.support.receiver import Received, Receiver, Reply
from tests.support.split import EXAMPLE_CONFIG

CONFIGURED_PATHS = {"/crm/leads", "/alerts/webhook", "/alerts/slack", "/alerts/pd"}


def url_fields(trap: str) -> dict[str, Any]:
    """Every URL-ish key a payload might carry, all pointing at the trap."""
    return {key: f"{trap}/{key}" for key in ("url", "crm_url", "webhook", "webhook_url", "callback", "callback_url",
                                             "redirect", "redirect_uri", "endpoint", "target", "href", "website")}


async def test_outbound_calls_only_go_to_configured_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    redirected: list[bool] = []

    def crm_like(request: Received) -> Reply:
        if request.path == "/crm/leads" and not redirected:
            redirected.append(True)
            return Reply(307, headers={"Location": trap.url("/followed-redirect")})
        return Reply(200)

    async with Receiver(crm_like) as sinks, Receiver() as trap:
        base = sinks.url("").rstrip("/")
        data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        data["sla"] = {"first_touch": "2s", "reminders": [0.5], "on_breach": ["alert_rep", "page_oncall"]}
        data["crm"] = {"kind": "webhook", "url": f"{base}/crm/leads", "secret_env": "CRM_SIGNING_SECRET",
                       "timeout_seconds": 2, "max_attempts": 3}
        data["alerts"] = {"webhook": {"url": f"{base}/alerts/webhook"}, "slack": {"url": f"{base}/alerts/slack"},
                          "pagerduty": {"url": f"{base}/alerts/pd", "routing_key_env": "PD_ROUTING_KEY"}}
        path = tmp_path / "handoff.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = load_config(path)
        bait = url_fields(trap.url("").rstrip("/"))
        hostile = {"Host": "trap.invalid", "X-Forwarded-Host": "trap.invalid", "Forwarded": "host=trap.invalid",
                   "X-Callback-Url": bait["url"]}
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
        from services.db.migrate import migrate

        await migrate(db_url)
        async with running_pipeline(db_url, "local", None, services={"ingest", "scoring", "router", "notifier", "api"},
                                    config=config, monkeypatch=monkeypatch) as p:
            for i in range(3):
                body = {"event_id": f"url-{i}", "type": "form_submit", "email": f"buyer{i}@corp{i}.example",
                        "properties": {"form": "demo", **bait}, "traits": {"title": "VP Sales", **bait},
                        "campaign": bait["url"]}
                r = await p.client.post("/v1/touchpoints", json=body, headers={**p.auth(WEBSITE_KEY), **hostile})
                assert r.status_code == 202, r.text
            segment = base64.b64encode(f"{SEGMENT_KEY}:".encode()).decode()
            r = await p.client.post("/v1/track", headers={"Authorization": f"Basic {segment}", **hostile}, json={
                "userId": "u-url", "event": "Demo Requested", "properties": bait,
                "context": {"page": {"url": bait["url"]}, "traits": {"email": "u@corp9.example", **bait}}})
            assert r.status_code == 200, r.text
            raw = b'[{"eventId": 1, "subscriptionType": "contact.creation", "objectId": 7, "url": "' \
                + bait["url"].encode() + b'"}]'
            await p.client.post("/webhooks/hubspot", content=raw, headers=hostile)

            async def settled() -> bool:
                crm_calls = [q for q in sinks.requests if q.path == "/crm/leads"]
                return len({q.headers.get("idempotency-key") for q in crm_calls}) >= 3 and any(
                    q.path == "/alerts/pd" for q in sinks.requests)

            await p.wait_for(settled, 40, "the CRM pushes and the SLA page")
            lead = (await p.client.get("/v1/leads", params={"email": "buyer0@corp0.example"},
                                       headers=p.api())).json()["items"][0]
            await p.client.post(f"/v1/leads/{lead['id']}/feedback", headers={**p.api(), **hostile},
                                json={"type": "contacted", "rep_id": lead["assignment"]["rep_id"], **{
                                    "reason": bait["url"]}})
            callback = (b'{"lead_id": "' + lead["id"].encode() + b'", "type": "accepted", "callback_url": "'
                        + bait["url"].encode() + b'"}')
            await p.client.post("/webhooks/crm/webhook", content=callback, headers={
                "X-Handoff-Signature": sign(callback, TEST_SECRETS["CRM_SIGNING_SECRET"], int(time.time())),
                **hostile})

            async def resolved() -> bool:
                return any(q.path == "/alerts/pd" and q.json().get("event_action") == "resolve"
                           for q in sinks.requests)

            await p.wait_for(resolved, 20, "the PagerDuty resolve after contact")
        assert API_TOKEN

    assert redirected, "the CRM never answered with the redirect"
    assert not trap.requests, f"an outbound call went to a URL from a request: {[q.path for q in trap.requests]}"
    paths = {q.path for q in sinks.requests}
    assert paths <= CONFIGURED_PATHS, f"calls outside the configured URLs: {paths - CONFIGURED_PATHS}"
    assert {"/crm/leads", "/alerts/webhook", "/alerts/pd"} <= paths
