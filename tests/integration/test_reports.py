"""The funnel report against a small hand-computed fixture, on SQLite and PostgreSQL.

Nine live leads and one merged away (L6, which must never count). Times are minutes after T. The
stage histories (``x@m``: entered stage x at T+m):

    L1 website c1  anonymous@0 engaged@60 mql@120 sql@120 (sql@130 reassigned) contacted@180
                   opportunity@300 won@600                              first assignment @120 (ben)
    L2 website c1  known@10 engaged@70 mql@100 sql@110 contacted@130 recycled@200 mql@1000
    L3 segment c2  anonymous@20 known@50 mql@80 sql@90                  (waiting, SLA running)
    L4 segment --  anonymous@5
    L5 website c2  known@30 disqualified@40
    L7 website c1  engaged@15 mql@75 sql@95 contacted@200 opportunity@260 lost@400
    L8 segment c2  known@25 mql@45 sql@55 recycled@70                   (rejected: no authority)
    L9 segment c1  known@35 mql@36 sql@37 contacted@50 recycled@52      (rejected: budget)
    L10 website c1 known on Oct 20, mql on Oct 21 (last month)

Every expected number below is worked out by hand in the comments next to it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.config import load_config
from services.db.database import Database
from services.db.models import assignments, feedback, lead_merges, lead_sla, leads, stage_history
from services.reports import funnel_report
from services.stage_chain import refresh_stage_chain
from tests.support.app import api_client

T = datetime(2026, 11, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 16, tzinfo=UTC)  # half of November has elapsed
TOKEN = {"Authorization": "Bearer test-token"}


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


# lead id -> (source, campaign, team, owner, current stage, [(to_stage, minutes)], contacted_at minutes)
LEADS: dict[str, tuple[str, str | None, str | None, str | None, list[tuple[str, Any]], float | None]] = {
    "L1": ("website", "c1", "emea", "anna",
           [("anonymous", 0), ("engaged", 60), ("mql", 120), ("sql", 120), ("sql", 130), ("contacted", 180),
            ("opportunity", 300), ("won", 600)], 180),
    "L2": ("website", "c1", "emea", "ben",
           [("known", 10), ("engaged", 70), ("mql", 100), ("sql", 110), ("contacted", 130), ("recycled", 200),
            ("mql", 1000)], 130),
    "L3": ("segment", "c2", "default", "carl", [("anonymous", 20), ("known", 50), ("mql", 80), ("sql", 90)], None),
    "L4": ("segment", None, None, None, [("anonymous", 5)], None),
    "L5": ("website", "c2", None, None, [("known", 30), ("disqualified", 40)], None),
    "L6": ("website", "c1", None, None, [("anonymous", 1)], None),  # merged into L1
    "L7": ("website", "c1", "default", "dana",
           [("engaged", 15), ("mql", 75), ("sql", 95), ("contacted", 200), ("opportunity", 260), ("lost", 400)], 200),
    "L8": ("segment", "c2", "emea", "anna", [("known", 25), ("mql", 45), ("sql", 55), ("recycled", 70)], None),
    "L9": ("segment", "c1", "default", "dana",
           [("known", 35), ("mql", 36), ("sql", 37), ("contacted", 50), ("recycled", 52)], 50),
    "L10": ("website", "c1", None, None, [("known", -20 * 1440), ("mql", -19 * 1440)], None),
}
# (id, lead, rep, team, assigned minutes, ended minutes)
ASSIGNMENTS = [("a1", "L1", "ben", "emea", 120, 130), ("a2", "L1", "anna", "emea", 130, None),
               ("a3", "L2", "ben", "emea", 110, None), ("a4", "L3", "carl", "default", 90, None),
               ("a5", "L7", "dana", "default", 95, None), ("a6", "L8", "anna", "emea", 55, None),
               ("a7", "L9", "dana", "default", 37, None), ("a8", "L6", "carl", "default", 2, None)]
# (lead, assignment, rep, started, due, state)
SLAS = [("L1", "a2", "anna", 130, 160, "breached"), ("L2", "a3", "ben", 110, 140, "met"),
        ("L3", "a4", "carl", 90, 120, "running"), ("L7", "a5", "dana", 95, 125, "breached"),
        ("L8", "a6", "anna", 55, 85, "stopped"), ("L9", "a7", "dana", 37, 67, "met"),
        ("L6", "a8", "carl", 2, 32, "breached")]
# (lead, type, rep, reason, minutes)
FEEDBACK = [("L2", "contacted", "ben", None, 130), ("L2", "rejected", "ben", "budget", 200),
            ("L8", "rejected", "anna", "no authority", 70), ("L9", "contacted", "dana", None, 50),
            ("L9", "rejected", "dana", "budget", 52), ("L6", "rejected", "carl", "student", 3)]


async def insert_fixture(db: Database) -> None:
    lead_rows: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for lead_id, (source, campaign, team, owner, moves, contacted) in LEADS.items():
        previous = None
        for stage, minutes in moves:
            history.append({"lead_id": lead_id, "from_stage": previous, "to_stage": stage, "at": at(minutes),
                            "cause": "fixture"})
            previous = stage
        first_assignment = min((a[4] for a in ASSIGNMENTS if a[1] == lead_id), default=None)
        lead_rows.append({
            "id": lead_id, "stage": moves[-1][0], "email": f"{lead_id.lower()}@example.com", "company_domain": None,
            "fit": 10, "engagement": 40, "total": 50, "traits": {}, "score_state": {}, "source": source,
            "campaign": campaign, "owner": owner, "team": team, "merged_into": "L1" if lead_id == "L6" else None,
            "created_at": at(moves[0][1]), "updated_at": at(moves[-1][1]), "stage_changed_at": at(moves[-1][1]),
            "qualified_at": None, "assigned_at": at(first_assignment) if first_assignment is not None else None,
            "contacted_at": at(contacted) if contacted is not None else None, "version": 1,
        })
    async with db.transaction() as conn:
        await conn.execute(leads.insert(), lead_rows)
        # One row at a time: ids (the tie-breaker of equal times) follow the list order.
        for row in history:
            await conn.execute(stage_history.insert().values(**row))
        await refresh_stage_chain(conn, {row["lead_id"] for row in history})
        await conn.execute(assignments.insert(), [
            {"id": a, "lead_id": lead, "rep_id": rep, "team": team, "reason": "fixture", "assigned_at": at(start),
             "ended_at": at(end) if end is not None else None, "end_reason": None}
            for a, lead, rep, team, start, end in ASSIGNMENTS])
        await conn.execute(lead_sla.insert(), [
            {"lead_id": lead, "assignment_id": a, "rep_id": rep, "due_at": at(due), "state": state,
             "reminders_sent": 0, "breached_at": at(due) if state == "breached" else None, "paged": False,
             "started_at": at(start), "stopped_at": None}
            for lead, a, rep, start, due, state in SLAS])
        await conn.execute(feedback.insert(), [
            {"lead_id": lead, "type": kind, "rep_id": rep, "reason": reason, "at": at(minutes), "channel": "api"}
            for lead, kind, rep, reason, minutes in FEEDBACK])
        await conn.execute(lead_merges.insert().values(winner_id="L1", loser_id="L6", at=at(2), reason="fixture"))


@pytest.fixture
async def filled(db: Database) -> Database:
    await insert_fixture(db)
    return db


async def report(db: Database, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"start": None, "end": None, "group_by": None, "now": NOW} | kwargs
    async with db.read() as conn:
        return await funnel_report(conn, load_config(None), **args)


def by_stage(figures: dict[str, Any], field: str) -> dict[str, Any]:
    return {row["stage"]: row[field] for row in figures["stages"]}


def rates(figures: dict[str, Any]) -> dict[str, float | None]:
    return {f"{row['from']}>{row['to']}": row["rate"] for row in figures["conversion"]}


def stays(figures: dict[str, Any]) -> dict[str, tuple[int, float | None, float | None]]:
    return {row["stage"]: (row["samples"], row["median_seconds"], row["p90_seconds"])
            for row in figures["time_in_stage"]}


async def test_every_figure_of_the_whole_funnel(filled: Database) -> None:
    result = await report(filled)
    totals = result["totals"]
    assert result["funnel"] == ["anonymous", "known", "engaged", "mql", "sql", "contacted", "opportunity", "won"]
    assert result["window"] == {"from": None, "to": None} and result["groups"] == []
    # Furthest funnel rank per lead: L1 won, L2 contacted, L3 sql, L4 anonymous, L5 known, L7 opportunity,
    # L8 sql, L9 contacted, L10 mql (L6 merged away). A lead counts at every stage up to its furthest one.
    assert by_stage(totals, "reached") == {
        "anonymous": 9, "known": 8, "engaged": 7, "mql": 7, "sql": 6, "contacted": 4, "opportunity": 2, "won": 1,
        "lost": 1, "recycled": 3, "disqualified": 1}
    assert by_stage(totals, "current") == {
        "anonymous": 1, "known": 0, "engaged": 0, "mql": 2, "sql": 1, "contacted": 0, "opportunity": 0, "won": 1,
        "lost": 1, "recycled": 2, "disqualified": 1}
    assert rates(totals) == {"anonymous>known": 0.8889, "known>engaged": 0.875, "engaged>mql": 1.0,
                             "mql>sql": 0.8571, "sql>contacted": 0.6667, "contacted>opportunity": 0.5,
                             "opportunity>won": 0.5}
    assert totals["conversion"][4] == {"from": "sql", "to": "contacted", "entered": 6, "converted": 4,
                                       "rate": 0.6667}
    # Two transitions convert 50%: the first along the funnel is the leak point.
    assert totals["leak"] == {"from": "contacted", "to": "opportunity", "entered": 4, "converted": 2, "rate": 0.5}
    # Stays in minutes (the sql -> sql reassignment does not cut L1's sql stay):
    #   anonymous [30, 60]; known [1, 10, 20, 30, 60, 1440]; engaged [30, 60, 60]; mql [0, 1, 10, 10, 10, 20];
    #   sql [13, 15, 20, 60, 105]; contacted [2, 60, 70, 120]; opportunity [140, 300]
    # percentile_cont(p) interpolates at position p * (n - 1).
    assert stays(totals) == {
        "anonymous": (2, 45 * 60.0, 57 * 60.0),
        "known": (6, 25 * 60.0, 750 * 60.0),
        "engaged": (3, 60 * 60.0, 60 * 60.0),
        "mql": (6, 10 * 60.0, 15 * 60.0),
        "sql": (5, 20 * 60.0, 87 * 60.0),
        "contacted": (4, 65 * 60.0, 105 * 60.0),
        "opportunity": (2, 220 * 60.0, 284 * 60.0),
    }
    # First assignment -> contact: L1 60m (from ben's assignment, not anna's), L2 20m, L7 105m, L9 13m.
    assert totals["speed_to_lead"] == {"samples": 4, "p50_seconds": 2400.0, "p90_seconds": 5490.0}
    sla = totals["sla"]
    assert {k: sla[k] for k in ("met", "breached", "running", "stopped", "compliance")} == {
        "met": 2, "breached": 2, "running": 1, "stopped": 1, "compliance": 0.5}
    assert sla["by_rep"] == [
        {"rep_id": "anna", "name": "Anna Berg", "met": 0, "breached": 1, "running": 0, "stopped": 1, "compliance": 0.0},
        {"rep_id": "ben", "name": "Ben Okafor", "met": 1, "breached": 0, "running": 0, "stopped": 0, "compliance": 1.0},
        {"rep_id": "carl", "name": "Carl Jensen", "met": 0, "breached": 0, "running": 1, "stopped": 0,
         "compliance": None},
        {"rep_id": "dana", "name": "Dana Whitfield", "met": 1, "breached": 1, "running": 0, "stopped": 0,
         "compliance": 0.5},
    ]
    assert sla["by_team"] == [
        {"team": "emea", "met": 1, "breached": 1, "running": 0, "stopped": 1, "compliance": 0.5},
        {"team": "default", "met": 1, "breached": 1, "running": 1, "stopped": 0, "compliance": 0.5},
    ]
    assert totals["reject_reasons"] == [{"reason": "budget", "count": 2}, {"reason": "no authority", "count": 1}]
    # MQL rows in November: L1, L2 (twice), L3, L7, L8, L9; L10's is October's.
    assert totals["mql_this_month"] == 6
    # 6 MQLs after half the month: 12 forecast against 200.
    assert result["marketing_sla"] == {"month": "2026-11", "target": 200, "mql_so_far": 6, "elapsed_fraction": 0.5,
                                       "forecast": 12.0, "forecast_vs_target": 0.06, "on_track": False}


async def test_group_by_source(filled: Database) -> None:
    result = await report(filled, group_by="source")
    assert result["group_by"] == "source"
    assert [g["key"] for g in result["groups"]] == ["website", "segment"]  # more leads first
    website, segment = result["groups"]
    # website: L1 won, L2 contacted, L5 known, L7 opportunity, L10 mql
    assert by_stage(website, "reached") == {
        "anonymous": 5, "known": 5, "engaged": 4, "mql": 4, "sql": 3, "contacted": 3, "opportunity": 2, "won": 1,
        "lost": 1, "recycled": 1, "disqualified": 1}
    assert by_stage(website, "current") == {
        "anonymous": 0, "known": 0, "engaged": 0, "mql": 2, "sql": 0, "contacted": 0, "opportunity": 0, "won": 1,
        "lost": 1, "recycled": 0, "disqualified": 1}
    assert rates(website) == {"anonymous>known": 1.0, "known>engaged": 0.8, "engaged>mql": 1.0, "mql>sql": 0.75,
                              "sql>contacted": 1.0, "contacted>opportunity": 0.6667, "opportunity>won": 0.5}
    assert website["leak"] == {"from": "opportunity", "to": "won", "entered": 2, "converted": 1, "rate": 0.5}
    # website stays: mql [0 (L1), 10 (L2), 20 (L7)]; known [60 (L2), 10 (L5), 1440 (L10)]
    assert stays(website)["mql"] == (3, 600.0, 1080.0)
    assert stays(website)["known"] == (3, 3600.0, 69840.0)
    assert website["speed_to_lead"] == {"samples": 3, "p50_seconds": 3600.0, "p90_seconds": 5760.0}
    assert website["sla"] == {"met": 1, "breached": 2, "running": 0, "stopped": 0, "compliance": 0.3333}
    assert website["reject_reasons"] == [{"reason": "budget", "count": 1}]
    assert website["mql_this_month"] == 3
    # segment: L3 sql, L4 anonymous, L8 sql, L9 contacted
    assert by_stage(segment, "reached") == {
        "anonymous": 4, "known": 3, "engaged": 3, "mql": 3, "sql": 3, "contacted": 1, "opportunity": 0, "won": 0,
        "lost": 0, "recycled": 2, "disqualified": 0}
    assert rates(segment) == {"anonymous>known": 0.75, "known>engaged": 1.0, "engaged>mql": 1.0, "mql>sql": 1.0,
                              "sql>contacted": 0.3333, "contacted>opportunity": 0.0, "opportunity>won": None}
    assert segment["leak"] == {"from": "contacted", "to": "opportunity", "entered": 1, "converted": 0, "rate": 0.0}
    assert segment["speed_to_lead"] == {"samples": 1, "p50_seconds": 780.0, "p90_seconds": 780.0}
    assert segment["sla"] == {"met": 1, "breached": 0, "running": 1, "stopped": 1, "compliance": 1.0}
    assert segment["reject_reasons"] == [{"reason": "budget", "count": 1}, {"reason": "no authority", "count": 1}]
    assert segment["mql_this_month"] == 3
    # The totals do not change with grouping, nor when the queries run side by side on pooled connections.
    assert result["totals"] == (await report(filled))["totals"]
    assert result == await report(filled, group_by="source", connect=filled.read)


async def test_group_by_rep_and_campaign(filled: Database) -> None:
    result = await report(filled, group_by="rep")
    groups = {g["key"]: g for g in result["groups"]}
    # Owners: anna L1, L8; ben L2; carl L3; dana L7, L9; none: L4, L5, L10.
    assert set(groups) == {"anna", "ben", "carl", "dana", None}
    assert by_stage(groups["anna"], "reached")["sql"] == 2 and by_stage(groups["anna"], "reached")["won"] == 1
    assert groups["dana"]["speed_to_lead"] == {"samples": 2, "p50_seconds": 3540.0, "p90_seconds": 5748.0}
    assert groups[None]["sla"]["compliance"] is None and by_stage(groups[None], "reached")["anonymous"] == 3
    assert [g["key"] for g in result["groups"]][-1] in ("ben", "carl")  # one lead each: last
    campaigns = {g["key"]: g for g in (await report(filled, group_by="campaign"))["groups"]}
    # c1: L1, L2, L7, L9, L10; c2: L3, L5, L8; none: L4.
    assert {k: by_stage(g, "reached")["anonymous"] for k, g in campaigns.items()} == {"c1": 5, "c2": 3, None: 1}
    assert campaigns["c1"]["mql_this_month"] == 4 and campaigns["c2"]["mql_this_month"] == 2


async def test_window_on_stage_change_times(filled: Database) -> None:
    result = await report(filled, start=at(60), end=at(200))
    totals = result["totals"]
    assert result["window"] == {"from": at(60).isoformat(), "to": at(200).isoformat()}
    # Leads with a stage change in [T+60, T+200), at their furthest stage by T+200: L1 contacted,
    # L2 contacted, L3 sql, L7 sql, L8 sql (recycled@70). L4, L5, L9, L10 did not move in the window.
    assert by_stage(totals, "reached") == {
        "anonymous": 5, "known": 5, "engaged": 5, "mql": 5, "sql": 5, "contacted": 2, "opportunity": 0, "won": 0,
        "lost": 0, "recycled": 1, "disqualified": 0}
    # Last stage change in the window: L3 (sql@90), L8 (recycled@70).
    assert {k: v for k, v in by_stage(totals, "current").items() if v} == {"sql": 1, "recycled": 1}
    assert rates(totals)["sql>contacted"] == 0.4 and rates(totals)["opportunity>won"] is None
    assert totals["leak"] == {"from": "contacted", "to": "opportunity", "entered": 2, "converted": 0, "rate": 0.0}
    # Stays started in the window: engaged [60, 30]; mql [0, 10, 10, 20]; sql [60, 20, 105]; contacted [120, 70]
    assert stays(totals) == {
        "anonymous": (0, None, None), "known": (0, None, None),
        "engaged": (2, 2700.0, 3420.0), "mql": (4, 600.0, 1020.0), "sql": (3, 3600.0, 5760.0),
        "contacted": (2, 5700.0, 6900.0), "opportunity": (0, None, None)}
    # Contacted in the window: L1 (60m), L2 (20m).
    assert totals["speed_to_lead"] == {"samples": 2, "p50_seconds": 2400.0, "p90_seconds": 3360.0}
    # Clocks started in the window: L1 breached, L2 met, L3 running, L7 breached.
    sla = totals["sla"]
    assert (sla["met"], sla["breached"], sla["running"], sla["stopped"], sla["compliance"]) == (1, 2, 1, 0, 0.3333)
    assert {r["rep_id"]: r["compliance"] for r in sla["by_rep"]} == {"anna": 0.0, "ben": 1.0, "carl": None,
                                                                    "dana": 0.0}
    assert {t["team"]: t["compliance"] for t in sla["by_team"]} == {"emea": 0.5, "default": 0.0}
    assert totals["reject_reasons"] == [{"reason": "no authority", "count": 1}]
    assert totals["mql_this_month"] == 6  # the month is not windowed
    # Open-ended windows: from only, to only.
    assert by_stage((await report(filled, start=at(500)))["totals"], "reached") == {
        "anonymous": 2, "known": 2, "engaged": 2, "mql": 2, "sql": 2, "contacted": 2, "opportunity": 1, "won": 1,
        "lost": 0, "recycled": 0, "disqualified": 0}  # L1 won@600, L2 mql@1000 (furthest: contacted)
    assert by_stage((await report(filled, end=at(10)))["totals"], "reached")["anonymous"] == 3  # L1, L4, L10


async def test_empty_database_reports_zeros_and_nulls(db: Database) -> None:
    result = await report(db, group_by="team")
    totals = result["totals"]
    assert all(row["reached"] == 0 and row["current"] == 0 for row in totals["stages"])
    assert all(row["rate"] is None for row in totals["conversion"]) and totals["leak"] is None
    assert totals["speed_to_lead"] == {"samples": 0, "p50_seconds": None, "p90_seconds": None}
    assert totals["sla"]["compliance"] is None and len(totals["sla"]["by_rep"]) == 4
    assert totals["reject_reasons"] == [] and result["groups"] == []
    assert result["marketing_sla"]["forecast"] == 0.0 and result["marketing_sla"]["on_track"] is False


async def test_http_report_and_its_errors(database_url: str) -> None:
    async with api_client(database_url) as (client, container):
        await insert_fixture(container.db)
        r = await client.get("/v1/reports/funnel", params={"from": "2026-11-10T01:00:00Z", "to": "2026-11-10T03:20:00Z",
                                                           "group_by": "source"}, headers=TOKEN)
        assert r.status_code == 200, r.text
        body = r.json()
        expected = await report(container.db, start=at(60), end=at(200), group_by="source")
        for figures in (body["totals"], expected["totals"], *body["groups"], *expected["groups"]):
            figures.pop("mql_this_month")  # the service's month is the real one, not NOW's
        assert body["totals"] == expected["totals"] and body["groups"] == expected["groups"]
        assert body["window"] == expected["window"]
        assert (await client.get("/v1/reports/funnel?from=2026-11-10", headers=TOKEN)).json()["window"]["from"] \
            == "2026-11-10T00:00:00+00:00"
        bad_params = (({"from": "yesterday"}, "from"), ({"to": "2026-13-01"}, "to"),
                      ({"from": "2026-11-02", "to": "2026-11-01"}, "to"), ({"group_by": "country"}, "group_by"))
        for params, field in bad_params:
            bad = await client.get("/v1/reports/funnel", params=params, headers=TOKEN)
            assert bad.status_code == 422, params
            assert bad.json()["error"]["details"][0]["field"] == field
            assert field in bad.json()["error"]["message"]
        assert (await client.get("/v1/reports/funnel")).status_code == 401
        assert (await client.get("/v1/reports/funnel", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_dashboard_page_shows_the_numbers(database_url: str) -> None:
    async with api_client(database_url, demo=True) as (client, container):
        await insert_fixture(container.db)
        assert (await client.get("/dashboard")).status_code == 401
        r = await client.get("/dashboard", params={"token": "test-token", "group_by": "campaign"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        page = r.text
        # All time: the figures of test_every_figure_of_the_whole_funnel.
        assert 'id="reached-anonymous" data-value="9"' in page
        assert 'id="reached-won" data-value="1"' in page
        assert 'id="conv-sql-contacted" data-value="0.6667"' in page
        assert 'id="sla-compliance" data-value="0.5"' in page
        assert 'id="speed-p50" data-value="2400.0">40m<' in page
        assert 'id="leak-point" data-from="contacted" data-to="opportunity"' in page
        assert 'id="sla-rep-dana" data-value="0.5"' in page
        # L3 waits (its clock runs); L1 and L7 breached but were contacted, so they wait no more.
        assert 'id="awaiting-count" data-value="1"' in page and 'data-lead="L3"' in page
        assert 'href="/demo/inbox"' in page and 'name="token" value="test-token"' in page
        assert '<option value="campaign" selected>' in page and 'data-group="c1"' in page
        assert 'id="mql-target" data-value="200"' in page
        css = await client.get("/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await client.get("/static/dashboard.js")).status_code == 200
        for name in ("../reports.py", "nope.css", ".hidden.css", "dashboard.html"):
            assert (await client.get(f"/static/{name}")).status_code == 404, name
        assert (await client.get("/dashboard?token=test-token&from=soon")).status_code == 422
