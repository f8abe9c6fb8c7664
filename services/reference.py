"""The configuration reference, generated from the models so the documentation cannot drift from the code.

Every ``HANDOFF_*`` environment variable comes from :class:`services.settings.Settings` (its field
descriptions are the meanings) and every YAML key path from :class:`services.config.HandoffConfig`
(meanings live in :data:`CONFIG_MEANINGS` below, because the config models carry no descriptions)::

    print(render_reference())          # Markdown; what `handoff reference` prints
    undocumented()                     # [] when every variable and key has a meaning

``deploy/README.md`` holds a copy between ``<!-- reference:start -->`` and ``<!-- reference:end -->``;
refresh it with ``python -m services.reference --update deploy/README.md`` (a test fails when it differs).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from services.config import HandoffConfig, When, WorkingHours
from services.settings import Settings

START_MARKER: Final = "<!-- reference:start -->"
END_MARKER: Final = "<!-- reference:end -->"
UNDOCUMENTED: Final = "**undocumented**"

# Meanings of the YAML keys, by key path (`[]`: every item of a list, `<name>`: a key the user chooses).
# A new field in services/config.py without an entry here (or a description on the field) makes
# tests/unit/deploy/test_reference.py fail, so the reference always covers the whole model.
CONFIG_MEANINGS: Final[Mapping[str, str]] = {
    "sources": "who may send touchpoints; one entry per sender",
    "sources[].id": "the source's name: the `{source_id}` of `POST /webhooks/{source_id}` and the "
    "touchpoint's `source`; letters, digits and `_.-`, at most 64",
    "sources[].kind": "payload format and authentication: `generic` (X-Handoff-Signature), `segment` "
    "(HTTP Basic write key), `hubspot` (X-HubSpot-Signature-v3), `mautic` (Webhook-Signature)",
    "sources[].secret_env": "name of the environment variable holding the source's signing secret or write "
    "key, or a list of names; every secret found is accepted, so a secret rotates without downtime "
    "(one variable may also hold several, comma-separated)",
    "scoring": "how touchpoints and traits turn into points",
    "scoring.decay_half_life_days": "engagement points halve every N days (0 = no decay)",
    "scoring.engagement": "behaviour rules, each matched against every touchpoint",
    "scoring.engagement[].name": "rule name, unique across engagement and fit rules; shown in the score "
    "breakdown and usable in `qualification.fast_track`",
    "scoring.engagement[].when": "matcher over the touchpoint (`type`, `properties.path`, ...); empty "
    "matches every touchpoint",
    "scoring.engagement[].points": "engagement points a match adds (negative: subtracts)",
    "scoring.engagement[].max_per_day": "at most this many matches per lead and day count; not set = no cap",
    "scoring.fit": "profile rules, each matched against the lead's traits",
    "scoring.fit[].name": "rule name, unique across engagement and fit rules; shown in the score breakdown",
    "scoring.fit[].when": "matcher over the lead (`traits.title`, `traits.email_domain`, ...); empty "
    "matches every lead",
    "scoring.fit[].points": "fit points while the rule matches (negative: subtracts)",
    "qualification": "when a lead becomes an MQL",
    "qualification.mql": "the MQL thresholds; a lead meeting both becomes MQL",
    "qualification.mql.fit_min": "minimum fit score of an MQL (fast-track leads need it too)",
    "qualification.mql.engagement_min": "minimum engagement score of an MQL",
    "qualification.fast_track": "names of `scoring.engagement` rules whose match makes a lead MQL at once "
    "when its fit score reaches `fit_min` (a demo request, say)",
    "qualification.disqualify": "matchers over the lead; a lead matching any of them is disqualified and never routed",
    "routing": "how an MQL is assigned to a rep, which makes it an SQL",
    "routing.account_based": "a lead whose company domain already has an owner goes to that owner",
    "routing.rules": "team rules, tried in order; the first match wins",
    "routing.rules[].when": "matcher over the lead; empty matches every lead (a catch-all, put it last)",
    "routing.rules[].team": "the team that gets a matching lead (a key of `teams`)",
    "teams": "teams of reps, by team name",
    "teams.<name>.strategy": "how the team picks a rep: `round_robin` (in turn), `weighted` (in proportion "
    "to `reps[].weight`) or `least_loaded` (fewest open leads)",
    "teams.<name>.reps": "ids of the team's reps (each defined under `reps`)",
    "reps": "the sales reps",
    "reps[].id": "unique rep id, used in `teams`, assignments, feedback and `/v1/reps/{rep_id}`",
    "reps[].name": "display name",
    "reps[].email": "the rep's email address, sent with the lead to the CRM",
    "reps[].timezone": "IANA time zone of `hours` and `days` (Europe/Berlin, America/New_York, ...)",
    "reps[].hours": "working hours on each working day, in the rep's time zone; the SLA clock runs only "
    "inside them (`00:00-24:00` with all seven days = wall time)",
    "reps[].days": "working days (`mon` ... `sun`)",
    "reps[].capacity": "most open leads the rep holds at once; a rep at capacity gets no new lead",
    "reps[].weight": "the rep's share of leads under the `weighted` strategy",
    "reps[].manager": "the rep's manager, alerted by the `alert_manager` breach action",
    "reps[].available": "`false` = out of office: no new leads (`PUT /v1/reps/{rep_id}` changes it live)",
    "sla": "the response-time SLA from assignment to first contact",
    "sla.first_touch": "the window, in business time inside the rep's hours and days",
    "sla.reminders": "reminders go to the rep at these fractions of the window (each between 0 and 1)",
    "sla.on_breach": "what happens when the window passes without contact: `alert_rep`, `alert_manager`, "
    "`page_oncall`, `reassign`",
    "crm": "where an assigned lead is pushed with its whole context; not set = no push",
    "crm.kind": "`webhook` (signed JSON POST to `url`), `hubspot` or `salesforce`",
    "crm.url": "the http(s) endpoint pushed to",
    "crm.secret_env": "webhook: name of the environment variable holding the HMAC secret that signs each "
    "push (X-Handoff-Signature)",
    "crm.token_env": "hubspot / salesforce: name of the environment variable holding the bearer token",
    "crm.timeout_seconds": "timeout of one push request, in seconds",
    "crm.max_attempts": "attempts (5xx, timeouts and 429 retried with exponential backoff) before the push "
    "goes to the dead-letter store",
    "crm.external_id_field": "salesforce: the external id field the lead is upserted by",
    "alerts": "where SLA reminders, breaches and dead letters are announced; every sink is optional",
    "alerts.webhook": "JSON alerts (`kind`, `lead_id`, `rep_id`, `due_at`, ...) POSTed to a URL",
    "alerts.webhook.url": "the http(s) endpoint of the alert webhook",
    "alerts.pagerduty": "PagerDuty Events API v2 (the `page_oncall` breach action)",
    "alerts.pagerduty.url": "the Events API endpoint",
    "alerts.pagerduty.routing_key_env": "name of the environment variable holding the PagerDuty routing key",
    "alerts.slack": "Slack incoming webhook",
    "alerts.slack.url": "the incoming-webhook URL",
    "marketing_sla": "marketing's volume commitment to sales",
    "marketing_sla.mql_per_month": "MQLs per month marketing commits to; the funnel report measures "
    "against it (0 = no commitment)",
}


@dataclass(frozen=True)
class Entry:
    """One row of the reference: an env var or a YAML key path."""

    key: str
    type: str
    default: str
    meaning: str | None


def settings_entries(settings_cls: type[Settings] = Settings) -> tuple[Entry, ...]:
    """One entry per settings field: ``HANDOFF_<FIELD>`` (or its alias), type, default, description."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    entries = []
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        variable = alias if isinstance(alias, str) else f"{prefix}{name}".upper()
        entries.append(Entry(variable, _field_type(field), _field_default(field, section=False), field.description))
    return tuple(entries)


