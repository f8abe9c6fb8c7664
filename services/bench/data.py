"""What the benchmark sends: a config for the processes it starts, and realistic touchpoints.

    config = bench_config(crm_url="http://127.0.0.1:9000/crm")        # a dict, dumped to YAML
    people = People(seed=7, tag="r1")
    journey = people.journey(3)              # one buyer's touchpoints (the ingest JSON shape), in order
    single = single_templates("run1")        # request bodies with EVENT_SLOT where the event id goes
    fill(single[0], 42)                      # -> bytes with a unique event id

The mix follows the example config's rules (blog/pricing/docs page views, e-mail opens and clicks,
guide downloads, webinars, demo requests, unsubscribes); buyers start anonymous, identify themselves
(e-mail and the anonymous id together, so the two link) and go on by e-mail.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import yaml

from services.config import example_config_text, parse_config

WRITE_KEY = "bench-website-write-key"
SECRETS = {"WEBSITE_WEBHOOK_SECRET": WRITE_KEY, "CRM_SIGNING_SECRET": "bench-crm-signing-secret"}
AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
EVENT_SLOT = b"#EVENT#"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

TITLES = ("VP Sales", "Head of Marketing", "Software Engineer", "Director of IT", "Founder", "Analyst",
          "Marketing Manager", "CTO", "Student", "Account Executive")
COUNTRIES = ("DE", "FR", "GB", "US", "CA", "NL", "ES", "IT", "BR", "IN", "US", "US")
FREE_MAIL = ("gmail.com", "yahoo.com", "outlook.com")
CAMPAIGNS = (None, None, "q4-webinar", "spring-guide", "retargeting", "newsletter")
BLOG = ("/blog/lead-scoring-101", "/blog/mql-vs-sql", "/blog/speed-to-lead", "/blog/attribution")
DOCS = ("/docs/getting-started", "/docs/api", "/docs/integrations/hubspot")

# (weight, type, properties) of a touchpoint after the buyer is known.
ACTIONS: tuple[tuple[int, str, dict[str, Any]], ...] = (
    (30, "page_view", {"path": "blog"}),
    (10, "page_view", {"path": "/pricing"}),
    (10, "page_view", {"path": "docs"}),
    (15, "email_open", {"email": "newsletter-42"}),
    (10, "email_click", {"email": "newsletter-42", "link": "https://example.com/guide"}),
    (7, "form_submit", {"form": "guide"}),
    (5, "webinar_attended", {"webinar": "q4-pipeline"}),
    (3, "form_submit", {"form": "demo"}),
    (2, "email_unsubscribe", {}),
)


def bench_config(crm_url: str, alerts_url: str | None = None) -> dict[str, Any]:
    """The example config with one ``generic`` source, reps that work 24/7 with a large capacity (so
    nobody runs out of room during a run), a 4 h SLA and the CRM/alerts pointed at ``crm_url``."""
    data: dict[str, Any] = yaml.safe_load(example_config_text())
    data["sources"] = [{"id": "website", "kind": "generic", "secret_env": "WEBSITE_WEBHOOK_SECRET"}]
    for rep in data["reps"]:
        rep.update(hours="00:00-24:00", days=ALL_DAYS, capacity=1_000_000)
    data["sla"] = {"first_touch": "4h", "reminders": [0.5, 0.8], "on_breach": ["alert_rep", "reassign"]}
    data["crm"] = {"kind": "webhook", "url": crm_url, "secret_env": "CRM_SIGNING_SECRET", "timeout_seconds": 5}
    data["alerts"] = {"webhook": {"url": alerts_url or crm_url.rsplit("/", 1)[0] + "/alerts"}}
    parse_config(data, "bench config")  # fail here, not in a subprocess, if the example changed shape
    return data


def write_config(path: Any, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def fill(template: bytes, n: int) -> bytes:
    """``template`` with every ``EVENT_SLOT`` replaced by ``n`` (a unique event id part)."""
    return template.replace(EVENT_SLOT, b"%d" % n)


class People:
    """A population of buyers; ``person(i)`` is stable for a given seed and tag."""

    def __init__(self, seed: int = 7, tag: str = "b", *, free_mail_share: float = 0.2) -> None:
        self.seed = seed
        self.tag = tag
        self.free_mail_share = free_mail_share
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

    def person(self, i: int) -> dict[str, Any]:
        rng = random.Random(self.seed * 1_000_003 + i)
        domain = (rng.choice(FREE_MAIL) if rng.random() < self.free_mail_share
                  else f"company{rng.randrange(max(10, i // 3 + 1))}.com")
        return {
            "email": f"{self.tag}-{i}@{domain}",
            "anonymous_id": f"{self.tag}-anon-{i}",
            "traits": {"title": rng.choice(TITLES), "country": rng.choice(COUNTRIES),
                       "company": domain.split(".")[0].title(), "employees": rng.choice((5, 20, 80, 300, 2000))},
            "campaign": rng.choice(CAMPAIGNS),
        }

    def touchpoint(self, rng: random.Random, person: dict[str, Any], event_id: str, at: datetime, *,
                   known: bool, action: tuple[int, str, dict[str, Any]] | None = None,
                   traits: bool = False) -> dict[str, Any]:
        _, kind, props = action or rng.choices(ACTIONS, weights=[a[0] for a in ACTIONS])[0]
        props = dict(props)
        if props.get("path") == "blog":
            props["path"] = rng.choice(BLOG)
        elif props.get("path") == "docs":
            props["path"] = rng.choice(DOCS)
        tp: dict[str, Any] = {"event_id": event_id, "type": kind, "occurred_at": at.isoformat(),
                              "properties": props}
        if known:
            tp["email"] = person["email"]
            if rng.random() < 0.5:
                tp["anonymous_id"] = person["anonymous_id"]
        else:
            tp["anonymous_id"] = person["anonymous_id"]
        if person["campaign"]:
            tp["campaign"] = person["campaign"]
        if traits:
            tp["traits"] = dict(person["traits"])
        return tp

    def journey(self, i: int, length: int | None = None) -> list[dict[str, Any]]:
        """Buyer ``i``'s touchpoints, oldest first: anonymous visits, an identifying form, then more."""
        rng = random.Random(self.seed * 7_919 + i)
        person = self.person(i)
        length = length or rng.randint(3, 12)
        at = self.base + timedelta(seconds=rng.randrange(3600))
        out = []
        anonymous = rng.randint(1, 2)
        for step in range(length):
            at += timedelta(minutes=rng.randint(1, 90))
            event_id = f"{self.tag}-{i}-{step}"
            if step < anonymous:
                out.append(self.touchpoint(rng, person, event_id, at, known=False, action=ACTIONS[0]))
            elif step == anonymous:  # the identifying form: e-mail + anonymous id + traits
                tp = self.touchpoint(rng, person, event_id, at, known=True, action=ACTIONS[5], traits=True)
                tp["anonymous_id"] = person["anonymous_id"]
                out.append(tp)
            else:
                out.append(self.touchpoint(rng, person, event_id, at, known=True, traits=rng.random() < 0.1))
        return out

    def stream(self, count: int) -> list[dict[str, Any]]:
        """About ``count`` touchpoints of many buyers, interleaved as they would arrive (each buyer's in
        order): every journey starts at a random moment and its steps are spread out."""
        rng = random.Random(self.seed)
        timed: list[tuple[float, int, int, dict[str, Any]]] = []
        i = 0
        while len(timed) < count:
            at = rng.random()
            for step, tp in enumerate(self.journey(i)):
                at += rng.uniform(0.001, 0.05)  # growing: each buyer's order survives the sort
                timed.append((at, i, step, tp))
            i += 1
        timed.sort(key=lambda t: (t[0], t[1], t[2]))
        return [t[3] for t in timed[:count]]

    def qualifying_journey(self, i: int, background: int) -> list[dict[str, Any]]:
        """``background`` low-value touchpoints (blog, docs, e-mail opens: never enough to qualify), then
        a demo request by a senior buyer: the fast-track rule makes it MQL at once, then SQL."""
        rng = random.Random(self.seed * 104_729 + i)
        person = self.person(i)
        person["email"] = f"{self.tag}-{i}@lead{i % 997}.example"  # a company domain, never free mail
        person["traits"]["title"] = "VP Sales"
        now = datetime.now(UTC)
        quiet = (ACTIONS[0], ACTIONS[2], ACTIONS[3])
        out = [self.touchpoint(rng, person, f"{self.tag}-{i}-{k}", now, known=True, action=quiet[k % 3],
                               traits=k == 0) for k in range(background)]
        out.append(self.touchpoint(rng, person, f"{self.tag}-{i}-demo", now, known=True, action=ACTIONS[7],
                                   traits=True))
        return out


def single_templates(tag: str, count: int = 64, seed: int = 11) -> list[bytes]:
    """Bodies for ``POST /v1/touchpoints``, each with ``EVENT_SLOT`` in its event id."""
    people = People(seed, tag)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        tp = people.touchpoint(rng, people.person(i), f"{tag}-s-#EVENT#", now, known=rng.random() < 0.8,
                               traits=rng.random() < 0.2)
        out.append(orjson.dumps(tp))
    return out


def batch_template(tag: str, size: int = 500, seed: int = 13) -> bytes:
    """A ``POST /v1/touchpoints/batch`` body of ``size`` touchpoints, ``EVENT_SLOT`` in every event id."""
    people = People(seed, tag)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    items = [people.touchpoint(rng, people.person(i % 97), f"{tag}-b-#EVENT#-{i}", now,
                               known=rng.random() < 0.8, traits=rng.random() < 0.2) for i in range(size)]
    return orjson.dumps({"touchpoints": items})
