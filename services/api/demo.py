"""The demo inbox: stand-in CRM and alert receivers, mounted only by ``handoff up`` in demo mode.

The packaged example config points ``crm.url`` and the ``alerts`` sinks at this process, so a newcomer
sees leads arrive with no other system::

    POST /demo/inbox/crm        (also alerts | pagerduty | slack)  any JSON body -> 200 {"ok": true}
    GET  /demo/inbox            an HTML page: the latest 100 items per channel, newest first
    GET  /demo/inbox.json?channel=crm&after=41   the items as JSON (``after``: only ids above it)

No bearer token: it plays the part of a third-party receiver listening on loopback. Headers are
stored without ``Authorization``/``Cookie``. CRM pushes are checked against the CRM signing secret,
and the result is shown (``x-demo-signature-check``), as a real receiver would check it.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api.feedback import MAX_BODY_BYTES, crm_secrets, read_body
from services.db.models import demo_inbox
from services.events import utcnow
from services.http.deps import ContainerDep
from services.http.errors import ApiError
from services.leads import iso
from services.runtime import Container
from services.signing import SIGNATURE_HEADER, verify

CHANNELS = ("crm", "alerts", "pagerduty", "slack")
PAGE_ITEMS = 100
MAX_ID = 2**63 - 1  # the largest BIGINT: the id columns' range on both databases
DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
SIGNATURE_CHECK = "x-demo-signature-check"
MAX_SHOWN_BODY = 20_000


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise ApiError(404, "unknown_channel", f"no demo inbox {channel!r}; channels: {', '.join(CHANNELS)}")


def signature_check(container: Container, raw: bytes, header: str | None) -> str:
    """What a CRM receiver would conclude about a push's ``X-Handoff-Signature``."""
    crm = container.config.crm
    secrets = crm_secrets(crm) if crm is not None else []
    if not secrets:
        return "not checked: no CRM signing secret configured"
    problem = verify(raw, header, secrets, now=time.time())
    return "valid" if problem is None else f"invalid: {problem}"


def item_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {"id": row["id"], "channel": row["channel"], "received_at": iso(row["received_at"]),
            "headers": row["headers"], "body": row["body"]}


async def latest(conn: AsyncConnection, channel: str, limit: int = PAGE_ITEMS,
                 after: int | None = None) -> list[dict[str, Any]]:
    query = select(demo_inbox).where(demo_inbox.c.channel == channel)
    if after is not None:
        query = query.where(demo_inbox.c.id > after)
    rows = (await conn.execute(query.order_by(demo_inbox.c.id.desc()).limit(limit))).mappings().all()
    return [item_json(r) for r in rows]


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def summary(channel: str, body: Any, headers: Mapping[str, Any]) -> str:
    """One line saying what an item is, so the page reads without opening every body."""
    if channel == "crm":
        lead = _get(body, "lead") or {}
        who = _get(lead, "email") or next(iter(_get(lead, "emails") or []), None) or _get(lead, "id")
        rep = _get(body, "assignment", "rep_id") or "fallback queue"
        due = _get(body, "sla", "due_at")
        text = f"lead {who} -> {rep}" + (f", first touch due {due}" if due else "")
        key = headers.get("idempotency-key")
        return text + (f" [Idempotency-Key {key}]" if key else "")
    if channel == "alerts":
        parts = [_get(body, "kind"), _get(body, "lead_id"), _get(body, "rep_id"), _get(body, "due_at")]
        return " ".join(str(p) for p in parts if p)
    if channel == "pagerduty":
        parts = [_get(body, "event_action"), _get(body, "dedup_key"), _get(body, "payload", "summary")]
        return " ".join(str(p) for p in parts if p)
    if channel == "slack":
        return str(_get(body, "text") or "")
    return ""


