"""GET /v1/leads/{id} and GET /v1/leads: the document, lookups, filters, pagination and the bearer token."""

from __future__ import annotations

from datetime import timedelta

from services.db.database import Database
from services.lead_documents import load_lead_document
from services.leads import PageKey, decode_cursor, encode_cursor
from tests.support.leadfactory import (
    T0,
    add_assignment,
    add_handed_lead,
    add_history,
    add_identity,
    add_lead,
    add_sla,
    add_touchpoint,
    bearer,
    sales_api,
)

AUTH = bearer("test-token")
SCORE_STATE = {
    "version": 1,
    "engagement_items": [
        {"rule": "pricing-page", "points": 10.0, "event_id": "tp-2", "at": "2026-01-03T10:00:00+00:00"},
        {"rule": "demo-request", "points": 50.0, "event_id": "tp-3", "at": "2026-01-04T10:00:00+00:00"},
    ],
    "traits": {"title": "VP Sales", "employees": 200, "email_domain": "acme.com"},
    "traits_at": {"title": ["2026-01-02T10:00:00.000000Z", "tp-1"],
                  "employees": ["2026-01-03T10:00:00.000000Z", "tp-2"]},
    "seen_event_ids": ["tp-1", "tp-2", "tp-3"],
}
DOCUMENT_KEYS = {
    "id", "email", "emails", "user_ids", "anonymous_ids", "company_domain", "traits", "score", "stage",
    "stage_changed_at", "stage_history", "touchpoints", "touchpoints_total", "assignment",
    "assignment_history", "sla", "owner", "team", "source", "campaign", "created_at", "updated_at",
    "qualified_at", "assigned_at", "contacted_at", "merged_into", "merged_from",
}


# What scoring stores in leads.score: fit lines (config order), then engagement lines oldest first.
STORED_SCORE = {"fit": 30, "engagement": 60, "total": 90, "breakdown": [
    {"rule": "senior-title", "kind": "fit", "points": 20, "decayed_points": 20, "event_id": None,
     "at": "2026-01-02T10:00:00Z"},
    {"rule": "target-size", "kind": "fit", "points": 10, "decayed_points": 10, "event_id": None, "at": None},
    {"rule": "pricing-page", "kind": "engagement", "points": 10, "decayed_points": 10, "event_id": "tp-2",
     "at": "2026-11-20T10:00:00Z"},
    {"rule": "demo-request", "kind": "engagement", "points": 50, "event_id": "tp-3",
     "at": "2026-01-04T10:00:00Z"}]}


async def _full_lead(db: Database) -> str:
    async with db.transaction() as conn:
        lead = await add_lead(
            conn, email="jane.doe@acme.com", stage="sql", owner="anna", team="emea", campaign="q4-webinar",
            fit=30, engagement=60, company_domain="acme.com", score_state=SCORE_STATE, score=STORED_SCORE,
            traits={"title": "VP Sales", "employees": 200, "email_domain": "acme.com",
                    "company_domain": "acme.com"},
            qualified_at=T0, assigned_at=T0 + timedelta(minutes=1),
        )
        await add_identity(conn, lead, "email", "jane@private.example", T0 + timedelta(hours=1))
        await add_identity(conn, lead, "user", "hubspot:42", T0)
        await add_identity(conn, lead, "anon", "a-123", T0 - timedelta(days=3))
        for i, (kind, path) in enumerate([("page_view", "/blog/x"), ("page_view", "/pricing"),
                                          ("form_submit", None)], start=1):
            props = {"path": path} if path else {"form": "demo"}
            await add_touchpoint(conn, lead, event_id=f"tp-{i}", type=kind, properties=props,
                                 occurred_at=T0 - timedelta(days=4 - i), campaign="q4-webinar")
        await add_history(conn, lead, None, "anonymous", T0 - timedelta(days=3), "first touch")
        await add_history(conn, lead, "engaged", "mql", T0, "fast-track: demo-request")
        await add_history(conn, lead, "mql", "sql", T0 + timedelta(minutes=1), "assigned to anna")
        await add_assignment(conn, lead, id="asg-old", rep_id="ben", team="emea", assigned_at=T0,
                             ended_at=T0 + timedelta(minutes=1), end_reason="reassigned")
        await add_assignment(conn, lead, id="asg-new", rep_id="anna", team="emea",
                             assigned_at=T0 + timedelta(minutes=1), reason="round robin in team emea")
        await add_sla(conn, lead, assignment_id="asg-new", rep_id="anna", due_at=T0 + timedelta(hours=4),
                      started_at=T0 + timedelta(minutes=1), reminders_sent=1)
    return lead


