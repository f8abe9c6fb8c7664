"""The whole pipeline as a user runs it: ``handoff up`` in its own process, the real Segment client,
signed webhooks, a real CRM and alert receiver on loopback. From the first anonymous page view to
the CRM push and the SLA breach, page and reassignment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from segment.analytics import Client

from services.config import load_config
from services.signing import sign, verify
from tests.support.infra import free_port
from tests.support.pipeline import API_TOKEN, TEST_SECRETS
from tests.support.polling import eventually
from tests.support.processes import handoff_process
from tests.support.receiver import Receiver

pytestmark = pytest.mark.e2e


def write_config(path: Path, crm_url: str, alerts_url: str) -> None:
    data = load_config(None).model_dump(mode="json")
    data["sla"] = {"first_touch": "4s", "reminders": [0.5], "on_breach": ["alert_rep", "page_oncall", "reassign"]}
    data["crm"] = {"kind": "webhook", "url": crm_url, "secret_env": "CRM_SIGNING_SECRET", "timeout_seconds": 3}
    data["alerts"] = {"webhook": {"url": alerts_url + "alerts"},
                      "pagerduty": {"url": alerts_url + "pd", "routing_key_env": "PD_ROUTING_KEY"},
                      "slack": {"url": alerts_url + "slack"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


async def test_first_anonymous_view_to_crm_push_and_breach(tmp_path: Path) -> None:
    async with Receiver() as crm, Receiver() as alerts:
        config_path = tmp_path / "handoff.yaml"
        write_config(config_path, crm.url("/leads"), alerts.url("/"))
        env = {**TEST_SECRETS, "HANDOFF_CONFIG": str(config_path), "HANDOFF_API_TOKEN": API_TOKEN,
               "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"}
        port = free_port()
        with handoff_process(["up", "--no-demo"], env, port, tmp_path / "handoff.log") as proc:
            # 1. Anonymous browsing and a webinar, through the real Segment client.
            segment = Client(TEST_SECRETS["SEGMENT_WRITE_KEY"], host=proc.url, sync_mode=True, max_retries=0,
                             gzip=True)
            segment.page(anonymous_id="anon-7", name="Pricing", properties={"path": "/pricing", "url":
                         "https://example.com/pricing"})
            segment.track(anonymous_id="anon-7", event="Webinar Attended", properties={"webinar": "q4"},
                          context={"campaign": {"name": "q4-webinar"}})
            # 2. They identify: the anonymous history joins the known lead.
            segment.identify(user_id="u-7", anonymous_id="anon-7",
                             traits={"email": "Lee@BigCo.com", "title": "VP Marketing", "country": "US"})
            segment.flush()
            # 3. A signed website webhook: the demo request (fast-track to MQL, then SQL).
            body = orjson.dumps({"event_id": "web-demo-7", "type": "form_submit", "email": "lee@bigco.com",
                                 "properties": {"form": "demo"}})
            headers = {"X-Handoff-Signature": sign(body, TEST_SECRETS["WEBSITE_WEBHOOK_SECRET"], int(time.time())),
                       "Content-Type": "application/json"}
            async with httpx.AsyncClient(base_url=proc.url) as client:
                r = await client.post("/webhooks/website", content=body, headers=headers)
                assert r.status_code == 202, r.text
                tampered = await client.post("/webhooks/website", content=body.replace(b"demo", b"deme"),
                                             headers=headers)
                assert tampered.status_code == 401

                async def pushed() -> Any:
                    return [q for q in crm.requests if q.method == "POST"]

                first_push = (await eventually(pushed, 30, "the CRM push"))[0]
                assert verify(first_push.body, first_push.headers["x-handoff-signature"],
                              [TEST_SECRETS["CRM_SIGNING_SECRET"]], time.time()) is None
                lead = first_push.json()["lead"]
                assert lead["emails"] == ["lee@bigco.com"] and "anon-7" in lead["anonymous_ids"]
                assert "u-7" in lead["user_ids"]
                types = [t["type"] for t in lead["touchpoints"]]
                assert types[:2] == ["page_view", "webinar_attended"], types  # the anonymous past joined
                assert first_push.headers["idempotency-key"] == f"{lead['id']}:{lead['assignment']['assignment_id']}"
                first_rep = lead["assignment"]["rep_id"]

                # 4. Nobody calls: reminder, breach, page, reassignment (a second push, to another rep).
                async def breached() -> bool:
                    kinds = [q.json().get("kind") for q in alerts.requests if q.path == "/alerts"]
                    return "sla_reminder" in kinds and "sla_breach" in kinds and len(await pushed()) >= 2

                await eventually(breached, 30, "reminder, breach and a second push")
                pages = [q.json() for q in alerts.requests if q.path == "/pd"]
                assert pages and pages[0]["event_action"] == "trigger"
                assert pages[0]["dedup_key"].endswith(lead["id"])
                second = (await pushed())[-1].json()["lead"]
                assert second["assignment"]["rep_id"] != first_rep
                assert second["sla"]["state"] == "running"

                # 5. The new rep calls: the clock stops and the page resolves.
                auth = {"Authorization": f"Bearer {API_TOKEN}"}
                r = await client.post(f"/v1/leads/{lead['id']}/feedback", headers=auth,
                                      json={"type": "contacted", "rep_id": second["assignment"]["rep_id"]})
                assert r.status_code == 202, r.text

                async def resolved() -> bool:
                    return any(q.json().get("event_action") == "resolve" for q in alerts.requests if q.path == "/pd")

                await eventually(resolved, 20, "the PagerDuty resolve")
                r = await client.get("/v1/leads", params={"email": "LEE@bigco.com"}, headers=auth)
                doc = r.json()["items"][0]
                assert doc["stage"] == "contacted"
                assert [h["to"] for h in doc["stage_history"]][-3:] == ["sql", "sql", "contacted"]
        # SIGTERM: the process finishes what it holds and exits cleanly, well within the grace period.
        assert proc.exit_code == 0, proc.log()
