"""A lead's scoring state: a commutative fold over the set of its touchpoints.

The state holds what the touchpoints earned (engagement items) and the lead's traits with the time each
was set. Because every part is defined over the *set* of touchpoints (earliest-N per capped rule and
day, each (touchpoint, rule) counted once, latest-wins per trait key), any arrival order, any
redelivery and any identity merge give the same state. (It does not list the event ids folded in:
folding one twice changes nothing, and the consumer's processed-event ids already skip redeliveries.)
:class:`scoring.rules.RuleSet` builds it; this module only holds the data and its JSON form::

    state = LeadScoreState.empty()
    stored = state.to_json()                      # JSON-safe, goes into a DB JSON column
    assert LeadScoreState.from_json(stored) == state

``traits`` is the effective view that rules and routing read: the traits as sent (``declared_traits``,
plus ``email_domain`` derived from the email) with ``company_domain`` derived as the contract says
(the email domain unless free-mail, else the declared ``company_domain``, else the ``website`` host).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

STATE_VERSION = 1

# Free-mail providers: their domain says nothing about the employer, so it is never a company domain.
FREE_MAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "yahoo.de", "yahoo.fr", "ymail.com",
    "outlook.com", "hotmail.com", "hotmail.co.uk", "hotmail.de", "hotmail.fr", "live.com", "msn.com",
    "icloud.com", "me.com", "mac.com", "aol.com", "gmx.de", "gmx.net", "gmx.com", "web.de", "t-online.de",
    "proton.me", "protonmail.com", "pm.me", "mail.com", "yandex.ru", "yandex.com", "mail.ru", "qq.com",
    "163.com", "126.com", "zoho.com", "fastmail.com", "tutanota.com", "hey.com", "orange.fr", "free.fr",
    "libero.it", "btinternet.com", "comcast.net",
})

Kind = Literal["engagement", "fit"]
Stamp = tuple[str, str]  # (canonical occurred_at, event_id): orders trait writes across all arrivals


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, init=False)
class ScoreItem:
    """One line of the breakdown: ``rule`` earned ``points`` (as configured, not decayed)."""

    rule: str
    kind: Kind
    points: float
    event_id: str | None  # the touchpoint that earned it; None for fit
    at: datetime | None  # touchpoint occurred_at; fit: when the trait was set (None if unknown)

    def __init__(self, rule: str, kind: Kind, points: float, event_id: str | None, at: datetime | None) -> None:
        # Built for every match and every stored item on load: one __dict__ write is ~3x faster than
        # the frozen dataclass's per-field object.__setattr__ (the instance stays immutable to callers).
        # The canonical order's key is made here once: items are kept sorted by bisection, which asks
        # each item it passes for its key.
        self.__dict__.update(rule=rule, kind=kind, points=points, event_id=event_id, at=at,
                             _sort_key=(at or _EPOCH, event_id or "", rule))

    def to_json(self) -> dict[str, Any]:
        """The stored form of an engagement item (built once per item: a state is saved on every batch)."""
        body: dict[str, Any] | None = self.__dict__.get("_json")
        if body is None:
            body = self.__dict__["_json"] = {"rule": self.rule, "points": self.points, "event_id": self.event_id,
                                             "at": self.at_text}
        return body

    @property
    def iso_text(self) -> str | None:
        """``at`` as the API shows times (UTC with ``Z``), formatted once per item."""
        text = self.__dict__.get("_iso_text")
        if text is None and self.at is not None:
            at_text = self.at_text
            assert at_text is not None
            text = at_text[:-6] + "Z" if at_text.endswith("+00:00") else iso(self.at)
            self.__dict__["_iso_text"] = text
        return text

    @property
    def at_text(self) -> str | None:
        """``at`` as ISO text, formatted once per item (formatting an aware datetime is slow, and the
        same item objects are serialised again on every save)."""
        text = self.__dict__.get("_at_text")
        if text is None and self.at is not None:
            text = self.__dict__["_at_text"] = self.at.isoformat()
        return text

    def sort_key(self) -> tuple[datetime, str, str]:
        """Canonical order of engagement items: (at, event_id, rule)."""
        key: tuple[datetime, str, str] = self.__dict__["_sort_key"]
        return key


SORT_KEY = attrgetter("_sort_key")  # ScoreItem.sort_key, without a Python call per comparison


def parse_time(value: str | datetime) -> datetime:
    """An aware UTC datetime from an ISO string (``Z`` allowed) or a datetime; naive means UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time such as 2026-11-22T10:00:00Z") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{value!r} is not a time; send an ISO 8601 string such as 2026-11-22T10:00:00Z")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def stamp_time(at: datetime) -> str:
    """Fixed-width UTC text, so comparing two stamps as strings compares the instants."""
    # isoformat is several times faster than strftime, and with microseconds its width is fixed.
    return at.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def stamp_of(text: Any, at: datetime) -> str:
    """:func:`stamp_time` of ``at``, which was parsed from ``text``: cut from the text when it is UTC
    written as the API and the touchpoint model write it (``2026-11-22T10:00:00Z``, with or without six
    fraction digits, or ``+00:00``); formatting an aware time is the slow part of every trait write."""
    if isinstance(text, str) and len(text) >= 20 and text[10] == "T" and text[19] in ".Z+":
        size = len(text)
        if (size == 20 and text[19] == "Z") or (size == 25 and text.endswith("+00:00")):
            return text[:19] + ".000000Z"
        if text[19] == "." and ((size == 27 and text[26] == "Z") or (size == 32 and text.endswith("+00:00"))):
            return text[:26] + "Z"
    return stamp_time(at)