async def test_lead_document_has_the_contract_shape(database_url: str, db: Database) -> None:
    lead = await _full_lead(db)
    async with sales_api(database_url) as (client, _):
        r = await client.get(f"/v1/leads/{lead}", headers=AUTH)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == DOCUMENT_KEYS
    assert doc["id"] == lead and doc["stage"] == "sql" and doc["merged_into"] is None
    assert doc["emails"] == ["jane.doe@acme.com", "jane@private.example"]  # primary first
    assert doc["user_ids"] == ["hubspot:42"] and doc["anonymous_ids"] == ["a-123"]
    assert doc["company_domain"] == "acme.com" and doc["traits"]["title"] == "VP Sales"
    score = doc["score"]
    assert (score["fit"], score["engagement"], score["total"]) == (30, 60, 90)
    # The breakdown scoring stored: fit lines, then engagement items.
    assert [(b["rule"], b["kind"], b["points"]) for b in score["breakdown"]] == [
        ("senior-title", "fit", 20), ("target-size", "fit", 10),
        ("pricing-page", "engagement", 10), ("demo-request", "engagement", 50)]
    assert score["breakdown"][0]["at"] == "2026-01-02T10:00:00Z"
    assert score["breakdown"][3] == {"rule": "demo-request", "kind": "engagement", "points": 50,
                                     "at": "2026-01-04T10:00:00Z", "event_id": "tp-3"}
    assert [(h["from"], h["to"]) for h in doc["stage_history"]] == [
        (None, "anonymous"), ("engaged", "mql"), ("mql", "sql")]
    assert doc["stage_history"][1] == {"from": "engaged", "to": "mql", "at": "2026-01-05T09:00:00Z",
                                       "cause": "fast-track: demo-request"}
    assert [t["event_id"] for t in doc["touchpoints"]] == ["tp-1", "tp-2", "tp-3"]  # newest last
    tp = doc["touchpoints"][1]
    assert tp["type"] == "page_view" and tp["properties"] == {"path": "/pricing"}
    assert tp["occurred_at"] == "2026-01-03T09:00:00Z" and tp["source"] == "website"
    assert tp["campaign"] == "q4-webinar"
    assert doc["assignment"] == {"assignment_id": "asg-new", "rep_id": "anna", "team": "emea",
                                 "reason": "round robin in team emea", "assigned_at": "2026-01-05T09:01:00Z"}
    assert [a["assignment_id"] for a in doc["assignment_history"]] == ["asg-old", "asg-new"]
    assert doc["sla"]["due_at"] == "2026-01-05T13:00:00Z" and doc["sla"]["state"] == "running"
    assert doc["sla"]["reminders_sent"] == 1 and doc["sla"]["breached_at"] is None
    assert doc["created_at"] == "2026-01-05T09:00:00Z"


async def test_timeline_limit_keeps_the_newest(database_url: str, db: Database) -> None:
    lead = await _full_lead(db)
    async with db.read() as conn:
        doc = await load_lead_document(conn, lead, timeline_limit=2)
    assert doc is not None
    assert [t["event_id"] for t in doc["touchpoints"]] == ["tp-2", "tp-3"]
    assert doc["touchpoints_total"] == 3
    # The stored breakdown is whole whatever the timeline limit.
    assert [b["kind"] for b in doc["score"]["breakdown"]] == ["fit", "fit", "engagement", "engagement"]


