"""Size and depth limits on every endpoint that takes a body: 413 over 1 MiB (declared, chunked or
gzip-inflated), a 4xx for JSON nested too deep, a 4xx for NUL characters, and never a 5xx.

The body-taking routes are found in the app (every POST/PUT/PATCH), each called with the credential
it needs, so that the limit (not the authentication) is what refuses.
"""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

from services.signing import sign
from tests.security.support import classify, concrete, error_code, routes, whole_app
from tests.support.pipeline import API_TOKEN, SEGMENT_KEY, TEST_SECRETS, WEBSITE_KEY

LIMIT = 1024 * 1024


def credentials(path: str, body: bytes) -> dict[str, str]:
    """The headers that get ``body`` past authentication on ``path``."""
    kind = classify(path)
    if kind == "token":
        return {"Authorization": f"Bearer {API_TOKEN}"}
    if path == "/webhooks/crm/{crm}":
        return {"X-Handoff-Signature": sign(body, TEST_SECRETS["CRM_SIGNING_SECRET"], int(time.time()))}
    if path == "/webhooks/{source_id}":  # the generic "website" source
        return {"X-Handoff-Signature": sign(body, WEBSITE_KEY, int(time.time()))}
    if path.startswith("/v1/touchpoints"):
        return {"Authorization": f"Bearer {WEBSITE_KEY}"}
    if kind == "source":  # Segment: HTTP Basic with the write key as user name
        return {"Authorization": "Basic " + base64.b64encode(f"{SEGMENT_KEY}:".encode()).decode()}
    return {}


def nested(depth: int) -> bytes:
    return b'{"type": "page_view", "email": "a@b.co", "properties": ' + b'{"a": ' * depth + b"1" \
        + b"}" * depth + b"}"


async def test_bodies_over_1_mib_are_refused_413_everywhere(tmp_path: Path) -> None:
    big = b'{"type": "page_view", "pad": "' + b"x" * LIMIT + b'"}'
    failures = []
    async with whole_app(tmp_path / "a", run_tasks=True) as (client, app):
        targets = [(m, p) for m, p in routes(app) if m in ("POST", "PUT", "PATCH")]
        assert len(targets) >= 10, targets
        for method, path in targets:
            headers = {"Content-Type": "application/json", **credentials(path, big)}
            declared = await client.request(method, concrete(path), content=big, headers=headers)

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(big), 64 * 1024):
                    yield big[start:start + 64 * 1024]

            streamed = await client.request(method, concrete(path), content=chunks(), headers=headers)
            for how, r in (("declared", declared), ("chunked", streamed)):
                if r.status_code != 413 or error_code(r) is None:
                    failures.append(f"{method} {path} ({how}): {r.status_code} {r.text[:100]}")
        bomb = gzip.compress(b'{"type": "page_view", "pad": "' + b"0" * (8 * LIMIT) + b'"}')
        r = await client.post("/v1/touchpoints", content=bomb, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip", **credentials("/v1/touchpoints", bomb)})
        if r.status_code != 413:
            failures.append(f"gzip bomb ({len(bomb)} bytes inflating to 8 MiB): {r.status_code}")
        # Just under the limit is not refused for its size.
        small = b'{"type": "page_view", "email": "a@b.co", "properties": {"pad": "' + b"x" * (LIMIT - 200) + b'"}}'
        r = await client.post("/v1/touchpoints", content=small, headers=credentials("/v1/touchpoints", small))
        if r.status_code == 413:
            failures.append("a body under 1 MiB was refused 413")
    assert not failures, "\n".join(failures)


async def test_deep_json_and_nul_characters_get_a_4xx_never_a_5xx(tmp_path: Path) -> None:
    cases = {"depth 33": nested(33), "depth 5000": nested(5000), "depth 100000 (a list bomb)": b"[" * 100_000,
             "NUL in a string": b'{"type": "page_view", "email": "a@b.co", "reason": "x\\u0000y", '
                                b'"properties": {"k\\u0000": "v"}}'}
    failures = []
    async with whole_app(tmp_path / "b", run_tasks=True) as (client, app):
        for method, path in [(m, p) for m, p in routes(app) if m in ("POST", "PUT", "PATCH")]:
            for name, body in cases.items():
                headers = {"Content-Type": "application/json", **credentials(path, body)}
                r = await client.request(method, concrete(path), content=body, headers=headers)
                if classify(path) == "demo" and name in ("depth 33", "NUL in a string") and r.status_code < 300:
                    continue  # the demo inbox is a sink that keeps any JSON it gets (up to orjson's depth)
                if not 400 <= r.status_code < 500 or error_code(r) is None:
                    failures.append(f"{method} {path} with {name}: {r.status_code} {r.text[:100]}")
        # Ingest's own limit: 32 levels pass, 33 do not.
        for depth, want in ((31, 202), (32, 400)):
            body = nested(depth)
            r = await client.post("/v1/touchpoints", content=body, headers=credentials("/v1/touchpoints", body))
            if r.status_code != want:
                failures.append(f"/v1/touchpoints at depth {depth + 1}: {r.status_code} {r.text[:100]}, "
                                f"expected {want}")
    assert not failures, "\n".join(failures)


async def test_oversized_headers_and_query_strings_do_not_5xx(tmp_path: Path) -> None:
    async with whole_app(tmp_path / "c") as (client, _app):
        long = "x" * 30_000  # httpx refuses URLs past 65536 characters
        answers = [
            await client.post("/v1/touchpoints", content=b"{}", headers={"Authorization": "Bearer " + long}),
            await client.post("/webhooks/website", content=b"{}", headers={"X-Handoff-Signature": long}),
            await client.get("/v1/leads", params={"email": long}, headers={"Authorization": f"Bearer {API_TOKEN}"}),
            await client.get("/v1/leads", params={"cursor": long}, headers={"Authorization": f"Bearer {API_TOKEN}"}),
            await client.get("/v1/reports/funnel", params={"from": long},
                             headers={"Authorization": f"Bearer {API_TOKEN}"}),
        ]
    assert all(r.status_code < 500 for r in answers), [(r.status_code, r.text[:100]) for r in answers]


def test_nested_builds_the_depth_it_says() -> None:
    from ingest.body import json_depth

    assert json_depth(orjson.loads(nested(31))) == 32


async def test_nul_characters_never_reach_postgresql(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL refuses NUL in text: a NUL in a path, a query or a body must be a 400, not a 500."""
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with whole_app(tmp_path, database_url=pg_url) as (client, _app):
        answers = {
            "query": await client.get("/v1/leads", params={"email": "a\x00b@x.com"}, headers=auth),
            "query filter": await client.get("/v1/leads", params={"owner": "an\x00na"}, headers=auth),
            "report query": await client.get("/v1/reports/funnel", params={"group_by": "source\x00"}, headers=auth),
            "path": await client.get("/v1/leads/ab%00c", headers=auth),
            "rep path": await client.put("/v1/reps/an%00na", json={"available": False}, headers=auth),
            "feedback body": await client.post("/v1/leads/x/feedback", headers=auth, json={
                "type": "rejected", "reason": "no\x00pe", "rep_id": "anna"}),
            "touchpoint body": await client.post("/v1/touchpoints", headers=credentials("/v1/touchpoints", b""),
                                                 json={"type": "page_view", "email": "a@b.co",
                                                       "properties": {"path": "/x\x00"}}),
        }
    bad = {name: (r.status_code, r.text[:120]) for name, r in answers.items() if r.status_code != 400}
    assert not bad, bad