def _pretty(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()
    return text if len(text) <= MAX_SHOWN_BODY else text[:MAX_SHOWN_BODY] + "\n... (cut; see inbox.json)"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;padding:0 1rem;color:#1d2733}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ccd}
table{border-collapse:collapse;width:100%}td,th{padding:.35rem .5rem;border-bottom:1px solid #eef;
text-align:left;vertical-align:top;font-size:.9rem}th{background:#f4f6fa}pre{white-space:pre-wrap;
word-break:break-all;font-size:.8rem;background:#f8f9fb;padding:.5rem;margin:.3rem 0}
.muted{color:#66707c}.bad{color:#a4161a}.ok{color:#1b7f3b}nav a{margin-right:1rem}
"""


def render_page(items: Mapping[str, list[dict[str, Any]]], now: datetime) -> str:
    """The inbox as one readable, script-free HTML page; every value is escaped."""
    e = html.escape
    out = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
           "<meta name=viewport content='width=device-width,initial-scale=1'>",
           f"<title>Demo inbox</title><style>{_STYLE}</style></head><body>",
           "<h1>Demo inbox</h1>",
           "<p class=muted>What the built-in stand-in CRM and alert receivers got, newest first "
           f"(latest {PAGE_ITEMS} per channel; page built {e(iso(now) or '')}; reload to refresh). "
           "As JSON: <a href='/demo/inbox.json?channel=crm'>/demo/inbox.json?channel=crm</a>.</p>",
           "<nav>" + "".join(f"<a href='#{c}'>{c} ({len(items.get(c, []))})</a>" for c in CHANNELS),
           "</nav>"]
    for channel in CHANNELS:
        rows = items.get(channel, [])
        out.append(f"<h2 id={channel}>{e(channel)} <span class=muted>({len(rows)})</span></h2>")
        if not rows:
            out.append("<p class=muted>Nothing received yet.</p>")
            continue
        out.append("<table><tr><th>#</th><th>received</th><th>what</th></tr>")
        for item in rows:
            headers = item["headers"] if isinstance(item["headers"], Mapping) else {}
            check = headers.get(SIGNATURE_CHECK)
            badge = ""
            if check:
                css = "ok" if check == "valid" else "bad" if str(check).startswith("invalid") else "muted"
                badge = f" <span class={css}>signature {e(str(check))}</span>"
            out.append(
                f"<tr><td>{item['id']}</td><td>{e(str(item['received_at']))}</td><td>"
                f"{e(summary(channel, item['body'], headers))}{badge}"
                f"<details><summary>body</summary><pre>{e(_pretty(item['body']))}</pre></details>"
                f"<details><summary>headers</summary><pre>{e(_pretty(headers))}</pre></details>"
                "</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "".join(out)


def build_router() -> APIRouter:
    router = APIRouter(tags=["demo"])

    @router.post("/demo/inbox/{channel}", summary="Demo receiver: stores what it gets",
                 responses={404: {"description": "unknown channel"}, 413: {"description": "body over 1 MiB"}})
    async def receive(channel: str, request: Request, container: ContainerDep) -> dict[str, bool]:
        _check_channel(channel)
        raw = await read_body(request, MAX_BODY_BYTES)
        body = _parse_json(raw)
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in DROPPED_HEADERS}
        if channel == "crm":
            headers[SIGNATURE_CHECK] = signature_check(container, raw, request.headers.get(SIGNATURE_HEADER))
        async with container.db.transaction() as conn:
            await conn.execute(demo_inbox.insert().values(channel=channel, headers=headers, body=body,
                                                          received_at=utcnow()))
        return {"ok": True}

    @router.get("/demo/inbox", response_class=HTMLResponse, summary="Demo inbox page")
    async def page(container: ContainerDep) -> HTMLResponse:
        async with container.db.read() as conn:
            items = {channel: await latest(conn, channel) for channel in CHANNELS}
        return HTMLResponse(render_page(items, utcnow()))

    @router.get("/demo/inbox.json", response_model=None, summary="Demo inbox items as JSON")
    async def items_json(
        container: ContainerDep,
        channel: Annotated[str | None, Query(description="crm | alerts | pagerduty | slack")] = None,
        # Ids are 64-bit: a larger ``after`` is refused (422), not passed to a database that cannot take it.
        after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="only items with a greater id")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = PAGE_ITEMS,
    ) -> dict[str, Any]:
        channels: tuple[str, ...] = CHANNELS
        if channel:
            _check_channel(channel)
            channels = (channel,)
        async with container.db.read() as conn:
            found = [item for c in channels for item in await latest(conn, c, limit, after)]
        found.sort(key=lambda item: item["id"], reverse=True)
        return {"items": found[:limit]}

    return router


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_body", f"the demo inbox takes JSON; this is not: {exc}") from None