async def test_merged_lead_resolves_to_the_winner(database_url: str, db: Database) -> None:
    async with db.transaction() as conn:
        winner = await add_lead(conn, email="jane@acme.com", stage="known")
        loser = await add_lead(conn, stage="anonymous", merged_into=winner)
        await add_identity(conn, loser, "anon", "a-9")
        await add_touchpoint(conn, loser, event_id="anon-view", type="page_view", occurred_at=T0)
    async with sales_api(database_url) as (client, _):
        r = await client.get(f"/v1/leads/{loser}", headers=AUTH)
        listed = await client.get("/v1/leads", headers=AUTH)
        by_anon = await client.get("/v1/leads", params={"anonymous_id": "a-9"}, headers=AUTH)
    doc = r.json()
    assert r.status_code == 200 and doc["id"] == winner and doc["merged_from"] == [loser]
    assert doc["anonymous_ids"] == ["a-9"] and [t["event_id"] for t in doc["touchpoints"]] == ["anon-view"]
    assert [i["id"] for i in listed.json()["items"]] == [winner]  # the loser is hidden from lists
    assert [i["id"] for i in by_anon.json()["items"]] == [winner]


async def test_unknown_lead_is_a_404_that_says_how_to_find_one(database_url: str) -> None:
    async with sales_api(database_url) as (client, _):
        r = await client.get("/v1/leads/nope", headers=AUTH)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "lead_not_found"
    assert "GET /v1/leads?email=" in r.json()["error"]["message"]


async def test_email_lookup_is_trimmed_and_case_insensitive(database_url: str, db: Database) -> None:
    lead = await _full_lead(db)
    async with sales_api(database_url) as (client, _):
        found = await client.get("/v1/leads", params={"email": "  Jane.Doe@ACME.com "}, headers=AUTH)
        second = await client.get("/v1/leads", params={"email": "JANE@private.example"}, headers=AUTH)
        missing = await client.get("/v1/leads", params={"email": "nobody@acme.com"}, headers=AUTH)
    assert found.status_code == 200
    body = found.json()
    assert [d["id"] for d in body["items"]] == [lead] and body["next_cursor"] is None
    assert body["items"][0]["stage_history"] and body["items"][0]["touchpoints"]  # whole documents
    assert [d["id"] for d in second.json()["items"]] == [lead]
    assert missing.json() == {"items": [], "next_cursor": None}


async def test_filters_narrow_the_list(database_url: str, db: Database) -> None:
    async with db.transaction() as conn:
        a = await add_lead(conn, email="a@x.com", stage="mql", team="emea", source="website",
                           campaign="q4", created_at=T0, qualified_at=T0 + timedelta(hours=1))
        b = await add_lead(conn, email="b@x.com", stage="sql", owner="anna", team="emea", source="segment",
                           created_at=T0 + timedelta(days=1), qualified_at=T0 + timedelta(days=1))
        c = await add_lead(conn, email="c@x.com", stage="sql", owner="carl", team="default",
                           created_at=T0 + timedelta(days=2), qualified_at=T0 + timedelta(days=3))
        d = await add_lead(conn, email="d@x.com", stage="engaged", created_at=T0 + timedelta(days=3))

    async def ids(client: object, **params: str) -> list[str]:
        r = await client.get("/v1/leads", params=params, headers=AUTH)  # type: ignore[attr-defined]
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["items"]]

    async with sales_api(database_url) as (client, _):
        assert await ids(client) == [d, c, b, a]  # newest first
        assert await ids(client, stage="MQL") == [a]  # the contract writes stages in capitals too
        assert await ids(client, stage="sql,mql") == [c, b, a]
        assert await ids(client, owner="anna") == [b]
        assert await ids(client, team="emea") == [b, a]
        assert await ids(client, source="segment") == [b]
        assert await ids(client, campaign="q4") == [a]
        assert await ids(client, created_from="2026-01-06", created_to="2026-01-08") == [c, b]
        assert await ids(client, qualified_from="2026-01-05T10:00:00Z", qualified_to="2026-01-07") == [b, a]
        assert await ids(client, qualified_from="2026-01-05T10:00:00+01:00") == [c, b, a]
        r = await client.get("/v1/leads", params={"owner": "anna"}, headers=AUTH)
        item = r.json()["items"][0]
        assert item == {**item, "email": "b@x.com", "stage": "sql", "owner": "anna", "team": "emea",
                        "created_at": "2026-01-06T09:00:00Z", "qualified_at": "2026-01-06T09:00:00Z"}
        assert set(item["score"]) == {"fit", "engagement", "total"}
        bad_stage = await client.get("/v1/leads", params={"stage": "hot"}, headers=AUTH)
        bad_time = await client.get("/v1/leads", params={"created_from": "yesterday"}, headers=AUTH)
    assert bad_stage.status_code == 422 and bad_stage.json()["error"]["details"][0]["field"] == "stage"
    assert "mql" in bad_stage.json()["error"]["details"][0]["message"]
    assert bad_time.status_code == 422 and bad_time.json()["error"]["details"][0]["field"] == "created_from"


