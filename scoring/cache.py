"""Score states the consumer wrote recently, kept in memory and checked against the stored revision.

Every lead in a batch used to cost a parse of its stored ``score_state`` (and a fresh match of the fit
rules). A consumer mostly sees the leads it wrote itself, so it keeps the states it stored, each under
a revision token that is written inside the stored JSON (``score_state.rev``). Reading a lead, it
selects only the stored token: if it is the one remembered, the stored state *is* the remembered one
and is not parsed. Any other writer (``handoff rescore``, another consumer, a test) stores another
token or none, so its state is parsed as before; a transaction that rolled back left the old token,
so a state that never committed is never used::

    cache = StateCache(max_leads=1024)
    rev = cache.new_rev()
    stored = {**state.to_json(), "rev": rev}      # written in the batch's transaction
    cache.put(lead_id, rev, state)
    cache.get(lead_id, stored_rev)                # the state, or None: parse the stored JSON
"""

from __future__ import annotations

import itertools
import os

from scoring.state import LeadScoreState

# A state takes a few KiB in memory (about 4 with its items' cached texts). At 4,096 leads the cache
# was still filling five minutes into the soak (+18 % RSS after warm-up); at 1,024 it is full within the
# first minute and the soak levels off (+6.5 %). The hits are the leads a consumer saw in its last few
# batches: the scoring bench (2,661 leads, 500 per batch) ran at the same rate with 1,024 as with 4,096.
DEFAULT_MAX_LEADS = 1024


class StateCache:
    """A bounded map ``lead id -> (rev, state)``; the least recently used leads are dropped first."""

    def __init__(self, max_leads: int = DEFAULT_MAX_LEADS) -> None:
        self.max_leads = max_leads
        self._states: dict[str, tuple[str, LeadScoreState]] = {}
        # Unique across processes and restarts: a random prefix per cache, a counter within it.
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def new_rev(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"

    def get(self, lead_id: str, stored_rev: str | None) -> LeadScoreState | None:
        entry = self._states.pop(lead_id, None)
        if entry is None or stored_rev is None or entry[0] != stored_rev:
            return None
        self._states[lead_id] = entry  # most recently used: to the end
        return entry[1]

    def put(self, lead_id: str, rev: str, state: LeadScoreState) -> None:
        self._states.pop(lead_id, None)
        self._states[lead_id] = (rev, state)
        while len(self._states) > self.max_leads:
            del self._states[next(iter(self._states))]

    def forget(self, lead_id: str) -> None:
        self._states.pop(lead_id, None)

    def __len__(self) -> int:
        return len(self._states)
