"""``handoff simulate``: fill a running service with realistic buyer journeys, then play sales.

    handoff simulate --leads 200                    # against `handoff up` (keys from .handoff-demo.json)
    handoff simulate --leads 1000 --url http://10.0.0.5:8080 --token $HANDOFF_API_TOKEN --seed 3

1. :func:`journeys` (pure, seeded) invents N buyers and the paths marketing teams describe: blog ->
   guide download -> webinar -> pricing -> demo request; anonymous browsing identified later; nurture
   that never qualifies; unsubscribes; competitors (disqualified); students; free-mail and corporate
   addresses, senior and junior titles, EMEA and other countries, campaigns. Touchpoints are spread
   over the past 30 days.
2. They are sent through a mix of endpoints: ``POST /v1/touchpoints/batch`` with the ``website``
   source's write key (``WEBSITE_WEBHOOK_SECRET``) and the Segment API (``/v1/page``, ``/v1/identify``,
   ``/v1/track``; HTTP Basic with ``SEGMENT_WRITE_KEY``), a few deliberately twice (dedupe).
3. Once leads are assigned (``GET /v1/leads?stage=sql``, a bounded wait with progress), sales answers
   for a realistic share: contacted, accepted, rejected with a reason, won, lost; some are left
   waiting, so the dashboard shows leads awaiting their first call.
4. A summary: touchpoints sent, accepted, duplicates, feedback given, leads in each stage.

Keys come from the environment, else from ``.handoff-demo.json`` (written by ``handoff up``). The
same ``--seed`` gives the same journeys with the same event ids: sending them again is all duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import httpx

from services.events import utcnow
from services.settings import Settings

DEMO_FILE = Path(".handoff-demo.json")
WEBSITE_KEY_ENV = "WEBSITE_WEBHOOK_SECRET"
SEGMENT_KEY_ENV = "SEGMENT_WRITE_KEY"
BATCH = "/v1/touchpoints/batch"
FUNNEL = ("anonymous", "known", "engaged", "mql", "sql", "contacted", "opportunity", "won", "lost", "recycled",
          "disqualified")

# ---------------------------------------------------------------------------------------------
# The journeys (pure: a seeded generator, no I/O, no clock)
# ---------------------------------------------------------------------------------------------

FIRST_NAMES = ("Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kai", "Lena",
               "Marco", "Nina", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Will", "Yuki")
LAST_NAMES = ("Adler", "Brooks", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova", "Jansen",
              "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Patel", "Rossi", "Schmidt", "Tanaka", "Weber")
COMPANY_A = ("North", "Blue", "Bright", "Iron", "Silver", "Rapid", "Clear", "Summit", "Pioneer", "Harbor", "Cedar")
COMPANY_B = ("Logistics", "Analytics", "Health", "Robotics", "Retail", "Energy", "Finance", "Foods", "Labs", "Media")
FREE_MAIL = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com")
SENIOR = ("VP Sales", "Head of Marketing", "Director of Operations", "CTO", "Founder", "Chief Revenue Officer",
          "CMO", "VP Engineering", "Head of Growth")
JUNIOR = ("Marketing Associate", "Sales Development Rep", "Business Analyst", "Software Engineer",
          "Marketing Coordinator", "Account Executive", "Operations Specialist")
STUDENT = ("Student", "Marketing Intern", "MBA Student")
EMEA = ("DE", "FR", "GB", "NL", "ES", "IT")
ELSEWHERE = ("US", "US", "CA", "AU", "BR", "IN", "SG")
EMPLOYEES = (4, 12, 35, 60, 180, 450, 1200, 8000)
CAMPAIGNS = ("q4-webinar", "pricing-retargeting", "seo-blog", "partner-newsletter", "linkedin-abm", None)
BLOG_POSTS = ("/blog/lead-scoring-101", "/blog/speed-to-lead", "/blog/mql-vs-sql", "/blog/routing-rules",
              "/blog/crm-hygiene", "/blog/sla-for-sales")
REJECT_REASONS = ("budget", "no authority", "bad timing", "student")

# path -> weight; what each does is in _steps_for()
PATHS = {
    "demo-request": 22,          # blog -> guide -> webinar -> pricing x2 -> demo request (fast track)
    "browse-then-identify": 16,  # anonymous pages (Segment), identify, then "Demo Requested"
    "webinar-pricing": 12,       # guide + webinar + pricing: qualifies on points
    "nurture": 18,               # blog, guide, email click: engaged, not qualified
    "unsubscribe": 8,            # guide, email open/click, unsubscribe
    "competitor": 5,             # a competitor.com address requesting a demo: disqualified
    "anonymous-only": 13,        # a few page views, never identified
    "student": 6,                # a student requesting a demo: negative fit
}
QUALIFYING = frozenset({"demo-request", "browse-then-identify", "webinar-pricing"})
OUTCOMES = {"awaiting": 15, "contacted": 12, "rejected": 18, "accepted": 18, "won": 22, "lost": 15}


@dataclass(frozen=True)
class Persona:
    first_name: str
    last_name: str
    title: str
    company: str
    domain: str
    country: str
    employees: int

    @property
    def senior(self) -> bool:
        return self.title in SENIOR

    def traits(self, email: str) -> dict[str, Any]:
        return {"email": email, "first_name": self.first_name, "last_name": self.last_name, "title": self.title,
                "company": self.company, "country": self.country, "employees": self.employees}


@dataclass(frozen=True)
class Step:
    """One message: ``endpoint`` is BATCH (``body`` is one generic touchpoint, batched by the sender) or a
    Segment endpoint (``body`` is the Segment message). ``resend`` marks a deliberate redelivery."""

    endpoint: str
    body: Mapping[str, Any]
    at: datetime
    resend: bool = False


@dataclass(frozen=True)
class Feedback:
    type: str
    reason: str | None = None


@dataclass(frozen=True)
class Journey:
    index: int
    path: str
    channel: str  # website | segment
    email: str | None
    anonymous_id: str
    persona: Persona
    campaign: str | None
    steps: tuple[Step, ...]
    expect_sql: bool  # qualifies under the example config's rules (MQL, then assigned)
    feedback: tuple[Feedback, ...] = field(default_factory=tuple)


def fit_points(persona: Persona, email_domain: str) -> int:
    """The example config's fit rules (senior +20, 50+ employees +10, free mail -15, student -20)."""
    points = 20 if persona.senior else 0
    points += 10 if persona.employees >= 50 else 0
    points -= 15 if email_domain in FREE_MAIL else 0
    points -= 20 if persona.title in STUDENT else 0
    return points