def stamp_isoformat(stamp: str) -> str:
    """``at.isoformat()`` of the UTC instant a :func:`stamp_time` stamp names (``...+00:00``, without a
    fraction when it is zero): what :attr:`ScoreItem.at_text` holds, without formatting a datetime."""
    fraction = stamp[19:26]
    return f"{stamp[:19]}{'' if fraction == '.000000' else fraction}+00:00"


V = TypeVar("V")


def plain_dict(mapping: Mapping[str, V]) -> dict[str, V]:
    """A dict copy of ``mapping``; a state's read-only view is copied by its dict (``dict(view)`` goes
    key by key through the view, seven times slower, for every trait map of every folded lead)."""
    if isinstance(mapping, MappingProxyType):
        return cast(dict[str, V], mapping.copy())
    return dict(mapping)


def iso(at: datetime) -> str:
    """Readable ISO 8601 in UTC with ``Z``, as the API shows times."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def newer(stamp: Stamp, value: Any, old_stamp: Stamp | None, old_value: Any) -> bool:
    """Does a trait write ``(stamp, value)`` win over the current one? Latest stamp wins; an exact tie
    (only possible when one event was folded with two contents) is settled by the value's JSON, so the
    outcome never depends on which side came first."""
    if old_stamp is None or stamp > old_stamp:
        return True
    if stamp < old_stamp:
        return False
    return _value_key(value) > _value_key(old_value)


_SCALARS = (str, int, float, bool, type(None))


def same_value(a: Any, b: Any) -> bool:
    """Is a trait value unchanged? Strict: ``1``, ``1.0`` and ``True`` differ (matchers tell them apart)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, _SCALARS):
        return bool(a == b)
    return _value_key(a) == _value_key(b)


def _value_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def email_domain(email: Any) -> str | None:
    """``" Jane@Acme.COM "`` -> ``"acme.com"``; None when it is not an email."""
    if not isinstance(email, str):
        return None
    local, at, domain = email.strip().lower().rpartition("@")
    return domain if at and local and domain else None