def config_entries(
    model: type[BaseModel] = HandoffConfig, meanings: Mapping[str, str] = CONFIG_MEANINGS
) -> tuple[Entry, ...]:
    """Every key path of ``model``, depth first: a section comes before its keys."""
    return tuple(_walk(model, "", meanings))


def undocumented(
    model: type[BaseModel] = HandoffConfig,
    meanings: Mapping[str, str] = CONFIG_MEANINGS,
    settings_cls: type[Settings] = Settings,
) -> list[str]:
    """Variables and key paths without a meaning; empty when the reference is complete."""
    entries = [*settings_entries(settings_cls), *config_entries(model, meanings)]
    return [entry.key for entry in entries if not entry.meaning]


def stale_meanings(model: type[BaseModel] = HandoffConfig, meanings: Mapping[str, str] = CONFIG_MEANINGS) -> list[str]:
    """Key paths in ``meanings`` that the model no longer has (renamed or removed fields)."""
    known = {entry.key for entry in config_entries(model, meanings)}
    return sorted(set(meanings) - known)


def render_reference() -> str:
    """The whole reference as Markdown (two tables), deterministic for a given code version."""
    env_file = Settings.model_config.get("env_file")
    env_note = f" (also from a `{env_file}` file in the working directory)" if isinstance(env_file, str) else ""
    lines = [
        "<!-- Generated by `handoff reference` (services/reference.py) from services/settings.py and "
        "services/config.py; do not edit by hand. -->",
        "",
        "### Environment variables",
        "",
        f"Every process reads these at start{env_note}.",
        "",
        *_table("variable", settings_entries()),
        "",
        "### YAML config keys",
        "",
        "The file named by `HANDOFF_CONFIG`; `handoff check-config PATH` validates it. In key paths `[]` "
        "stands for every item of a list and `<name>` for a key you choose. Durations are written `90s`, "
        "`15m`, `4h`, `2d`. A matcher maps dotted paths to conditions: a plain value (equality), "
        "`{prefix: }`, `{regex: }`, `{in: []}`, `{gte: }`, `{lte: }` or `{exists: true}`. Secrets are "
        "never inlined: the `*_env` keys name the environment variable that holds them.",
        "",
        *_table("key", config_entries()),
    ]
    return "\n".join(lines) + "\n"