def journeys(n: int, seed: int, now: datetime) -> list[Journey]:
    """``n`` buyer journeys, the same for the same ``seed`` and ``now`` (every touchpoint before ``now``)."""
    rng = random.Random(seed)
    paths, path_weights = list(PATHS), list(PATHS.values())
    outcomes, outcome_weights = list(OUTCOMES), list(OUTCOMES.values())
    out = []
    for i in range(n):
        path = rng.choices(paths, path_weights)[0]
        persona = _persona(rng, path)
        domain = ("competitor.com" if path == "competitor"
                  else rng.choice(FREE_MAIL) if path == "student" or rng.random() < 0.2 else persona.domain)
        email = None if path == "anonymous-only" else \
            f"{persona.first_name}.{persona.last_name}{i}@{domain}".lower()
        channel = "segment" if path == "browse-then-identify" or rng.random() < 0.4 else "website"
        campaign = rng.choice(CAMPAIGNS)
        anonymous_id = f"anon-{seed}-{i}-{rng.getrandbits(32):08x}"
        steps = _steps_for(rng, i, seed, path, channel, persona, email, anonymous_id, campaign, now)
        expect_sql = path in QUALIFYING and email is not None and fit_points(persona, domain) >= 10
        plan: tuple[Feedback, ...] = ()
        if expect_sql:
            plan = _feedback_plan(rng, rng.choices(outcomes, outcome_weights)[0], persona)
        out.append(Journey(i, path, channel, email, anonymous_id, persona, campaign, tuple(steps), expect_sql, plan))
    return out


def _persona(rng: random.Random, path: str) -> Persona:
    a, b = rng.choice(COMPANY_A), rng.choice(COMPANY_B)
    title = rng.choice(STUDENT) if path == "student" else rng.choice(SENIOR if rng.random() < 0.45 else JUNIOR)
    return Persona(first_name=rng.choice(FIRST_NAMES), last_name=rng.choice(LAST_NAMES), title=title,
                   company=f"{a} {b}", domain=f"{a}{b}.com".lower(),
                   country=rng.choice(EMEA if rng.random() < 0.45 else ELSEWHERE), employees=rng.choice(EMPLOYEES))


