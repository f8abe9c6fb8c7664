"""The YAML config (``handoff.yaml``): sources, scoring, qualification, routing, reps, SLA, CRM, alerts.

Load it with :func:`load_config`; every problem comes back at once as :class:`ConfigError`, each with
the key path that holds it, which is what ``handoff check-config`` prints::

    config = load_config("handoff.yaml")
    config.scoring.decay_half_life_days  # 30.0

Secrets are never inlined: a config names the environment variable that holds them (``secret_env``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from services.durations import format_duration, parse_duration
from services.matchers import MatcherError, compile_when

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SourceKind = Literal["generic", "segment", "hubspot", "mautic"]
Strategy = Literal["round_robin", "weighted", "least_loaded"]
BreachAction = Literal["alert_rep", "alert_manager", "page_oncall", "reassign"]
DEFAULT_BREACH_CHAIN: tuple[BreachAction, ...] = ("alert_rep", "alert_manager")
Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, when_used="json")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_when(value: Any) -> Any:
    """Compile once at load so a bad matcher is reported with its path, not at the first event."""
    try:
        compile_when(value)
    except MatcherError as exc:
        raise ValueError(str(exc)) from None
    return value


When = Annotated[dict[str, Any], BeforeValidator(_check_when)]


class Source(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: SourceKind = "generic"
    # One env var name or several: every secret they hold is valid, so a secret rotates without downtime.
    # One variable may also hold several secrets separated by commas.
    secret_env: str | list[str] | None = None

    def secret_env_names(self) -> list[str]:
        if self.secret_env is None:
            return []
        return [self.secret_env] if isinstance(self.secret_env, str) else list(self.secret_env)

    def secrets(self, environ: Mapping[str, str] | None = None) -> list[str]:
        env = os.environ if environ is None else environ
        found: list[str] = []
        for name in self.secret_env_names():
            found += [part.strip() for part in env.get(name, "").split(",") if part.strip()]
        return found


class EngagementRule(_Model):
    name: str
    when: When = Field(default_factory=dict)
    points: float
    max_per_day: int | None = Field(default=None, ge=1)


class FitRule(_Model):
    name: str
    when: When = Field(default_factory=dict)
    points: float


class Scoring(_Model):
    decay_half_life_days: float = Field(default=30, ge=0)
    engagement: list[EngagementRule] = Field(default_factory=list)
    fit: list[FitRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Scoring:
        names = [rule.name for rule in self.engagement] + [rule.name for rule in self.fit]
        dupes = sorted({name for name in names if names.count(name) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        return self


class MqlThresholds(_Model):
    fit_min: float = 0
    engagement_min: float = 0


class Qualification(_Model):
    mql: MqlThresholds = Field(default_factory=MqlThresholds)
    fast_track: list[str] = Field(default_factory=list)
    disqualify: list[When] = Field(default_factory=list)


class RoutingRule(_Model):
    when: When = Field(default_factory=dict)
    team: str


class Routing(_Model):
    account_based: bool = True
    rules: list[RoutingRule] = Field(default_factory=lambda: [RoutingRule(team="default")])


class Team(_Model):
    strategy: Strategy = "round_robin"
    reps: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class WorkingHours:
    start: time
    end: time | None  # None means midnight at the end of the day ("24:00")

    def __str__(self) -> str:
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        return f"{self.start.strftime('%H:%M')}-{end}"


def _parse_hours(value: Any) -> WorkingHours:
    if isinstance(value, WorkingHours):
        return value
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", str(value))
    if not match:
        raise ValueError(f"{value!r} is not working hours; write them like 09:00-17:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{value!r} has an impossible time")
    start, end = time(h1, m1), (None if h2 == 24 else time(h2, m2))
    if end is not None and end <= start:
        raise ValueError(f"{value!r}: the end must come after the start (overnight shifts are not supported)")
    return WorkingHours(start, end)


class Rep(_Model):
    id: str
    name: str = ""
    email: str = ""
    timezone: str = "UTC"
    hours: Annotated[WorkingHours, BeforeValidator(_parse_hours), PlainSerializer(str)] = WorkingHours(time(0), None)
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS))
    capacity: int = Field(default=25, ge=0)
    weight: float = Field(default=1, gt=0)
    manager: str | None = None
    available: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    @field_validator("days")
    @classmethod
    def _some_days(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a rep needs at least one working day")
        return value


class Sla(_Model):
    first_touch: Duration = timedelta(hours=4)
    reminders: list[float] = Field(default_factory=lambda: [0.5, 0.8])
    on_breach: list[BreachAction] = Field(default_factory=lambda: list(DEFAULT_BREACH_CHAIN))

    @field_validator("reminders")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        bad = [f for f in value if not 0 < f < 1]
        if bad:
            raise ValueError(f"reminders are fractions of the window between 0 and 1; got {bad}")
        return sorted(value)


class Crm(_Model):
    kind: Literal["webhook", "hubspot", "salesforce"] = "webhook"
    url: str
    secret_env: str | None = None  # webhook: HMAC signing secret
    token_env: str | None = None  # hubspot / salesforce: bearer token
    timeout_seconds: float = Field(default=10, gt=0)
    max_attempts: int = Field(default=12, ge=1)
    external_id_field: str = "Handoff_Lead_Id__c"  # salesforce upsert key

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


class UrlSink(_Model):
    url: str

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return Crm._http_url(value)


class PagerDutySink(UrlSink):
    routing_key_env: str | None = None


class Alerts(_Model):
    webhook: UrlSink | None = None
    pagerduty: PagerDutySink | None = None
    slack: UrlSink | None = None


class MarketingSla(_Model):
    mql_per_month: int = Field(default=0, ge=0)


class HandoffConfig(_Model):
    sources: list[Source] = Field(default_factory=list)
    scoring: Scoring = Field(default_factory=Scoring)
    qualification: Qualification = Field(default_factory=Qualification)
    routing: Routing = Field(default_factory=Routing)
    teams: dict[str, Team] = Field(default_factory=dict)
    reps: list[Rep] = Field(default_factory=list)
    sla: Sla = Field(default_factory=Sla)
    crm: Crm | None = None
    alerts: Alerts = Field(default_factory=Alerts)
    marketing_sla: MarketingSla = Field(default_factory=MarketingSla)

    @model_validator(mode="after")
    def _references(self) -> HandoffConfig:
        problems = reference_problems(self.model_dump())
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        return self

    def source(self, source_id: str) -> Source | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def rep(self, rep_id: str) -> Rep | None:
        return next((r for r in self.reps if r.id == rep_id), None)


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists every one with its key path."""

    def __init__(self, origin: str, problems: list[ConfigProblem]) -> None:
        self.origin = origin
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{origin}: {len(problems)} problem(s) in the config:\n{lines}")


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _section(data: Any, key: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def reference_problems(data: Any) -> list[ConfigProblem]:
    """Cross-references between sections (teams name defined reps, rules name defined teams, ...).

    Works on plain (possibly invalid) data, so ``check-config`` reports them next to field errors."""
    problems: list[ConfigProblem] = []
    if not isinstance(data, dict):
        return problems
    ids = [s.get("id") for s in _items(data.get("sources")) if isinstance(s, dict)]
    for dup in sorted({i for i in ids if isinstance(i, str) and ids.count(i) > 1}):
        problems.append(ConfigProblem("sources", f"id {dup!r} is used twice"))
    rule_names = {r.get("name") for r in _items(_section(data, "scoring").get("engagement")) if isinstance(r, dict)}
    for name in _items(_section(data, "qualification").get("fast_track")):
        if name not in rule_names:
            problems.append(ConfigProblem("qualification.fast_track",
                                          f"{name!r} is not a scoring.engagement rule name"))
    teams = _section(data, "teams")
    for i, rule in enumerate(_items(_section(data, "routing").get("rules"))):
        if isinstance(rule, dict) and rule.get("team") not in teams:
            problems.append(ConfigProblem(f"routing.rules.{i}.team",
                                          f"team {rule.get('team')!r} is not defined under teams"))
    rep_ids = {r.get("id") for r in _items(data.get("reps")) if isinstance(r, dict)}
    for team_name, team in teams.items():
        for rep in _items(team.get("reps") if isinstance(team, dict) else None):
            if rep not in rep_ids:
                problems.append(ConfigProblem(f"teams.{team_name}.reps", f"rep {rep!r} is not defined under reps"))
    return problems


def _problems_from(error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling against the config reference)"
        elif item["type"] == "missing":
            message = "required key is missing"
        # Several reference problems arrive in one message: split them back out with their own paths.
        for part in message.split("; ") if ": " in message and not path else [message]:
            sub_path, _, sub_msg = part.partition(": ")
            if not path and sub_msg:
                problems.append(ConfigProblem(sub_path, sub_msg))
            else:
                problems.append(ConfigProblem(path, part))
    return problems


def parse_config(data: Any, origin: str = "<config>") -> HandoffConfig:
    """Validate already-parsed YAML; raises :class:`ConfigError` listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(origin, [ConfigProblem("", "the config must be a YAML mapping at the top level")])
    try:
        return HandoffConfig.model_validate(data)
    except ValidationError as exc:
        problems = _problems_from(exc)
        # Field errors stop pydantic before the cross-reference check: run it on the raw data too.
        known = {str(p) for p in problems}
        problems += [p for p in reference_problems(data) if str(p) not in known]
        raise ConfigError(origin, problems) from None


def example_config_text() -> str:
    return resources.files("services").joinpath("handoff.example.yaml").read_text(encoding="utf-8")


def load_config(path: str | Path | None = None) -> HandoffConfig:
    """Load ``path``; ``None`` means the packaged example config."""
    if path is None:
        return parse_config(yaml.safe_load(example_config_text()), "handoff.example.yaml (packaged)")
    origin = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(origin, [ConfigProblem("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(origin, [ConfigProblem("", f"not valid YAML{where}: {exc}")]) from None
    return parse_config(data, origin)
