"""Secrets are never logged nor echoed in an answer, and the emails of leads are masked in the logs.

One real ``handoff up --no-demo`` process runs with known, distinctive secret values and DEBUG logging
(the most a log can say). It gets good traffic (a lead qualifies and is pushed to a CRM that refuses
it, naming the email, so the refusal is logged; the SLA breach pages PagerDuty with the routing key)
and bad traffic (wrong keys, tokens and signatures of every kind). Then the log file and every answer
are searched for each secret value, and for the valid signature of what was sent; the log for the
lead's email.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from services.signing import sign
from tests.support.infra import free_port, run_coroutine
from tests.support.processes import handoff_process
from tests.support.receiver import Received, Receiver, Reply
from tests.support.split import EXAMPLE_CONFIG

pytestmark = pytest.mark.e2e
SECRET_NAMES = ("WEBSITE_WEBHOOK_SECRET", "SEGMENT_WRITE_KEY", "HUBSPOT_CLIENT_SECRET", "MAUTIC_WEBHOOK_SECRET",
                "CRM_SIGNING_SECRET", "PD_ROUTING_KEY", "HANDOFF_API_TOKEN")
EMAIL = "jane.doe.secret-test@acme-industries.com"


@dataclass
class Run:
    secrets: dict[str, str]
    log: str
    answers: list[str]  # every answer: status, headers and body, as text
    forged: list[str]  # valid signatures of the bodies sent with a wrong one (must never be echoed)
    crm: list[Received]
    alerts: list[Received]


def _hubspot_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    mac = hmac.new(secret.encode(), f"{method}{uri}{body.decode()}{timestamp}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


async def _scenario(tmp: Path, secrets: dict[str, str]) -> Run:
    def crm_reply(request: Received) -> Reply:
        return Reply(422, f'{{"error": "contact {EMAIL} rejected: duplicate"}}'.encode())

    answers: list[str] = []
    forged: list[str] = []
    async with Receiver(crm_reply) as crm, Receiver() as alerts:
        data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        data["sla"] = {"first_touch": "3s", "reminders": [], "on_breach": ["alert_rep", "page_oncall"]}
        data["crm"] = {"kind": "webhook", "url": crm.url("/leads"), "secret_env": "CRM_SIGNING_SECRET",
                       "timeout_seconds": 2, "max_attempts": 2}
        data["alerts"] = {"webhook": {"url": alerts.url("/alerts")},
                          "pagerduty": {"url": alerts.url("/pd"), "routing_key_env": "PD_ROUTING_KEY"}}
        config_path = tmp / "handoff.yaml"
        config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        env = {**secrets, "HANDOFF_CONFIG": str(config_path), "HANDOFF_LOG_LEVEL": "DEBUG",
               "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'handoff.db'}"}
        log_path = tmp / "handoff.log"
        port = free_port()
        with handoff_process(["up", "--no-demo"], env, port, log_path) as proc:
            async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
                async def keep(r: httpx.Response) -> httpx.Response:
                    answers.append(f"{r.status_code} {dict(r.headers)} {r.text}")
                    return r

                body = (f'{{"event_id": "{uuid.uuid4()}", "type": "form_submit", "email": "{EMAIL}", '
                        '"properties": {"form": "demo"}, "traits": {"title": "VP Sales", "country": "US"}}').encode()
                website = secrets["WEBSITE_WEBHOOK_SECRET"]
                r = await keep(await client.post("/v1/touchpoints", content=body,
                                                 headers={"Authorization": f"Bearer {website}"}))
                assert r.status_code == 202, r.text
                now = int(time.time())
                # Wrong keys, tokens and signatures, each kind.
                for headers in ({"Authorization": f"Bearer {website}x"}, {"Authorization": "Bearer nope"},
                                {"X-Handoff-Signature": f"t={now},v1={'0' * 64}"},
                                {"X-Handoff-Signature": f"t={now - 10_000},v1=" + sign(body, website, now - 10_000)
                                 .split("v1=")[1]}):
                    await keep(await client.post("/v1/touchpoints", content=body, headers=headers))
                    await keep(await client.post("/webhooks/website", content=body, headers=headers))
                forged.append(sign(body, website, now).split("v1=")[1])
                basic = base64.b64encode(f"{secrets['SEGMENT_WRITE_KEY']}x:".encode()).decode()
                await keep(await client.post("/v1/track", content=b'{"userId": "u1", "event": "x"}',
                                             headers={"Authorization": f"Basic {basic}"}))
                ts = str(int(time.time() * 1000))
                await keep(await client.post("/webhooks/hubspot", content=b"[]", headers={
                    "X-HubSpot-Signature-v3": "AAAA", "X-HubSpot-Request-Timestamp": ts}))
                forged.append(_hubspot_v3(secrets["HUBSPOT_CLIENT_SECRET"], "POST", f"{proc.url}/webhooks/hubspot",
                                          b"[]", ts))
                await keep(await client.post("/webhooks/mautic", content=b"{}", headers={"Webhook-Signature": "AAAA"}))
                forged.append(base64.b64encode(hmac.new(secrets["MAUTIC_WEBHOOK_SECRET"].encode(), b"{}",
                                                        hashlib.sha256).digest()).decode())
                callback = b'{"lead_id": "x", "type": "contacted"}'
                await keep(await client.post("/webhooks/crm/webhook", content=callback,
                                             headers={"X-Handoff-Signature": f"t={now},v1={'1' * 64}"}))
                forged.append(sign(callback, secrets["CRM_SIGNING_SECRET"], now).split("v1=")[1])
                token = secrets["HANDOFF_API_TOKEN"]
                for authorization in (f"Bearer {token}x", f"Bearer {token[:-1]}", "Bearer", f"Basic {token}"):
                    await keep(await client.get("/v1/leads", headers={"Authorization": authorization}))
                    await keep(await client.get("/dashboard", params={"token": token + "x"}))
                await keep(await client.get("/v1/leads", params={"email": EMAIL},
                                            headers={"Authorization": f"Bearer {token}"}))
                # The CRM refuses the push (the delivery dies, logged with the CRM's answer); the SLA
                # breaches and pages PagerDuty with the routing key.
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline and not (
                        crm.requests and any(q.path == "/pd" for q in alerts.requests)
                        and "is dead" in log_path.read_text(errors="replace")):
                    await asyncio.sleep(0.2)
                await keep(await client.get("/metrics"))
                await keep(await client.get("/readyz"))
        log = log_path.read_text(errors="replace")
        return Run(secrets, log, answers, forged, list(crm.requests), list(alerts.requests))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("secrets")
    secrets = {name: f"{name.lower().replace('_', '-')}-{uuid.uuid4().hex}" for name in SECRET_NAMES}
    yield run_coroutine(_scenario(tmp, secrets))


def test_the_scenario_exercised_the_secret_paths(run: Run) -> None:
    assert run.crm, "the CRM got no push (the signing secret was not used)"
    assert any(q.path == "/pd" and run.secrets["PD_ROUTING_KEY"] in q.body.decode() for q in run.alerts)
    assert "is dead" in run.log, "the CRM's refusal was not logged"
    assert sum(a.startswith("401") for a in run.answers) >= 12


def test_secrets_are_never_logged(run: Run) -> None:
    leaked = {name: run.log.count(value) for name, value in run.secrets.items() if value in run.log}
    assert not leaked, f"secret values found in the log: {leaked}"
    # Nor a prefix long enough to matter (a secret cut by a length limit is still a leak).
    partial = [name for name, value in run.secrets.items() if value[:20] in run.log]
    assert not partial, f"secret prefixes in the log: {partial}"


def test_secrets_and_valid_signatures_are_never_echoed(run: Run) -> None:
    text = "\n".join(run.answers)
    echoed = [name for name, value in run.secrets.items() if value in text or value[:20] in text]
    assert not echoed, f"answers echo secrets: {echoed}"
    revealed = [sig for sig in run.forged if sig in text or sig in run.log]
    assert not revealed, "an answer (or the log) reveals the valid signature for a forged request"


def test_lead_emails_are_masked_in_the_log(run: Run) -> None:
    from services import cli

    wired = "configure_logging" in Path(cli.__file__).read_text()
    assert wired, ("services/cli.py main() does not call services.logging_setup.configure_logging(settings): "
                   "add it in place of logging.basicConfig(...)")
    assert EMAIL not in run.log, "a lead's email appears unmasked in the log"
    assert EMAIL.split("@")[0] not in run.log
    assert f"j***@{EMAIL.split('@')[1]}" in run.log, "no masked email in the log: the scenario logged none"