def _feedback_plan(rng: random.Random, outcome: str, persona: Persona) -> tuple[Feedback, ...]:
    if outcome == "awaiting":
        return ()
    if outcome == "contacted":
        return (Feedback("contacted"),)
    if outcome == "rejected":
        reason = "student" if persona.title in STUDENT else rng.choice(REJECT_REASONS[:3])
        first = (Feedback("contacted"),) if rng.random() < 0.6 else ()
        return (*first, Feedback("rejected", reason))
    if outcome == "accepted":
        return (Feedback("contacted"), Feedback("accepted"))
    return (Feedback("contacted"), Feedback("accepted"), Feedback(outcome))  # won | lost


def _steps_for(rng: random.Random, i: int, seed: int, path: str, channel: str, persona: Persona,
               email: str | None, anonymous_id: str, campaign: str | None, now: datetime) -> list[Step]:
    """The touchpoints of one journey, as (kind, details) first, then rendered for the channel."""
    blog = [("page", rng.choice(BLOG_POSTS))]
    pricing = [("page", "/pricing"), ("page", "/pricing/enterprise")]
    plan: list[tuple[str, str]]
    if path == "demo-request":
        plan = [*blog, ("form", "guide"), ("event", "Webinar Attended"), *pricing, ("form", "demo")]
    elif path == "browse-then-identify":
        plan = [("anon-page", rng.choice(BLOG_POSTS)), ("anon-page", "/pricing"), ("anon-page", "/customers"),
                ("identify", ""), ("event", "Demo Requested")]
    elif path == "webinar-pricing":
        plan = [("form", "guide"), ("event", "Webinar Attended"), ("page", "/pricing"), ("page", "/pricing")]
    elif path == "nurture":
        plan = [*blog, ("form", "guide"), ("event", "Email Click"), ("page", rng.choice(BLOG_POSTS))]
    elif path == "unsubscribe":
        plan = [("form", "guide"), ("event", "Email Open"), ("event", "Email Click"), ("event", "Email Unsubscribe")]
    elif path == "competitor":
        plan = [*pricing, ("form", "demo")]
    elif path == "student":
        plan = [*blog, ("form", "guide"), ("form", "demo")]
    else:  # anonymous-only
        plan = [("anon-page", rng.choice([*BLOG_POSTS, "/pricing", "/"])) for _ in range(rng.randint(1, 4))]
    if channel == "website" and path != "anonymous-only" and rng.random() < 0.4:
        # Browsed anonymously first; the form that identifies them links the anonymous id.
        plan = [("anon-page", rng.choice(BLOG_POSTS)), *plan]
    times = _times(rng, len(plan), now)
    steps = [_render(seed, i, k, kind, detail, channel, persona, email, anonymous_id, campaign, times[k])
             for k, (kind, detail) in enumerate(plan)]
    if channel == "website" and rng.random() < 0.06:  # a sender's retry: the same event again
        first = steps[0]
        steps.append(Step(first.endpoint, first.body, first.at, resend=True))
    return steps


def _times(rng: random.Random, count: int, now: datetime) -> list[datetime]:
    """``count`` increasing times within the past 30 days, the last at least a few minutes ago."""
    latest = now - timedelta(minutes=rng.uniform(5, 60))
    start = now - timedelta(days=rng.uniform(0.5, 30))
    if start >= latest:
        start = latest - timedelta(hours=1)
    span = (latest - start).total_seconds()
    offsets = sorted(rng.uniform(0, 1) for _ in range(count))
    if offsets:
        offsets[-1] = 1.0
    return [start + timedelta(seconds=round(span * f)) for f in offsets]