def host_of(value: Any) -> str | None:
    """Domain of a website or domain trait: ``"https://www.Acme.com/about"`` -> ``"acme.com"``."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    try:
        host = urlsplit(text if "://" in text else f"//{text}").hostname
    except ValueError:
        return None
    if not host:
        return None
    return host.removeprefix("www.") or None


def company_domain(traits: Mapping[str, Any]) -> str | None:
    """The domain account-based routing uses: the email domain unless free-mail, then the declared
    ``company_domain``, then the host of ``website``."""
    domain = traits.get("email_domain")
    if isinstance(domain, str) and domain and domain not in FREE_MAIL_DOMAINS:
        return domain
    return host_of(traits.get("company_domain")) or host_of(traits.get("website"))


def effective_traits(declared: Mapping[str, Any]) -> dict[str, Any]:
    """Declared traits with ``company_domain`` replaced by the derived one (dropped if none)."""
    traits = dict(declared)
    derived = company_domain(declared)
    if derived is None:
        traits.pop("company_domain", None)
    else:
        traits["company_domain"] = derived
    return traits


@dataclass(frozen=True)
class LeadScoreState:
    """What a lead's touchpoints add up to; equal states for equal sets of touchpoints.

    ``engagement_items`` is sorted by (at, event_id, rule). ``declared_traits`` are the traits as sent
    (latest ``occurred_at`` wins per key, tie: larger event_id) plus ``email_domain``; ``traits_at``
    holds each key's winning (occurred_at, event_id). ``traits`` is the effective view (see module doc).
    """

    engagement_items: tuple[ScoreItem, ...] = ()
    declared_traits: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    traits_at: Mapping[str, Stamp] = field(default_factory=lambda: MappingProxyType({}))
    traits: Mapping[str, Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Read-only views: the state is shared between folds and must never change under anyone.
        object.__setattr__(self, "declared_traits", MappingProxyType(dict(self.declared_traits)))
        object.__setattr__(self, "traits_at", MappingProxyType(dict(self.traits_at)))
        object.__setattr__(self, "traits", MappingProxyType(effective_traits(self.declared_traits)))

    @staticmethod
    def empty() -> LeadScoreState:
        """The state of no touchpoints (one shared object: a state never changes)."""
        return _EMPTY

    @classmethod
    def of_owned(cls, items: tuple[ScoreItem, ...], declared_traits: dict[str, Any], traits_at: dict[str, Stamp],
                 *, effective: Mapping[str, Any] | None = None) -> LeadScoreState:
        """A state over dicts that nobody else holds (a fold's working copies): no defensive copies.
        ``effective``: the read-only effective view of equal declared traits, if the caller has one."""
        state = object.__new__(cls)
        object.__setattr__(state, "engagement_items", items)
        object.__setattr__(state, "declared_traits", MappingProxyType(declared_traits))
        object.__setattr__(state, "traits_at", MappingProxyType(traits_at))
        object.__setattr__(state, "traits", effective if effective is not None
                           else MappingProxyType(effective_traits(declared_traits)))
        return state

    def with_items(self, items: tuple[ScoreItem, ...]) -> LeadScoreState:
        """This state with other engagement items and the same traits (their read-only views and
        anything derived from the traits alone, such as cached fit items, are shared)."""
        state = object.__new__(type(self))
        state.__dict__.update(self.__dict__)
        object.__setattr__(state, "engagement_items", items)
        return state

    @property
    def company_domain(self) -> str | None:
        value = self.traits.get("company_domain")
        return value if isinstance(value, str) else None

    @property
    def has_positive_engagement(self) -> bool:
        """At least one engagement item with positive points (the ``engaged`` stage's condition)."""
        return any(item.points > 0 for item in self.engagement_items)

    @property
    def rules_hit(self) -> frozenset[str]:
        """Engagement rules that matched and were counted at least once (fast-track looks here)."""
        return frozenset(item.rule for item in self.engagement_items)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (times as ISO strings); :meth:`from_json` reads it back to an equal state."""
        return {
            "version": STATE_VERSION,
            "engagement_items": [i.to_json() for i in self.engagement_items],
            "traits": plain_dict(self.declared_traits),
            "traits_at": {key: [at, eid] for key, (at, eid) in self.traits_at.items()},
        }

    @staticmethod
    def from_json(data: Any) -> LeadScoreState:
        """Rebuild from :meth:`to_json` output (or the JSON text of it); ``ValueError`` if malformed."""
        if isinstance(data, str | bytes):
            data = json.loads(data)
        if not isinstance(data, Mapping):
            raise ValueError("a stored score state must be a JSON object")
        if data.get("version", STATE_VERSION) != STATE_VERSION:
            raise ValueError(f"stored score state version {data.get('version')!r} is not {STATE_VERSION}; "
                             "run `handoff rescore` to rebuild it from the touchpoints")
        try:
            items = [_item_from_json(raw) for raw in data.get("engagement_items", [])]
            traits_at = {str(k): (_stored_stamp(v[0]), str(v[1])) for k, v in data.get("traits_at", {}).items()}
            traits = dict(data.get("traits", {}))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"stored score state is malformed ({exc!r}); run `handoff rescore`") from None
        # Other keys (``seen_event_ids`` of states stored before it was dropped, a writer's ``rev``) are
        # not part of the state.
        items.sort(key=SORT_KEY)
        return LeadScoreState(tuple(items), traits, traits_at)


_EMPTY = LeadScoreState()
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _stored_stamp(text: Any) -> str:
    """A stored stamp as :func:`stamp_time` writes it is used as it is; anything else is re-read."""
    if isinstance(text, str) and _STAMP.fullmatch(text):
        return text
    return stamp_time(parse_time(text))


def _item_from_json(raw: Mapping[str, Any]) -> ScoreItem:
    text = raw["at"]
    item = ScoreItem(str(raw["rule"]), "engagement", float(raw["points"]), str(raw["event_id"]), parse_time(text))
    if isinstance(text, str) and text.endswith("+00:00"):
        item.__dict__["_at_text"] = text  # already canonical: spare the next save the formatting
    return item
