"""GET /v1/reps and PUT /v1/reps/{rep_id}: load, availability, capacity overrides in rep_state."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from services.api.reps import in_hours
from services.config import Rep
from services.db.database import Database
from services.db.models import rep_state
from tests.support.leadfactory import T0, add_lead, bearer, sales_api

AUTH = bearer("test-token")


async def test_reps_show_teams_load_and_hours(database_url: str, db: Database) -> None:
    async with db.transaction() as conn:
        for stage in ("sql", "contacted", "won", "recycled"):
            await add_lead(conn, stage=stage, owner="anna", team="emea")
        await add_lead(conn, stage="sql", owner="carl", team="default")
        await add_lead(conn, stage="sql", owner="anna", merged_into="someone-else")
    async with sales_api(database_url) as (client, _):
        r = await client.get("/v1/reps", headers=AUTH)
    assert r.status_code == 200
    reps = {rep["id"]: rep for rep in r.json()["items"]}
    assert list(reps) == ["anna", "ben", "carl", "dana"]  # config order
    anna = reps["anna"]
    assert anna["open_leads"] == 2 and anna["free_capacity"] == 58  # sql + contacted only
    assert reps["carl"]["open_leads"] == 1 and reps["ben"]["open_leads"] == 0
    assert anna["team"] == "emea" and anna["teams"] == ["emea"] and reps["dana"]["team"] == "default"
    assert (anna["capacity"], anna["available"], anna["in_hours_now"]) == (60, True, True)
    assert anna["timezone"] == "Europe/Berlin" and anna["hours"] == "00:00-24:00" and len(anna["days"]) == 7
    assert anna["name"] == "Anna Berg" and anna["email"] == "anna@example.com"


async def test_put_overrides_and_resets(database_url: str, db: Database) -> None:
    async with sales_api(database_url) as (client, _):
        away = await client.put("/v1/reps/ben", json={"available": False}, headers=AUTH)
        smaller = await client.put("/v1/reps/ben", json={"capacity": 5}, headers=AUTH)
        listed = await client.get("/v1/reps", headers=AUTH)
        async with db.read() as conn:
            row = (await conn.execute(select(rep_state).where(rep_state.c.rep_id == "ben"))).mappings().one()
        reset = await client.put("/v1/reps/ben", json={"available": None}, headers=AUTH)
        unknown = await client.put("/v1/reps/zoe", json={"available": False}, headers=AUTH)
        empty = await client.put("/v1/reps/ben", json={}, headers=AUTH)
        negative = await client.put("/v1/reps/ben", json={"capacity": -1}, headers=AUTH)
        typo = await client.put("/v1/reps/ben", json={"availabel": False}, headers=AUTH)
        unauth = await client.put("/v1/reps/ben", json={"available": True})
    assert away.status_code == 200 and away.json()["available"] is False and away.json()["capacity"] == 60
    assert smaller.json()["capacity"] == 5 and smaller.json()["available"] is False  # earlier override kept
    ben = next(rep for rep in listed.json()["items"] if rep["id"] == "ben")
    assert (ben["available"], ben["capacity"]) == (False, 5)
    assert (row["available"], row["capacity"]) == (False, 5)  # what the router reads
    assert reset.json()["available"] is True
    assert reset.json()["overrides"] == {"available": None, "capacity": 5}
    assert unknown.status_code == 404 and "anna" in unknown.json()["error"]["message"]
    assert empty.status_code == 422 and negative.status_code == 422 and typo.status_code == 422
    assert negative.json()["error"]["details"][0]["field"] == "capacity"
    assert unauth.status_code == 401


def test_in_hours_uses_the_reps_wall_clock_across_dst() -> None:
    rep = Rep(id="r", timezone="Europe/Berlin", hours="09:00-17:00", days=["mon", "tue", "wed", "thu", "fri"])
    assert in_hours(rep, T0)  # Monday 09:00 UTC = 10:00 in Berlin (winter, UTC+1)
    assert not in_hours(rep, datetime(2026, 1, 5, 7, 30, tzinfo=UTC))  # 08:30 Berlin
    assert in_hours(rep, datetime(2026, 1, 5, 15, 59, tzinfo=UTC))  # 16:59 Berlin
    assert not in_hours(rep, datetime(2026, 1, 5, 16, 0, tzinfo=UTC))  # 17:00 Berlin: the end is open
    assert not in_hours(rep, datetime(2026, 1, 10, 10, 0, tzinfo=UTC))  # Saturday
    assert in_hours(rep, datetime(2026, 7, 6, 7, 0, tzinfo=UTC))  # summer, UTC+2: 09:00 Berlin
    assert not in_hours(rep, datetime(2026, 7, 6, 15, 0, tzinfo=UTC))  # 17:00 Berlin
    night = Rep(id="n", timezone="America/Los_Angeles", hours="00:00-24:00", days=["sun"])
    assert in_hours(night, datetime(2026, 1, 5, 7, 59, tzinfo=UTC))  # still Sunday 23:59 in LA
    assert not in_hours(night, datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
