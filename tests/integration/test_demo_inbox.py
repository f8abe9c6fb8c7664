"""The demo inbox: stand-in receivers store what they get; the page shows it, escaped, newest first."""

from __future__ import annotations

import time

import orjson
import pytest

from services.signing import sign
from tests.support.leadfactory import sales_api

SECRET = "demo-crm-secret"


async def test_inbox_stores_lists_and_escapes(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SIGNING_SECRET", SECRET)
    push = orjson.dumps({"lead": {"id": "L1", "emails": ["jane@acme.com"]}, "assignment": {"rep_id": "anna"},
                         "sla": {"due_at": "2026-11-23T16:00:00Z"}})
    async with sales_api(database_url, demo_mode=True) as (client, _):
        signed = await client.post("/demo/inbox/crm", content=push, headers={
            "X-Handoff-Signature": sign(push, SECRET, int(time.time())), "Idempotency-Key": "L1:asg-1",
            "Authorization": "Bearer must-not-be-stored", "Content-Type": "application/json"})
        forged = await client.post("/demo/inbox/crm", content=push,
                                   headers={"X-Handoff-Signature": sign(push, "wrong", int(time.time()))})
        alert = await client.post("/demo/inbox/alerts", json={"kind": "sla_breach", "lead_id": "L1",
                                                               "note": "<script>alert(1)</script>"})
        slack = await client.post("/demo/inbox/slack", json={"text": "Lead <b>L1</b> & friends"})
        crm = await client.get("/demo/inbox.json", params={"channel": "crm"})
        every = await client.get("/demo/inbox.json")
        after = await client.get("/demo/inbox.json", params={"after": 3})
        # The fuzzer's find: an id past 64 bits reached SQLite and overflowed into a 500.
        too_far = await client.get("/demo/inbox.json", params={"after": 2**63})
        last_id = await client.get("/demo/inbox.json", params={"after": 2**63 - 1})
        page = await client.get("/demo/inbox")
        unknown = await client.post("/demo/inbox/email", json={})
        not_json = await client.post("/demo/inbox/alerts", content=b"<xml/>")
        huge = await client.post("/demo/inbox/alerts", content=b"[" + b"1," * 600_000 + b"1]")
    assert signed.status_code == 200 and signed.json() == {"ok": True}
    assert forged.status_code == alert.status_code == slack.status_code == 200
    items = crm.json()["items"]
    assert [item["id"] for item in items] == [2, 1]  # newest first
    newest, oldest = items
    assert "authorization" not in oldest["headers"]
    assert oldest["headers"]["idempotency-key"] == "L1:asg-1"
    assert oldest["headers"]["x-demo-signature-check"] == "valid"
    assert newest["headers"]["x-demo-signature-check"].startswith("invalid")
    assert oldest["body"]["lead"]["id"] == "L1"
    assert [item["channel"] for item in every.json()["items"]] == ["slack", "alerts", "crm", "crm"]
    assert [item["id"] for item in after.json()["items"]] == [4]
    assert too_far.status_code == 422 and "after" in too_far.text
    assert last_id.status_code == 200 and last_id.json()["items"] == []
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Lead &lt;b&gt;L1&lt;/b&gt; &amp; friends" in html
    assert "lead jane@acme.com -&gt; anna" in html and "signature valid" in html
    assert html.index("id=crm") < html.index("id=alerts")
    assert unknown.status_code == 404 and "crm" in unknown.json()["error"]["message"]
    assert not_json.status_code == 400
    assert huge.status_code == 413
