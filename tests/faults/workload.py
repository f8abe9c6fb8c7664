"""Buyer journeys whose outcome is known in advance, and a sender that behaves like a real webhook source.

    buyers = make_buyers(240, random.Random(7))
    sender = Sender(lambda: cluster.url("ingest"))
    await sender.run(buyers, concurrency=6)          # retries 503s and dropped connections until a 2xx
    sender.stats.acknowledged, sender.acked_ids       # only what ingest answered 2xx for
    expected_total(rules, buyer.touchpoints)          # scoring's pure RuleSet over what was sent

Kinds of buyer (the mix is seeded, so a failure can be replayed with the same ``FAULTS_SEED``):

- ``nurture``: no senior title (fit <= 0), a few page views, downloads, clicks: never qualifies;
- ``qualifier``: a VP at a company domain who ends with a demo request: fast-track MQL, then SQL;
- ``merger``: browses anonymously, then identifies by email, then links both ids in one touchpoint
  (two leads that scoring must merge into one, whatever order the partitions are read in); half of
  them then ask for a demo;
- ``competitor``: a VP at ``competitor.com`` asking for a demo: disqualified, never assigned.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ingest.schemas import to_touchpoints
from scoring.rules import RuleSet
from scoring.state import LeadScoreState
from tests.support.pipeline import WEBSITE_KEY

COUNTRIES = ("DE", "FR", "GB", "US", "US", "CA", "NL", "BR")
NURTURE_STEPS = (
    {"type": "page_view", "properties": {"path": "/blog/lead-scoring-101"}},
    {"type": "page_view", "properties": {"path": "/blog/speed-to-lead"}},
    {"type": "page_view", "properties": {"path": "/pricing"}},
    {"type": "form_submit", "properties": {"form": "guide"}},
    {"type": "email_click", "properties": {"campaign": "nurture-1"}},
    {"type": "webinar_attended", "properties": {"webinar": "q4"}},
    {"type": "email_unsubscribe", "properties": {}},
)


@dataclass(frozen=True)
class Buyer:
    key: str
    kind: str  # nurture | qualifier | merger | competitor
    email: str
    anonymous_id: str | None
    qualifies: bool
    touchpoints: tuple[dict[str, Any], ...]


def make_buyers(n: int, rng: random.Random, *, prefix: str = "b", start: datetime | None = None) -> list[Buyer]:
    """``n`` buyers; their touchpoints happened in the past (2 days ago), spread over a few hours."""
    base = (start or datetime.now(UTC)) - timedelta(days=2)
    buyers = []
    for i in range(n):
        key = f"{prefix}{i:04d}"
        roll = rng.random()
        kind = ("qualifier" if roll < 0.22 else "merger" if roll < 0.36 else
                "competitor" if roll < 0.40 else "nurture")
        buyers.append(_buyer(key, kind, rng, base + timedelta(minutes=rng.randint(0, 600))))
    return buyers


def _buyer(key: str, kind: str, rng: random.Random, t0: datetime) -> Buyer:
    country = rng.choice(COUNTRIES)
    clock = iter(t0 + timedelta(minutes=7 * step + rng.randint(0, 5)) for step in range(100))
    steps: list[dict[str, Any]] = []

    def add(base: Mapping[str, Any], **identity: Any) -> None:
        n = len(steps)
        steps.append({"event_id": f"{key}-{n}", "occurred_at": next(clock).isoformat(), "source": "website",
                      **identity, **{k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}})

    def nurture(count: int, **identity: Any) -> None:
        for _ in range(count):
            add(rng.choice(NURTURE_STEPS), **identity)

    anonymous_id = None
    qualifies = False
    if kind == "nurture":
        email = f"{key}@{rng.choice(['gmail.com', 'outlook.com', f'{key}-co.example'])}"
        title = rng.choice(["Student", "Marketing Intern", "Analyst", "Engineer"])
        add({"type": "page_view", "properties": {"path": "/blog/intro"},
             "traits": {"title": title, "country": country}}, email=email)
        nurture(rng.randint(1, 5), email=email)
        if rng.random() < 0.3:  # pricing three times in a day: the cap (2 a day) must hold
            for _ in range(3):
                add({"type": "page_view", "properties": {"path": "/pricing"}}, email=email)
    elif kind in ("qualifier", "competitor"):
        domain = "competitor.com" if kind == "competitor" else f"{key}-corp.example"
        email = f"{key}@{domain}"
        nurture(rng.randint(0, 3), email=email)
        add({"type": "form_submit", "properties": {"form": "demo"},
             "traits": {"title": "VP Sales", "company": key, "country": country}}, email=email)
        qualifies = kind == "qualifier"
    else:  # merger
        anonymous_id = f"anon-{key}"
        email = f"{key}@{key}-merge.example"
        for _ in range(rng.randint(1, 3)):
            add({"type": "page_view", "properties": {"path": rng.choice(["/blog/a", "/pricing", "/features"])}},
                anonymous_id=anonymous_id)
        add({"type": "page_view", "properties": {"path": "/blog/b"}}, email=email)  # a second, email-only lead
        add({"type": "webinar_attended", "properties": {"webinar": "q4"},
             "traits": {"title": "Head of Sales" if rng.random() < 0.5 else "Analyst", "country": country}},
            email=email, anonymous_id=anonymous_id)  # links both: one person, one lead
        if rng.random() < 0.5:
            add({"type": "form_submit", "properties": {"form": "demo"},
                 "traits": {"title": "VP Sales", "country": country}}, email=email)
            qualifies = True
        elif rng.random() < 0.5:
            nurture(1, email=email)
    if kind == "merger" and not qualifies:
        # Without a demo a merger must stay below the MQL bar: make sure the fit never reaches it.
        for tp in steps:
            if "traits" in tp:
                tp["traits"]["title"] = "Analyst"
    return Buyer(key, kind, email, anonymous_id, qualifies, tuple(steps))


def normalised(touchpoint: Mapping[str, Any], received_at: datetime | None = None) -> dict[str, Any]:
    """The touchpoint as ingest turns it into the bus event's data (what scoring folds)."""
    [tp] = to_touchpoints(dict(touchpoint), "website", received_at or datetime.now(UTC), False)
    return tp.model_dump(mode="json")


