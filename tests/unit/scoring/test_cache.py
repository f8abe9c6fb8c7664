"""StateCache: a remembered state is handed out only under the revision it was stored with."""

from __future__ import annotations

from scoring.cache import StateCache
from scoring.state import LeadScoreState
from tests.unit.scoring.support import T0, rules, touch

STATE = rules().apply(LeadScoreState.empty(), touch("p", T0, properties={"path": "/pricing"}))


def test_a_state_comes_back_only_under_its_revision() -> None:
    cache = StateCache()
    rev = cache.new_rev()
    cache.put("lead-1", rev, STATE)
    assert cache.get("lead-1", rev) is STATE
    assert cache.get("lead-1", "someone-else's") is None
    assert cache.get("lead-1", None) is None  # stored by a writer that keeps no revision
    assert cache.get("lead-2", rev) is None


def test_revisions_are_unique_across_caches() -> None:
    a, b = StateCache(), StateCache()
    revs = [a.new_rev() for _ in range(100)] + [b.new_rev() for _ in range(100)]
    assert len(set(revs)) == 200


def test_the_least_recently_used_lead_is_dropped_first() -> None:
    cache = StateCache(max_leads=2)
    cache.put("a", "1", STATE)
    cache.put("b", "2", STATE)
    assert cache.get("a", "1") is STATE  # "a" is now the most recent
    cache.put("c", "3", STATE)
    assert len(cache) == 2
    assert cache.get("b", "2") is None and cache.get("a", "1") is STATE and cache.get("c", "3") is STATE
    cache.forget("a")
    assert cache.get("a", "1") is None
