"""``GET /dashboard``: one server-rendered page with the funnel, leak points, speed-to-lead, SLA
compliance per rep, the marketing volume SLA and the leads waiting for their first call.

::

    GET /dashboard?token=<API token>                       (or Authorization: Bearer <token>)
    GET /dashboard?token=...&from=2026-11-01&group_by=campaign
    GET /static/dashboard.css                              (the page's stylesheet and script; no token)

Every number is in the HTML (no JavaScript needed; the optional script only counts the time left
down). Numbers carry stable ids and ``data-value`` attributes (``id="mql-count"``, ``"speed-p50"``,
``"sla-compliance"``, ``"awaiting-count"``, ``"reached-<stage>"``, ``"conv-<from>-<to>"``,
``"sla-rep-<rep>"``, ...) for tests and scrapers. The template is ``services/templates/dashboard.html``
(``string.Template``); every value inserted is escaped here.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from importlib import resources
from string import Template
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.api.reports import parallel_reads, parse_group_by, parse_window
from services.events import utcnow
from services.http.auth import RequireToken
from services.http.deps import ContainerDep
from services.http.errors import ApiError
from services.reports import FUNNEL, GROUP_BY, OFF_FUNNEL, awaiting_contact, funnel_report

REFRESH_SECONDS = 60
AWAITING_ROWS = 15
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def human_duration(seconds: float | None) -> str:
    """``42s``, ``4m 05s``, ``2h 05m``, ``3d 4h``; ``—`` for no value; negative values keep their sign."""
    if seconds is None:
        return "—"
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s" if secs else f"{sign}{minutes}m"
    return f"{sign}{secs}s"


def stage_label(stage: str) -> str:
    return stage.upper() if stage in ("mql", "sql") else stage.capitalize()


def percent(rate: float | None, digits: int = 1) -> str:
    return "—" if rate is None else f"{rate * 100:.{digits}f}%"


def _num(value: Any) -> str:
    """A data-value attribute: the raw number, empty for none."""
    return "" if value is None else esc(value)


# ---------------------------------------------------------------------------------------------
# Sections (pure: report dicts in, HTML fragments out)
# ---------------------------------------------------------------------------------------------

def _kpi(css: str, title: str, big: str, sub: str) -> str:
    return f'    <article class="kpi {css}"><h3>{esc(title)}</h3><div class="big">{big}</div>{sub}</article>'


def kpi_cards(report: Mapping[str, Any], awaiting: Mapping[str, Any], first_touch: timedelta) -> str:
    totals, month = report["totals"], report["marketing_sla"]
    cards = []

    target, so_far, forecast = month["target"], month["mql_so_far"], month["forecast"]
    if target:
        state = "good" if month["on_track"] else ("warn" if forecast >= 0.8 * target else "bad")
        badge = ('<span class="badge good">on track</span>' if month["on_track"]
                 else '<span class="badge bad">behind</span>')
        fill, ahead = min(100.0, 100 * so_far / target), min(100.0, 100 * forecast / target)
        meter = (f'<div class="meter" title="so far and forecast against the target">'
                 f'<span class="forecast" style="width:{ahead:.1f}%"></span>'
                 f'<span style="width:{fill:.1f}%"></span></div>')
        sub = (f'<div class="sub">forecast <b id="mql-forecast" data-value="{_num(forecast)}">{forecast:g}</b> '
               f'by month end {badge}</div>{meter}')
    else:
        state, sub = "neutral", '<div class="sub">no monthly target (marketing_sla.mql_per_month)</div>'
    big = (f'<span id="mql-count" data-value="{so_far}">{so_far}</span>'
           f'<small> / <span id="mql-target" data-value="{target}">{target}</span></small>')
    cards.append(_kpi(state, f"MQLs in {month['month']}", big, sub))

    speed = totals["speed_to_lead"]
    p50, p90 = speed["p50_seconds"], speed["p90_seconds"]
    limit = first_touch.total_seconds()
    state = "neutral" if p50 is None else ("good" if (p90 or 0) <= limit else "warn" if p50 <= limit else "bad")
    big = f'<span id="speed-p50" data-value="{_num(p50)}">{human_duration(p50)}</span><small> median</small>'
    sub = (f'<div class="sub">p90 <b id="speed-p90" data-value="{_num(p90)}">{human_duration(p90)}</b> · '
           f'{speed["samples"]} contacted · SLA {human_duration(limit)}</div>')
    cards.append(_kpi(state, "Speed to lead", big, sub))

    sla = totals["sla"]
    compliance = sla["compliance"]
    state = ("neutral" if compliance is None else "good" if compliance >= 0.9
             else "warn" if compliance >= 0.7 else "bad")
    big = f'<span id="sla-compliance" data-value="{_num(compliance)}">{percent(compliance)}</span>'
    sub = (f'<div class="sub"><span id="sla-met" data-value="{sla["met"]}">{sla["met"]}</span> met · '
           f'<span id="sla-breached" data-value="{sla["breached"]}">{sla["breached"]}</span> breached · '
           f'<span id="sla-running" data-value="{sla["running"]}">{sla["running"]}</span> running</div>')
    cards.append(_kpi(state, "SLA compliance", big, sub))

    items = awaiting["items"]
    overdue = sum(1 for item in items if item["seconds_left"] < 0)
    state = "good" if not awaiting["count"] else ("bad" if overdue else "warn")
    big = f'<span id="awaiting-count" data-value="{awaiting["count"]}">{awaiting["count"]}</span><small> leads</small>'
    if items:
        urgent = items[0]["seconds_left"]
        detail = (f'{overdue} overdue' if overdue
                  else f'most urgent: {human_duration(urgent)} left')
        sub = f'<div class="sub" id="awaiting-urgent" data-value="{_num(urgent)}">{esc(detail)}</div>'
    else:
        sub = '<div class="sub">nobody is waiting for a first call</div>'
    cards.append(_kpi(state, "Awaiting first contact", big, sub))

    leak = totals["leak"]
    if leak is None:
        cards.append(_kpi("neutral", "Biggest leak", '<span id="leak-point">—</span>',
                          '<div class="sub">no leads in the window</div>'))
    else:
        big = (f'<span id="leak-point" data-from="{esc(leak["from"])}" data-to="{esc(leak["to"])}" '
               f'data-value="{_num(leak["rate"])}">{esc(stage_label(leak["from"]))} → '
               f'{esc(stage_label(leak["to"]))}</span>')
        sub = (f'<div class="sub">only <b>{percent(leak["rate"])}</b> move on '
               f'({leak["converted"]} of {leak["entered"]})</div>')
        cards.append(_kpi("bad leak", "Biggest leak", big, sub))
    return "\n".join(cards)


def funnel_chart(totals: Mapping[str, Any]) -> str:
    """Horizontal bars (pure HTML/CSS), one per funnel stage, with the conversion between them."""
    stages = {row["stage"]: row for row in totals["stages"]}
    top = max(1, max(stages[s]["reached"] for s in FUNNEL))
    leak = totals["leak"]
    conversion = {(row["from"], row["to"]): row for row in totals["conversion"]}
    rows = []
    for i, stage in enumerate(FUNNEL):
        row = stages[stage]
        width = 100 * row["reached"] / top
        outside = " outside" if width < 28 else ""
        label_left = f"calc({width:.1f}% + 8px)" if outside else "8px"
        rows.append(
            f'      <div class="stage-row"><span class="stage-name">{esc(stage_label(stage))}</span>'
            f'<div class="bar-track"><div class="bar" style="width:{width:.1f}%"></div>'
            f'<span class="bar-label{outside}" style="left:{label_left}">'
            f'<span id="current-{stage}" data-value="{row["current"]}">{row["current"]}</span> here now</span></div>'
            f'<span class="stage-count" id="reached-{stage}" data-value="{row["reached"]}">{row["reached"]}</span>'
            f'</div>')
        if i + 1 < len(FUNNEL):
            nxt = FUNNEL[i + 1]
            conv = conversion[(stage, nxt)]
            is_leak = leak is not None and (leak["from"], leak["to"]) == (stage, nxt)
            css = "conv leak" if is_leak else "conv"
            rows.append(
                f'      <div class="conv-row"><span class="{css}" id="conv-{stage}-{nxt}" '
                f'data-value="{_num(conv["rate"])}">↓ {percent(conv["rate"])} to {esc(stage_label(nxt))}</span></div>')
    off = " ".join(
        f'<span>{esc(stage)} <b id="reached-{stage}" data-value="{stages[stage]["reached"]}">'
        f'{stages[stage]["reached"]}</b></span>' for stage in OFF_FUNNEL)
    rows.append(f'      <div class="off-funnel">{off}</div>')
    return "\n".join(rows)


def _compliance_cell(rate: float | None, dom_id: str) -> str:
    css = "" if rate is None or rate >= 0.9 else (" warn" if rate >= 0.7 else " bad")
    bar = (f'<span class="mini"><span class="{css.strip()}" style="width:{(rate or 0) * 100:.0f}%"></span></span>'
           if rate is not None else "")
    return f'<td class="num"><span id="{esc(dom_id)}" data-value="{_num(rate)}">{percent(rate, 0)}</span>{bar}</td>'


def sla_table(sla: Mapping[str, Any]) -> str:
    head = ('      <table><thead><tr><th>Rep</th><th class="num">Met</th><th class="num">Breached</th>'
            '<th class="num">Running</th><th class="num">Compliance</th></tr></thead><tbody>')
    rows = [head]
    for rep in sla["by_rep"]:
        rep_id = rep["rep_id"]
        name = (rep["name"] or rep_id) if rep_id is not None else "fallback queue"
        cell = _compliance_cell(rep["compliance"], f"sla-rep-{rep_id or 'none'}")
        rows.append(f'      <tr><td>{esc(name)}</td><td class="num">{rep["met"]}</td>'
                    f'<td class="num">{rep["breached"]}</td><td class="num">{rep["running"]}</td>{cell}</tr>')
    for team in sla["by_team"]:
        label = f"team {team['team']}" if team["team"] is not None else "no team"
        cell = _compliance_cell(team["compliance"], f"sla-team-{team['team'] or 'none'}")
        rows.append(f'      <tr class="team"><td><i>{esc(label)}</i></td><td class="num">{team["met"]}</td>'
                    f'<td class="num">{team["breached"]}</td><td class="num">{team["running"]}</td>{cell}</tr>')
    rows.append("      </tbody></table>")
    return "\n".join(rows)


def stay_table(totals: Mapping[str, Any]) -> str:
    rows = ['      <table><thead><tr><th>Stage</th><th class="num">Stays</th><th class="num">Median</th>'
            '<th class="num">p90</th></tr></thead><tbody>']
    for row in totals["time_in_stage"]:
        stage = row["stage"]
        rows.append(
            f'      <tr><td>{esc(stage_label(stage))}</td><td class="num">{row["samples"]}</td>'
            f'<td class="num" id="stay-{stage}-median" data-value="{_num(row["median_seconds"])}">'
            f'{human_duration(row["median_seconds"])}</td>'
            f'<td class="num" id="stay-{stage}-p90" data-value="{_num(row["p90_seconds"])}">'
            f'{human_duration(row["p90_seconds"])}</td></tr>')
    rows.append("      </tbody></table>")
    return "\n".join(rows)


def awaiting_table(awaiting: Mapping[str, Any], token_query: str) -> str:
    items: Sequence[Mapping[str, Any]] = awaiting["items"]
    if not items:
        return '      <p class="empty">No lead is waiting for a first contact.</p>'
    rows = ['      <table id="awaiting"><thead><tr><th>Lead</th><th>Owner</th><th>Team</th>'
            '<th class="num">Score</th><th>Due</th><th class="num">Time left</th></tr></thead><tbody>']
    for item in items[:AWAITING_ROWS]:
        left = item["seconds_left"]
        css = ' class="overdue"' if left < 0 else ""
        left_text = f"{human_duration(left)} overdue" if left < 0 else human_duration(left)
        soon = " soon" if 0 <= left < 600 else ""
        link = f'/v1/leads/{esc(item["lead_id"])}{token_query}'
        due = datetime.fromisoformat(item["due_at"])
        rows.append(
            f'      <tr{css} data-lead="{esc(item["lead_id"])}"><td><a href="{link}">'
            f'{esc(item["email"] or item["lead_id"][:12])}</a></td><td>{esc(item["owner"] or "queue")}</td>'
            f'<td>{esc(item["team"] or "")}</td><td class="num">{item["total"]:.0f}</td>'
            f'<td><time datetime="{esc(item["due_at"])}">{due:%b %d %H:%M} UTC</time></td>'
            f'<td class="num left{soon}" data-due="{esc(item["due_at"])}" data-value="{_num(left)}">'
            f'{esc(left_text)}</td></tr>')
    rows.append("      </tbody></table>")
    if awaiting["count"] > min(len(items), AWAITING_ROWS):
        rows.append(f'      <p class="more">and {awaiting["count"] - min(len(items), AWAITING_ROWS)} more '
                    f'(GET /v1/leads?stage=sql)</p>')
    return "\n".join(rows)


def leaks_table(report: Mapping[str, Any]) -> str:
    groups = report["groups"]
    if not groups:
        return '      <p class="empty">No leads in the window.</p>'
    rows = ['      <table id="leaks"><thead><tr><th>Group</th><th class="num">Leads</th><th class="num">MQL</th>'
            '<th class="num">SQL</th><th class="num">Won</th><th>Leak point</th><th class="num">Converts</th>'
            '<th class="num">Speed p50</th></tr></thead><tbody>']
    for group in groups:
        reached = {row["stage"]: row["reached"] for row in group["stages"]}
        leak = group["leak"]
        key = group["key"]
        leak_text = f'{stage_label(leak["from"])} → {stage_label(leak["to"])}' if leak else "—"
        rows.append(
            f'      <tr data-group="{esc(key)}"><td>{esc(key if key is not None else "(none)")}</td>'
            f'<td class="num">{reached["anonymous"]}</td><td class="num">{reached["mql"]}</td>'
            f'<td class="num">{reached["sql"]}</td><td class="num">{reached["won"]}</td>'
            f'<td>{esc(leak_text)}</td><td class="num">{percent(leak["rate"]) if leak else "—"}</td>'
            f'<td class="num">{human_duration(group["speed_to_lead"]["p50_seconds"])}</td></tr>')
    rows.append("      </tbody></table>")
    return "\n".join(rows)


def rejects_chart(totals: Mapping[str, Any]) -> str:
    reasons = totals["reject_reasons"]
    if not reasons:
        return '      <p class="empty">No rejections in the window.</p>'
    top = max(r["count"] for r in reasons)
    rows = []
    for r in reasons[:10]:
        reason = r["reason"] if r["reason"] is not None else "(no reason)"
        rows.append(f'      <div class="reason-row"><span>{esc(reason)}</span><div class="bar-track">'
                    f'<div class="bar" style="width:{100 * r["count"] / top:.1f}%"></div></div>'
                    f'<span class="stage-count" data-reason="{esc(reason)}">{r["count"]}</span></div>')
    return "\n".join(rows)


def render_dashboard(report: Mapping[str, Any], awaiting: Mapping[str, Any], *, first_touch: timedelta,
                     demo: bool, token: str | None, group_by: str) -> str:
    """The whole page (pure: no I/O)."""
    template = Template(resources.files("services").joinpath("templates/dashboard.html").read_text("utf-8"))
    token_query = f"?{urlencode({'token': token})}" if token else ""
    start, end = report["window"]["from"], report["window"]["to"]
    if start or end:
        window_text = f"Stage changes from {start[:10] if start else 'the beginning'} " \
                      f"to {end[:10] + ' (exclusive)' if end else 'now'}"
    else:
        window_text = "All time"
    report_query = urlencode({k: v for k, v in (("from", (start or "")[:10]), ("to", (end or "")[:10]),
                                                  ("group_by", group_by), ("token", token or "")) if v})
    links = [f'<a href="/v1/reports/funnel?{esc(report_query)}">JSON report</a>', '<a href="/metrics">metrics</a>']
    if demo:
        links.insert(0, '<a href="/demo/inbox" id="demo-inbox">demo inbox</a>')
    generated = datetime.fromisoformat(report["generated_at"])
    return template.substitute(
        refresh_seconds=REFRESH_SECONDS,
        css_version=_static_version("dashboard.css"),
        js_version=_static_version("dashboard.js"),
        token_field=f'<input type="hidden" name="token" value="{esc(token)}">' if token else "",
        from_value=esc((start or "")[:10]),
        to_value=esc((end or "")[:10]),
        group_options="".join(f'<option value="{g}"{" selected" if g == group_by else ""}>{g}</option>'
                              for g in GROUP_BY),
        group_label=esc(group_by),
        links=" ".join(links),
        window_text=esc(window_text),
        generated_iso=esc(report["generated_at"]),
        generated_text=f"{generated:%Y-%m-%d %H:%M:%S} UTC",
        kpis=kpi_cards(report, awaiting, first_touch),
        funnel=funnel_chart(report["totals"]),
        sla_reps=sla_table(report["totals"]["sla"]),
        stays=stay_table(report["totals"]),
        awaiting=awaiting_table(awaiting, token_query),
        leaks=leaks_table(report),
        rejects=rejects_chart(report["totals"]),
    )


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------

def _static_version(name: str) -> str:
    """A digest of the file, appended to its URL: browsers refetch it when it changes."""
    return hashlib.sha256(_static_file(name)[0]).hexdigest()[:10]


def _static_file(name: str) -> tuple[bytes, str]:
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        raise ApiError(404, "not_found", f"no static file {name!r}")
    path = resources.files("services").joinpath("static").joinpath(name)
    if not path.is_file():
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return path.read_bytes(), STATIC_TYPES[suffix]


def build_router() -> APIRouter:
    router = APIRouter(tags=["dashboard"])

    @router.get("/dashboard", response_class=HTMLResponse, dependencies=[RequireToken],
                summary="The funnel dashboard (HTML); the token may also be passed as ?token=",
                responses={422: {"description": "a bad from/to or group_by"}})
    async def dashboard(
        request: Request,
        container: ContainerDep,
        start: Annotated[str | None, Query(alias="from", description="inclusive; date or ISO time")] = None,
        end: Annotated[str | None, Query(alias="to", description="exclusive; date or ISO time")] = None,
        group_by: Annotated[str | None, Query(description="leak points by source | campaign | team | rep")] = None,
    ) -> HTMLResponse:
        begin, finish = parse_window(start, end)
        grouping = parse_group_by(group_by) or "source"
        now = utcnow()
        async with container.db.read() as conn:
            report = await funnel_report(conn, container.config, start=begin, end=finish, group_by=grouping,
                                         now=now, connect=parallel_reads(container))
            waiting = await awaiting_contact(conn, now=now, limit=AWAITING_ROWS)
        page = render_dashboard(report, waiting, first_touch=container.config.sla.first_touch,
                                demo=container.demo, token=request.query_params.get("token") or None,
                                group_by=grouping)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        body, media_type = _static_file(name)
        return Response(body, media_type=media_type, headers={"Cache-Control": "public, max-age=300"})

    return router