def expected_state(rules: RuleSet, touchpoints: Iterable[Mapping[str, Any]]) -> LeadScoreState:
    return rules.apply_many(LeadScoreState.empty(), [normalised(t) for t in touchpoints])


def expected_total(rules: RuleSet, touchpoints: Iterable[Mapping[str, Any]], now: datetime) -> float:
    """The score the pure rules give the set of touchpoints (each counted once)."""
    return rules.score(expected_state(rules, touchpoints), now).total


@dataclass
class SendStats:
    sent: int = 0  # distinct touchpoints the sender tried to deliver
    requests: int = 0
    acknowledged: int = 0  # touchpoints answered 2xx (accepted + duplicates)
    accepted: int = 0
    duplicates: int = 0
    refused_503: int = 0
    retry_after_missing: int = 0
    connection_errors: int = 0
    gave_up: int = 0
    other: Counter[int] = field(default_factory=Counter)
    refused_at: list[float] = field(default_factory=list)  # monotonic times of 503s
    acked_at: list[float] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {"sent": self.sent, "requests": self.requests, "acknowledged": self.acknowledged,
                "accepted": self.accepted, "duplicate_answers": self.duplicates, "refused_503": self.refused_503,
                "connection_errors": self.connection_errors, "gave_up": self.gave_up,
                "other_statuses": dict(self.other)}


class Sender:
    """POSTs touchpoints one at a time, per buyer in order, like a webhook source with retries.

    A 503 waits as ``Retry-After`` asks (capped at ``max_wait``); a refused or dropped connection (ingest
    killed) is retried after a short pause. A touchpoint counts as acknowledged only on a 2xx.
    """

    def __init__(self, url: Callable[[], str], *, give_up_after: float = 90.0, max_wait: float = 1.0,
                 pause: tuple[float, float] = (0.0, 0.08), rng: random.Random | None = None) -> None:
        self.url = url
        self.give_up_after = give_up_after
        self.max_wait = max_wait
        self.pause = pause
        self.rng = rng or random.Random(0)
        self.stats = SendStats()
        self.acked_ids: set[str] = set()
        self.ack_times: dict[str, float] = {}  # event id -> monotonic time of its 2xx
        self.first_sent: dict[str, float] = {}  # event id -> monotonic time of its first attempt
        self.acked: dict[str, list[dict[str, Any]]] = {}  # buyer key -> acknowledged touchpoints
        # (monotonic start, monotonic end, status or None for a refused/dropped connection) per request
        self.statuses: list[tuple[float, float, int | None]] = []
        self.stopped = False

    async def send_one(self, client: httpx.AsyncClient, touchpoint: Mapping[str, Any]) -> bool:
        self.stats.sent += 1
        self.first_sent.setdefault(str(touchpoint["event_id"]), time.monotonic())
        deadline = time.monotonic() + self.give_up_after
        headers = {"Authorization": f"Bearer {WEBSITE_KEY}"}
        while time.monotonic() < deadline and not self.stopped:
            self.stats.requests += 1
            began = time.monotonic()
            try:
                response = await client.post(self.url() + "/v1/touchpoints", json=dict(touchpoint), headers=headers)
            except httpx.HTTPError:
                self.stats.connection_errors += 1
                self.statuses.append((began, time.monotonic(), None))
                await asyncio.sleep(0.2)
                continue
            self.statuses.append((began, time.monotonic(), response.status_code))
            if 200 <= response.status_code < 300:
                body = response.json()
                self.stats.acknowledged += 1
                self.stats.accepted += int(body.get("accepted", 0))
                self.stats.duplicates += int(body.get("duplicates", 0))
                self.stats.acked_at.append(time.monotonic())
                self.acked_ids.add(str(touchpoint["event_id"]))
                self.ack_times[str(touchpoint["event_id"])] = time.monotonic()
                return True
            if response.status_code == 503:
                self.stats.refused_503 += 1
                self.stats.refused_at.append(time.monotonic())
                retry_after = response.headers.get("retry-after")
                if retry_after is None:
                    self.stats.retry_after_missing += 1
                wait = float(retry_after) if retry_after and retry_after.isdigit() else 0.5
                await asyncio.sleep(min(wait, self.max_wait))
                continue
            self.stats.other[response.status_code] += 1
            raise AssertionError(f"ingest refused a valid touchpoint: {response.status_code} {response.text}")
        self.stats.gave_up += 1
        return False

    async def journey(self, client: httpx.AsyncClient, buyer: Buyer) -> None:
        for touchpoint in buyer.touchpoints:
            if await self.send_one(client, touchpoint):
                self.acked.setdefault(buyer.key, []).append(dict(touchpoint))
            await asyncio.sleep(self.rng.uniform(*self.pause))

    async def run(self, buyers: Sequence[Buyer], concurrency: int = 6) -> None:
        queue: asyncio.Queue[Buyer] = asyncio.Queue()
        for buyer in buyers:
            queue.put_nowait(buyer)

        async def worker(client: httpx.AsyncClient) -> None:
            while not queue.empty() and not self.stopped:
                await self.journey(client, queue.get_nowait())

        async with httpx.AsyncClient(timeout=30.0) as client:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))
