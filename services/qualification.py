"""Whether a score meets the agreed MQL criteria: the bare predicate, for previews and reports.

The router's :mod:`router.qualify` makes the real decision (with stages and reasons); this is the
same rule without them, so ``handoff rescore --dry-run`` can say who would enter or leave MQL::

    meets_mql(fit=25, engagement=45, rules_hit={"pricing-page"}, qualification=config.qualification)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from services.config import Qualification
from services.matchers import compile_when


def meets_mql(fit: float, engagement: float, rules_hit: Collection[str], qualification: Qualification) -> bool:
    if fit < qualification.mql.fit_min:
        return False
    if any(name in rules_hit for name in qualification.fast_track):
        return True
    return engagement >= qualification.mql.engagement_min


def is_disqualified(lead: Mapping[str, Any], qualification: Qualification) -> bool:
    return any(compile_when(when)(lead) for when in qualification.disqualify)