def _render(seed: int, i: int, k: int, kind: str, detail: str, channel: str, persona: Persona, email: str | None,
            anonymous_id: str, campaign: str | None, at: datetime) -> Step:
    event_id = f"sim-{seed}-{i}-{k}"
    when = at.isoformat().replace("+00:00", "Z")
    identified = kind not in ("anon-page",) and email is not None
    if channel == "segment":
        context: dict[str, Any] = {"campaign": {"name": campaign, "source": "simulate"}} if campaign else {}
        ids: dict[str, Any] = {"anonymousId": anonymous_id}
        if identified:
            ids["userId"] = f"user-{seed}-{i}"
        common = {"messageId": event_id, "timestamp": when, "context": context, **ids}
        if kind in ("page", "anon-page"):
            return Step("/v1/page", {**common, "type": "page", "name": detail,
                                     "properties": {"path": detail, "url": f"https://example.io{detail}"}}, at)
        if kind == "identify":
            return Step("/v1/identify", {**common, "type": "identify", "traits": persona.traits(email or "")}, at)
        if kind == "form":
            return Step("/v1/track", {**common, "type": "track", "event": "Form Submit",
                                      "properties": {"form": detail},
                                      "context": {**context, "traits": persona.traits(email or "")}}, at)
        return Step("/v1/track", {**common, "type": "track", "event": detail, "properties": {}}, at)
    body: dict[str, Any] = {"event_id": event_id, "occurred_at": when, "anonymous_id": anonymous_id}
    if campaign:
        body["campaign"] = campaign
    if identified:
        body["email"] = email
    if kind in ("page", "anon-page"):
        body |= {"type": "page_view", "properties": {"path": detail, "url": f"https://example.io{detail}"}}
    elif kind == "form":
        body |= {"type": "form_submit", "properties": {"form": detail},
                 "traits": {k: v for k, v in persona.traits(email or "").items() if k != "email"}}
    else:
        body["type"] = detail.lower().replace(" ", "_")
    return Step(BATCH, body, at)


# ---------------------------------------------------------------------------------------------
# Sending them (I/O)
# ---------------------------------------------------------------------------------------------

class SimulationError(Exception):
    """Stops the run; the message says what to fix."""


@dataclass(frozen=True)
class Target:
    url: str
    website_key: str | None
    segment_key: str | None
    token: str | None


def resolve_target(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str] | None = None,
                   demo_file: Path = DEMO_FILE) -> Target:
    """Where to send and with which keys: flags, then the environment, then ``.handoff-demo.json``."""
    env = os.environ if environ is None else environ
    demo: dict[str, Any] = {}
    if demo_file.exists():
        try:
            demo = json.loads(demo_file.read_text())
        except (OSError, ValueError):
            demo = {}
    secrets = demo.get("secrets") or {}
    url = args.url or demo.get("url") or f"http://{settings.http_host}:{settings.http_port}"
    tokens = settings.api_tokens()
    token = args.token or (tokens[0] if tokens else None) or demo.get("api_token")
    return Target(url=url.rstrip("/"),
                  website_key=(env.get(WEBSITE_KEY_ENV) or secrets.get(WEBSITE_KEY_ENV) or "").split(",")[0] or None,
                  segment_key=(env.get(SEGMENT_KEY_ENV) or secrets.get(SEGMENT_KEY_ENV) or "").split(",")[0] or None,
                  token=token)


@dataclass
class Tally:
    journeys_sent: int = 0
    touchpoints: int = 0
    accepted: int = 0
    duplicates: int = 0
    failed: int = 0
    feedback: int = 0
    feedback_failed: int = 0
    assigned: int = 0
    errors: list[str] = field(default_factory=list)