async def test_cursor_pagination_walks_every_lead_once(database_url: str, db: Database) -> None:
    expected = []
    async with db.transaction() as conn:
        for i in range(23):
            # Groups of three share a created_at: the id breaks the tie, so no page loses or repeats one.
            expected.append(await add_lead(conn, id=f"lead-{i:02d}", stage="sql",
                                           created_at=T0 + timedelta(minutes=i // 3)))
        await add_lead(conn, id="lead-merged", stage="sql", merged_into="lead-00", created_at=T0)
    seen: list[str] = []
    pages = 0
    async with sales_api(database_url) as (client, _):
        cursor = None
        while True:
            params = {"stage": "sql", "limit": "5", **({"cursor": cursor} if cursor else {})}
            r = await client.get("/v1/leads", params=params, headers=AUTH)
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["items"]) <= 5
            seen += [item["id"] for item in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        bad = await client.get("/v1/leads", params={"cursor": "not-a-cursor"}, headers=AUTH)
        too_big = await client.get("/v1/leads", params={"limit": "201"}, headers=AUTH)
        too_small = await client.get("/v1/leads", params={"limit": "0"}, headers=AUTH)
    assert pages == 5
    assert seen == sorted(expected, key=lambda i: (int(i[5:]) // 3, i), reverse=True)  # (created_at, id) desc
    assert len(set(seen)) == 23 and "lead-merged" not in seen
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "cursor"
    assert too_big.status_code == 422 and too_small.status_code == 422


def test_cursor_round_trips_and_rejects_forgeries() -> None:
    key = PageKey(T0 + timedelta(microseconds=7), "abc")
    assert decode_cursor(encode_cursor(key)) == key
    for forged in ("", "!!!", "eyJ4IjoxfQ", encode_cursor(key)[:-3]):
        try:
            decode_cursor(forged)
        except ValueError as exc:
            assert "cursor" in str(exc)
        else:
            raise AssertionError(f"{forged!r} was accepted")


async def test_token_is_required_and_several_are_accepted(database_url: str, db: Database) -> None:
    async with db.transaction() as conn:
        lead, _ = await add_handed_lead(conn, email="j@x.com", assigned_at=T0, due_at=T0 + timedelta(hours=4))
    async with sales_api(database_url, token="old-token, new-token") as (client, _):
        none = await client.get(f"/v1/leads/{lead}")
        wrong = await client.get(f"/v1/leads/{lead}", headers=bearer("guess"))
        basic = await client.get(f"/v1/leads/{lead}", headers={"Authorization": "Basic b2xkLXRva2Vu"})
        old = await client.get(f"/v1/leads/{lead}", headers=bearer("old-token"))
        new = await client.get("/v1/leads", headers=bearer("new-token"))
        feedback = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "contacted"})
        reps = await client.get("/v1/reps", headers=bearer("nope"))
    for refused in (none, wrong, basic, feedback, reps):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["www-authenticate"] == "Bearer"
    assert old.status_code == 200 and new.status_code == 200
    async with sales_api(database_url, token=None) as (client, _):
        unset = await client.get("/v1/leads", headers=bearer("anything"))
    assert unset.status_code == 401 and "HANDOFF_API_TOKEN" in unset.json()["error"]["message"]
