"""Reading the lead document (``GET /v1/leads/{id}``) for CRM adapters, and rendering its context.

The document is a plain dict: ``id``, ``emails``, ``user_ids``, ``anonymous_ids``, ``company_domain``,
``traits``, ``score {fit, engagement, total, breakdown: [{rule, points, at}]}``, ``stage``,
``stage_history``, ``touchpoints``, ``assignment {rep_id, team, reason, assigned_at}``,
``sla {due_at, state, ...}``. Every reader here tolerates missing or oddly typed parts: a CRM push
should carry what there is, not fail on what is not::

    render_timeline(lead)        # the text a rep reads in the CRM note / task
    person(lead).last_name       # "Doe"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


class LeadDocumentError(ValueError):
    """The lead document lacks something a CRM adapter cannot do without (says what and why)."""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def text_of(value: Any) -> str:
    return "" if value is None else str(value).strip()


def lead_id(lead: Mapping[str, Any]) -> str:
    value = text_of(lead.get("id"))
    if not value:
        raise LeadDocumentError("the lead document has no 'id'; pass the document of GET /v1/leads/{id}")
    return value


def traits(lead: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(lead.get("traits"))


def score(lead: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(lead.get("score"))


def assignment(lead: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(lead.get("assignment"))


def sla(lead: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(lead.get("sla"))


def primary_email(lead: Mapping[str, Any]) -> str | None:
    for candidate in [*_list(lead.get("emails")), traits(lead).get("email")]:
        text = text_of(candidate).lower()
        if "@" in text:
            return text
    return None


def _trait(lead: Mapping[str, Any], *names: str) -> str:
    found = traits(lead)
    return next((text_of(found[n]) for n in names if text_of(found.get(n))), "")


@dataclass(frozen=True)
class Person:
    first_name: str
    last_name: str
    company: str
    title: str
    country: str


def person(lead: Mapping[str, Any]) -> Person:
    first = _trait(lead, "first_name", "firstName", "firstname")
    last = _trait(lead, "last_name", "lastName", "lastname")
    full = _trait(lead, "name")
    if full and not (first or last):
        first, _, last = full.rpartition(" ") if " " in full else ("", "", full)
    company = _trait(lead, "company", "company_name") or text_of(lead.get("company_domain"))
    return Person(first, last, company, _trait(lead, "title", "job_title"), _trait(lead, "country"))


def _fmt_points(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return text_of(value) or "?"
    return f"{number:+g}"


def _fmt_number(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return text_of(value) or "?"


def _touchpoint_line(touchpoint: Any) -> str:
    tp = _map(touchpoint)
    props = _map(tp.get("properties"))
    detail = next((text_of(props[k]) for k in ("path", "url", "form", "title", "name") if text_of(props.get(k))), "")
    if not detail and props:
        detail = orjson.dumps(props, default=str).decode()[:80]
    where = ", ".join(x for x in (text_of(tp.get("source")), text_of(tp.get("campaign"))) if x)
    when, kind = text_of(tp.get("occurred_at")) or "?", text_of(tp.get("type")) or "?"
    parts = [when, kind, detail, f"[{where}]" if where else ""]
    return "  " + " ".join(p for p in parts if p)


def _stage_line(entry: Any) -> str:
    item = _map(entry)
    stage = text_of(item.get("stage") or item.get("to"))
    cause = text_of(item.get("cause") or item.get("reason"))
    return "  " + " ".join(p for p in (text_of(item.get("at")) or "?", stage, f"({cause})" if cause else "") if p)


def render_timeline(lead: Mapping[str, Any], limit: int = 30000) -> str:
    """The context a rep needs, as plain text of at most ``limit`` characters.

    Who (identity and traits), why they are hot (score and its breakdown), how they got here (stage
    history), what they did (touchpoints, oldest first), and the assignment with its SLA due time.
    When too long, the oldest touchpoints are left out and the text says how many.
    """
    who = primary_email(lead) or text_of(lead.get("id"))
    info = person(lead)
    name = " ".join(x for x in (info.first_name, info.last_name) if x)
    lines = [f"Lead {text_of(lead.get('id'))}: {' '.join(x for x in (name, f'<{who}>') if x)}"]
    profile = ", ".join(x for x in (info.title, info.company, info.country) if x)
    if profile:
        lines.append(profile)
    given = assignment(lead)
    if given:
        lines.append(
            f"Assigned to {text_of(given.get('rep_id')) or 'nobody'} (team {text_of(given.get('team')) or '-'}) "
            f"at {text_of(given.get('assigned_at')) or '?'}: {text_of(given.get('reason')) or 'no reason given'}"
        )
    due = text_of(sla(lead).get("due_at"))
    if due:
        lines.append(f"First touch due by {due}")
    points = score(lead)
    lines += [
        "",
        f"Score {_fmt_number(points.get('total'))} (fit {_fmt_number(points.get('fit'))}, "
        f"engagement {_fmt_number(points.get('engagement'))}):",
    ]
    for item in _list(points.get("breakdown")):
        entry = _map(item)
        at = text_of(entry.get("at"))
        rule = text_of(entry.get("rule")) or "?"
        lines.append(f"  {_fmt_points(entry.get('points'))} {rule}" + (f" ({at})" if at else ""))
    history = _list(lead.get("stage_history"))
    if history:
        lines += ["", "Stage history:", *(_stage_line(entry) for entry in history)]
    touch_lines = [_touchpoint_line(tp) for tp in _list(lead.get("touchpoints"))]
    head = "\n".join(lines)
    kept: list[str] = []
    budget = limit - len(head) - 200  # room for the two headings and the "omitted" note
    for line in reversed(touch_lines):
        if budget - len(line) - 1 < 0:
            break
        budget -= len(line) + 1
        kept.append(line)
    kept.reverse()
    tail = ["", f"Touchpoints ({len(touch_lines)}, oldest first):"]
    if len(kept) < len(touch_lines):
        tail.append(f"  ... {len(touch_lines) - len(kept)} earlier touchpoint(s) left out")
    text = "\n".join([head, *tail, *kept])
    return text if len(text) <= limit else text[: limit - 1] + "…"
