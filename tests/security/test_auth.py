"""Nobody gets in without a key: every route is classified, and each refuses a caller without its key.

Routes are enumerated from the app itself (``app.routes``), so a route added later is either covered
by the prefix rules or fails ``test_every_route_is_classified`` until someone decides who may call it.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from tests.security.support import SOURCE_AUTH, classify, concrete, error_code, routes, whole_app
from tests.support.pipeline import API_TOKEN, WEBSITE_KEY

BAD_AUTHORIZATIONS = (
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong-token",
    f"Bearer {API_TOKEN}x",
    f"Bearer {API_TOKEN[:-1]}",
    f"Basic {base64.b64encode(f'{API_TOKEN}:'.encode()).decode()}",
    f"Token {API_TOKEN}",
    f"{API_TOKEN}",
    "Bearer \u00e9\u00e8",  # not ASCII
    f"Bearer {WEBSITE_KEY}",  # a source write key is not an API token
)


async def call(client: httpx.AsyncClient, method: str, path: str, authorization: str | None,
               query: str = "") -> httpx.Response:
    headers = {b"Content-Type": b"application/json"}
    if authorization is not None:
        headers[b"Authorization"] = authorization.encode("utf-8")  # raw bytes: non-ASCII too
    body = b'{"type": "contacted", "available": false}' if method in ("POST", "PUT", "PATCH") else None
    return await client.request(method, concrete(path) + query, headers=headers, content=body)


async def test_every_route_is_classified(tmp_path: Path) -> None:
    async with whole_app(tmp_path) as (_client, app):
        found = routes(app)
    unclassified = sorted({path for _m, path in found if classify(path) is None})
    assert not unclassified, (f"routes nobody decided the access of: {unclassified}; put them under a "
                              "token prefix or in a class of tests/security/support.py")
    protected = {path for _m, path in found if classify(path) == "token"}
    # The contract's protected families are all there (a rename would silently drop them from the test).
    for family in ("/v1/leads", "/v1/reports", "/v1/reps", "/dashboard"):
        assert any(p.startswith(family) for p in protected), f"no route under {family}"


async def test_token_routes_refuse_every_bad_authorization(tmp_path: Path) -> None:
    failures = []
    async with whole_app(tmp_path) as (client, app):
        targets = [(m, p) for m, p in routes(app) if classify(p) == "token"]
        assert len(targets) >= 6
        for method, path in targets:
            for authorization in BAD_AUTHORIZATIONS:
                for query in ("", "?token=wrong-token", f"?token={API_TOKEN}x"):
                    r = await call(client, method, path, authorization, query)
                    if r.status_code != 401 or error_code(r) != "unauthorized":
                        failures.append(f"{method} {path}{query} with {authorization!r}: {r.status_code} {r.text[:80]}")
                    elif "bearer" not in r.headers.get("www-authenticate", "").lower():
                        failures.append(f"{method} {path}: 401 without WWW-Authenticate: Bearer")
                    if API_TOKEN in r.text:
                        failures.append(f"{method} {path}: the answer echoes the API token")
            # The right token does get past authentication (so the refusals above are about the token).
            ok = await call(client, method, path, f"Bearer {API_TOKEN}")
            if ok.status_code == 401:
                failures.append(f"{method} {path}: refuses the valid token")
    assert not failures, "\n".join(failures[:30])


async def test_no_token_configured_means_nobody_gets_in(tmp_path: Path) -> None:
    async with whole_app(tmp_path, token=None, demo=False) as (client, app):
        targets = [(m, p) for m, p in routes(app) if classify(p) == "token"]
        statuses = {(m, p): (await call(client, m, p, f"Bearer {API_TOKEN}")).status_code for m, p in targets}
        statuses |= {(m, p + " (empty)"): (await call(client, m, p, "Bearer ")).status_code for m, p in targets}
        demo_routes = [p for _m, p in routes(app) if classify(p) == "demo"]
    assert targets and set(statuses.values()) == {401}, statuses
    assert not demo_routes, f"demo routes served outside demo mode: {demo_routes}"


async def test_ingest_and_crm_callback_refuse_without_their_keys(tmp_path: Path) -> None:
    body = b'{"event_id": "e1", "type": "page_view", "email": "jane@acme.com"}'
    failures = []
    async with whole_app(tmp_path) as (client, app):
        for method, path in routes(app):
            kind = classify(path)
            if kind not in ("source", "crm_signed"):
                continue
            for headers in ({}, {"Authorization": f"Bearer {API_TOKEN}"}, {"Authorization": "Bearer nope"},
                            {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()},
                            {"X-Handoff-Signature": "t=1,v1=00"}):
                targets = [concrete(path)]
                if path == "/webhooks/{source_id}":
                    targets = [f"/webhooks/{s}" for s in ("website", "segment", "hubspot", "mautic")]
                for target in targets:
                    r = await client.request(method, target, content=body,
                                             headers={"Content-Type": "application/json", **headers})
                    if r.status_code != 401:
                        failures.append(f"{method} {target} with {headers}: {r.status_code} {r.text[:100]}")
    assert SOURCE_AUTH
    assert not failures, "\n".join(failures[:30])