def splice(document: str, reference: str) -> str:
    """``document`` with the text between the reference markers replaced by ``reference``."""
    start, end = document.find(START_MARKER), document.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"the document has no {START_MARKER} ... {END_MARKER} section; add both markers")
    return f"{document[: start + len(START_MARKER)]}\n{reference.strip()}\n{document[end:]}"


def section(document: str) -> str:
    """The text between the reference markers of ``document``, stripped."""
    start, end = document.find(START_MARKER), document.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"the document has no {START_MARKER} ... {END_MARKER} section; add both markers")
    return document[start + len(START_MARKER) : end].strip()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m services.reference [--update FILE]``: print the reference, or refresh FILE's copy."""
    parser = argparse.ArgumentParser(prog="python -m services.reference", description=main.__doc__)
    parser.add_argument("--update", type=Path, metavar="FILE", help="rewrite FILE's reference section")
    args = parser.parse_args(argv)
    if args.update is None:
        print(render_reference(), end="")
        return 0
    path: Path = args.update
    path.write_text(splice(path.read_text(encoding="utf-8"), render_reference()), encoding="utf-8")
    print(f"updated the configuration reference in {path}")
    return 0


# --- walking the models ---------------------------------------------------------------------------


def _walk(model: type[BaseModel], prefix: str, meanings: Mapping[str, str]) -> list[Entry]:
    entries: list[Entry] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        meaning = field.description or meanings.get(path)
        annotation = _strip_none(field.annotation)
        nested = _nested_model(annotation)
        entries.append(Entry(path, _field_type(field), _field_default(field, section=nested is not None), meaning))
        if nested is None:
            continue
        child_model, joiner = nested
        entries += _walk(child_model, f"{path}{joiner}", meanings)
    return entries


def _nested_model(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The model whose keys sit under this field, with how child paths are joined, or None for a leaf."""
    if _is_model(annotation):
        return annotation, "."
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args and _is_model(args[0]):
        return args[0], "[]."
    if origin is dict and len(args) == 2 and _is_model(args[1]):
        return args[1], ".<name>."
    return None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _strip_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


# --- rendering types and defaults -----------------------------------------------------------------

_SCALARS: Final[Mapping[Any, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    SecretStr: "secret string",
    timedelta: "duration",
    WorkingHours: "hours `HH:MM-HH:MM`",
}


def _field_type(field: FieldInfo) -> str:
    text = _type_name(field.annotation, list(field.metadata))
    limits = _limits(field.metadata)
    return f"{text}, {limits}" if limits else text


def _type_name(annotation: Any, metadata: list[Any]) -> str:
    if get_origin(annotation) is typing.Annotated:
        base, *extra = get_args(annotation)
        return _type_name(base, [*metadata, *extra])
    if _is_matcher(metadata):
        return "matcher"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        names = [_type_name(arg, metadata) for arg in args if arg is not type(None)]
        return " or ".join(names)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin is list:
        return f"list of {_plural(_type_name(args[0], []))}"
    if origin is dict:
        return f"mapping of name to {_type_name(args[1], [])}" if _is_model(args[1]) else "mapping"
    if _is_model(annotation):
        return "mapping"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _is_matcher(metadata: list[Any]) -> bool:
    """True when the metadata carries the validator of :data:`services.config.When`."""
    matcher_checks = [getattr(item, "func", None) for item in get_args(When)[1:]]
    return any(getattr(item, "func", None) in matcher_checks for item in metadata)


def _plural(name: str) -> str:
    if name.startswith("one of "):
        return name.replace("one of ", "values from ", 1)
    return {"mapping": "mappings", "matcher": "matchers", "number": "numbers", "string": "strings"}.get(name, name)


def _limits(metadata: list[Any]) -> str:
    words = []
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            words.append(f"at least {item.min_length}")
    return " and ".join(words)


def _field_default(field: FieldInfo, section: bool) -> str:
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "not set"
    if section and _is_model(type(value)):
        return "see its keys"
    if value == "":
        return "empty"
    return f"`{_show(value)}`"


def _show(value: Any) -> str:
    """A value as it would be written in YAML flow style."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, BaseModel):
        return _show(value.model_dump(exclude_defaults=True))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_show(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(first: str, entries: Sequence[Entry]) -> list[str]:
    rows = [f"| {first} | type | default | meaning |", "| --- | --- | --- | --- |"]
    for entry in entries:
        cells = [f"`{entry.key}`", entry.type, entry.default, entry.meaning or UNDOCUMENTED]
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return rows


def _cell(text: str) -> str:
    # A pipe ends a Markdown table cell, even inside backticks.
    return text.replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    raise SystemExit(main())