class Simulator:
    """Sends journeys over one HTTP client with bounded concurrency, tallying what the service said."""

    def __init__(self, client: httpx.AsyncClient, target: Target, *, concurrency: int = 8, out: TextIO = sys.stdout,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.target = target
        self.concurrency = max(1, concurrency)
        self.out = out
        self.sleep = sleep
        self.clock = clock
        self.tally = Tally()

    def say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    async def run(self, plan: Sequence[Journey], *, wait_seconds: float) -> Tally:
        await self.check_reachable()
        self.say(f"sending {len(plan)} buyer journeys to {self.target.url} "
                 f"({sum(len(j.steps) for j in plan)} touchpoints, concurrency {self.concurrency})")
        await self.send_all(plan)
        t = self.tally
        self.say(f"sent: {t.touchpoints} touchpoints, {t.accepted} accepted, {t.duplicates} duplicates"
                 + (f", {t.failed} refused" if t.failed else ""))
        if t.accepted == 0 and t.duplicates and not t.failed:
            self.say("  (all duplicates: these journeys were sent before; use another --seed for new ones)")
        expected = [j for j in plan if j.expect_sql and j.feedback]
        if not self.target.token:
            self.say("no API token: skipping sales feedback and the summary (pass --token or set HANDOFF_API_TOKEN)")
            return t
        sql = await self.wait_for_assignments(plan, wait_seconds)
        await self.give_feedback([j for j in expected if j.email in sql], sql)
        await self.summary()
        return t

    async def check_reachable(self) -> None:
        try:
            r = await self.client.get(f"{self.target.url}/healthz", timeout=5)
        except httpx.HTTPError as exc:
            raise SimulationError(f"cannot reach the service at {self.target.url} ({type(exc).__name__}: {exc}); "
                                  "is it running? start it with `handoff up`, or pass --url") from None
        if r.status_code != 200:
            raise SimulationError(f"{self.target.url}/healthz answered {r.status_code}; is this the handoff service?")

    async def send_all(self, plan: Sequence[Journey]) -> None:
        queue: asyncio.Queue[Journey] = asyncio.Queue()
        for journey in plan:
            queue.put_nowait(journey)
        step = max(1, len(plan) // 10)

        async def worker() -> None:
            while not queue.empty():
                journey = queue.get_nowait()
                await self.send_journey(journey)
                self.tally.journeys_sent += 1
                done = self.tally.journeys_sent
                if done % step == 0 or done == len(plan):
                    self.say(f"  {done}/{len(plan)} journeys ({100 * done // len(plan)}%), "
                             f"{self.tally.touchpoints} touchpoints")

        await asyncio.gather(*[worker() for _ in range(min(self.concurrency, len(plan)) or 1)])

    async def send_journey(self, journey: Journey) -> None:
        """In order: consecutive website touchpoints go as one batch; Segment messages one by one."""
        batch: list[Mapping[str, Any]] = []
        for step in journey.steps:
            if step.endpoint == BATCH and not step.resend:
                batch.append(step.body)
                continue
            if batch:
                await self.post_batch(batch)
                batch = []
            if step.endpoint == BATCH:
                await self.post_batch([step.body])
            else:
                await self.post_segment(step.endpoint, step.body)
        if batch:
            await self.post_batch(batch)

    async def post_batch(self, touchpoints: list[Mapping[str, Any]]) -> None:
        if not self.target.website_key:
            raise SimulationError(f"no write key for the 'website' source: set {WEBSITE_KEY_ENV} (or run "
                                  "`handoff up`, which writes it to .handoff-demo.json)")
        headers = {"Authorization": f"Bearer {self.target.website_key}"}
        r = await self.post(BATCH, {"touchpoints": touchpoints}, headers=headers)
        self.tally.touchpoints += len(touchpoints)
        if r is not None:
            body = r.json()
            self.tally.accepted += int(body.get("accepted", 0))
            self.tally.duplicates += int(body.get("duplicates", 0))

    async def post_segment(self, endpoint: str, message: Mapping[str, Any]) -> None:
        if not self.target.segment_key:
            raise SimulationError(f"no Segment write key: set {SEGMENT_KEY_ENV} (or run `handoff up`)")
        r = await self.post(endpoint, message, headers={}, auth=httpx.BasicAuth(self.target.segment_key, ""))
        self.tally.touchpoints += 1
        if r is not None:
            self.tally.accepted += 1  # Segment's answer says success, not whether it was new

    async def post(self, path: str, body: Mapping[str, Any], *, headers: dict[str, str],
                   auth: httpx.Auth | None = None) -> httpx.Response | None:
        """POST with retries on 429/503 (honouring Retry-After); None when the service refused it."""
        for attempt in range(6):
            try:
                if auth is None:
                    r = await self.client.post(f"{self.target.url}{path}", json=body, headers=headers)
                else:
                    r = await self.client.post(f"{self.target.url}{path}", json=body, headers=headers, auth=auth)
            except httpx.TransportError as exc:
                if attempt == 5:
                    raise SimulationError(f"lost the connection to {self.target.url}: {exc}") from None
                await self.sleep(0.5 * (attempt + 1))
                continue
            if r.status_code in (429, 503) and attempt < 5:
                await self.sleep(min(10.0, float(r.headers.get("retry-after", "1") or 1)))
                continue
            if r.status_code == 401:
                raise SimulationError(f"{path}: the service refused the write key ({_message(r)}); check "
                                      f"{WEBSITE_KEY_ENV if path == BATCH else SEGMENT_KEY_ENV} against its config")
            if r.status_code >= 300:
                self.tally.failed += 1
                if len(self.tally.errors) < 5:
                    self.tally.errors.append(f"{path}: {r.status_code} {_message(r)}")
                    self.say(f"  refused: {path}: {r.status_code} {_message(r)}")
                return None
            return r
        return None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.target.token}"}

    async def sql_leads(self) -> dict[str, dict[str, Any]]:
        """Leads in stage sql by email (every page)."""
        found: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        while True:
            params = {"stage": "sql", "limit": "200"} | ({"cursor": cursor} if cursor else {})
            r = await self.client.get(f"{self.target.url}/v1/leads", params=params, headers=self._auth())
            if r.status_code == 401:
                raise SimulationError("the API token was refused (GET /v1/leads); pass --token or set "
                                      "HANDOFF_API_TOKEN to the service's token")
            r.raise_for_status()
            body = r.json()
            for item in body.get("items", []):
                if item.get("email"):
                    found[item["email"]] = item
            cursor = body.get("next_cursor")
            if not cursor:
                return found

    async def wait_for_assignments(self, plan: Sequence[Journey], wait_seconds: float) -> dict[str, dict[str, Any]]:
        """Poll until every journey expected to be assigned is, or nothing moved for a while, or time is up."""
        wanted = {j.email for j in plan if j.expect_sql and j.email}
        self.say(f"waiting for scoring and routing: {len(wanted)} leads should reach sql "
                 f"(at most {wait_seconds:.0f}s)")
        deadline = self.clock() + wait_seconds
        seen: dict[str, dict[str, Any]] = {}
        last_count, last_change, last_report = -1, self.clock(), 0.0
        while True:
            seen = {email: lead for email, lead in (await self.sql_leads()).items() if email in wanted}
            now = self.clock()
            if len(seen) != last_count:
                last_count, last_change = len(seen), now
            if now - last_report >= 2 or len(seen) >= len(wanted):
                self.say(f"  {len(seen)}/{len(wanted)} assigned to a rep")
                last_report = now
            if len(seen) >= len(wanted) or now >= deadline or (seen and now - last_change > 10):
                break
            await self.sleep(1.0)
        self.tally.assigned = len(seen)
        if len(seen) < len(wanted):
            self.say(f"  {len(wanted) - len(seen)} not in sql: not qualified under the current rules, waiting in "
                     "the fallback queue (reps at capacity), or still being processed")
        return seen

    async def give_feedback(self, plan: Sequence[Journey], sql: Mapping[str, Mapping[str, Any]]) -> None:
        if not plan:
            return
        self.say(f"sales feedback for {len(plan)} leads (contacted, accepted, rejected, won, lost)")
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(journey: Journey) -> None:
            lead = sql[journey.email or ""]
            async with semaphore:
                for item in journey.feedback:
                    body = {"type": item.type} | ({"reason": item.reason} if item.reason else {})
                    r = await self.client.post(f"{self.target.url}/v1/leads/{lead['id']}/feedback", json=body,
                                               headers=self._auth())
                    if r.status_code >= 300:
                        self.tally.feedback_failed += 1
                        if self.tally.feedback_failed <= 3:
                            self.say(f"  feedback refused for {journey.email}: {r.status_code} {_message(r)}")
                        return
                    self.tally.feedback += 1

        await asyncio.gather(*[one(j) for j in plan])

    async def summary(self) -> None:
        t = self.tally
        self.say(f"feedback: {t.feedback} given" + (f", {t.feedback_failed} refused" if t.feedback_failed else ""))
        r = await self.client.get(f"{self.target.url}/v1/reports/funnel", headers=self._auth())
        if r.status_code != 200:
            self.say(f"(no funnel summary: GET /v1/reports/funnel answered {r.status_code})")
            return
        stages = {row["stage"]: row["current"] for row in r.json()["totals"]["stages"]}
        self.say("leads in each stage now: " + ", ".join(f"{s} {stages.get(s, 0)}" for s in FUNNEL))
        self.say(f"dashboard: {self.target.url}/dashboard?token=<API token>")


def _message(r: httpx.Response) -> str:
    try:
        error = r.json().get("error", {})
        return str(error.get("message") or r.text[:200])
    except ValueError:
        return r.text[:200]


def simulate_command(args: argparse.Namespace, settings: Settings) -> int:
    """``handoff simulate``: exit 0 when the journeys were delivered, 1 with a message otherwise."""
    if args.leads < 1:
        print("--leads must be at least 1", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the progress
    target = resolve_target(args, settings)
    plan = journeys(args.leads, args.seed, utcnow())
    wait = 60 + args.leads * 0.2

    async def main() -> Tally:
        limits = httpx.Limits(max_connections=max(1, args.concurrency) + 2)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            return await Simulator(client, target, concurrency=args.concurrency).run(plan, wait_seconds=wait)

    try:
        tally = asyncio.run(main())
    except SimulationError as exc:
        print(f"handoff simulate: {exc}", file=sys.stderr)
        return 1
    return 1 if tally.failed and not tally.accepted else 0
