"""The funnel report, computed in SQL: where leads leak, how fast sales answers, whether marketing delivers.

    async with db.read() as conn:
        report = await funnel_report(conn, config, start=None, end=None, group_by="source", now=utcnow())
    report["totals"]["conversion"][3]      # {"from": "mql", "to": "sql", "entered": 40, "converted": 31, ...}

Every figure is an aggregate query (GROUP BY, window functions, percentiles); no lead is loaded into
Python: a few rows per stage and group come back. The stage history carries, on each move, when the
lead left the stage, how long it stayed and how far it had got (derived on write by
services/stage_chain.py), so stages reached and time in stage are plain aggregates (index-only scans on
PostgreSQL); given ``connect``, the independent queries run side by side on pooled connections. The
window (``start`` <= t < ``end``, either side optional) applies to each figure's own time column:

============================  ==========================================================================
figure                        rows counted
============================  ==========================================================================
``stages[].reached``          leads with a stage change in the window, counted at every funnel stage up
                              to the furthest one they had reached by the window's end (a lead that
                              skipped a stage, e.g. fast-tracked to mql, passed it; a recycled lead is
                              counted once, at its furthest stage); so the counts never grow down the
                              funnel. For lost, recycled and disqualified: entries in the window
``stages[].current``          leads now in the stage whose last stage change is in the window
``conversion``                consecutive funnel stages: ``converted / entered`` = reached(to) /
                              reached(from)
``leak``                      the transition with the lowest conversion (first one along the funnel on a
                              tie); ``null`` when no transition has entries
``time_in_stage``             completed stays that STARTED in the window: from a stage_history row to the
                              lead's next row into another stage; median and p90 (percentile_cont, i.e.
                              linear interpolation) in seconds. Open stays are not counted.
``speed_to_lead``             leads first contacted in the window: first assignment -> ``contacted_at``
``sla``                       lead_sla clocks started in the window: ``compliance`` = met / (met +
                              breached), ``null`` without any; running (and stopped) shown apart
``reject_reasons``            ``rejected`` feedback given in the window, by reason (most frequent first)
``mql_this_month``            leads that became MQL in the current calendar month (UTC; not windowed)
============================  ==========================================================================

Leads merged into another lead are left out everywhere. ``group_by`` (source | campaign | team | rep: the
lead's first-touch source and campaign, its team and its owner) adds ``groups``: the same figures per
value of that attribute (``key`` ``null`` for leads without one), most leads first. The response::

    {
      "generated_at": "2026-11-22T10:00:00+00:00",
      "window": {"from": "2026-11-01T00:00:00+00:00", "to": null},
      "group_by": "source",
      "funnel": ["anonymous", "known", "engaged", "mql", "sql", "contacted", "opportunity", "won"],
      "totals": {
        "stages": [{"stage": "anonymous", "reached": 120, "current": 14}, ...],   # funnel, then lost,
                                                                                  # recycled, disqualified
        "conversion": [{"from": "anonymous", "to": "known", "entered": 120, "converted": 90,
                        "rate": 0.75}, ...],                                      # rate null: entered 0
        "leak": {"from": "sql", "to": "contacted", "entered": 31, "converted": 12, "rate": 0.3871},
        "time_in_stage": [{"stage": "mql", "samples": 40, "median_seconds": 61.5,
                           "p90_seconds": 5400.0}, ...],                          # funnel stages but won
        "speed_to_lead": {"samples": 12, "p50_seconds": 754.0, "p90_seconds": 7020.5},
        "sla": {"met": 9, "breached": 3, "running": 4, "stopped": 0, "compliance": 0.75,
                "by_rep": [{"rep_id": "anna", "name": "Anna Berg", "met": 4, ...,
                            "compliance": 0.8}, ...],          # every configured rep, then others
                "by_team": [{"team": "emea", ...}, ...]},      # rep_id/team null: fallback queue
        "reject_reasons": [{"reason": "budget", "count": 3}, ...],               # reason null: none given
        "mql_this_month": 57
      },
      "groups": [{"key": "website", "stages": [...], "conversion": [...], "leak": {...},
                  "time_in_stage": [...], "speed_to_lead": {...},
                  "sla": {"met": .., "breached": .., "running": .., "stopped": .., "compliance": ..},
                  "reject_reasons": [...], "mql_this_month": 31}, ...],          # [] without group_by
      "marketing_sla": {"month": "2026-11", "target": 200, "mql_so_far": 57,
                        "elapsed_fraction": 0.7, "forecast": 81.4, "forecast_vs_target": 0.407,
                        "on_track": false}                     # target 0: forecast_vs_target/on_track null
    }

Durations are seconds (floats, 3 decimals); rates are fractions (4 decimals). :func:`awaiting_contact`
lists the leads waiting for their first call, most urgent first (the dashboard's table).
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Integer, Select, and_, cast, func, literal, or_, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from services.config import HandoffConfig
from services.db.dialect import seconds_between
from services.db.models import assignments, feedback, lead_merges, lead_sla, leads, stage_history
from services.stage_chain import is_move

FUNNEL = ("anonymous", "known", "engaged", "mql", "sql", "contacted", "opportunity", "won")
OFF_FUNNEL = ("lost", "recycled", "disqualified")
STAGES = FUNNEL + OFF_FUNNEL
GROUP_BY = ("source", "campaign", "team", "rep")
SLA_STATES = ("met", "breached", "running", "stopped")
PERCENTILES = (0.5, 0.9)

Key = Any  # a group key: the attribute's value (a string) or None
T = TypeVar("T")
Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


def group_column(group_by: str) -> ColumnElement[Any]:
    """The leads column a ``group_by`` value groups on; ``ValueError`` naming the choices otherwise."""
    columns = {"source": leads.c.source, "campaign": leads.c.campaign, "team": leads.c.team,
               "rep": leads.c.owner}
    if group_by not in columns:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}; got {group_by!r}")
    return columns[group_by]


@dataclass(frozen=True)
class Window:
    """``start <= t < end``; either bound may be None (open)."""

    start: datetime | None
    end: datetime | None

    def on(self, column: Any) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.start is not None:
            where.append(column >= self.start)
        if self.end is not None:
            where.append(column < self.end)
        return where

    def holds(self, column: Any) -> ColumnElement[bool]:
        return and_(literal(True), *self.on(column))


# ---------------------------------------------------------------------------------------------
# The dialect-specific SQL, in one place: session tuning, durations in seconds, percentiles.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Distribution:
    samples: int
    values: Mapping[float, float | None]  # fraction -> percentile_cont


@dataclass(frozen=True)
class Stats:
    """What :func:`stats` found: ``counts[group][name]`` and ``spread[(group, split value)]``."""

    counts: dict[tuple[Key, ...], dict[str, int]]
    spread: dict[tuple[tuple[Key, ...], Key], Distribution]


async def tune(conn: AsyncConnection) -> None:
    """PostgreSQL: room for the report's sorts and hashes in memory, no parallel workers (this
    transaction only)."""
    if conn.dialect.name == "postgresql":
        # Parallel workers cost more to start than they save here: the report's queries already run
        # side by side, and each scans at most a few hundred thousand narrow index entries.
        await conn.execute(text("SELECT set_config('work_mem', '64MB', true), "
                                "set_config('max_parallel_workers_per_gather', '0', true)"))


async def stats(conn: AsyncConnection, source: Any, group: Sequence[str], *, value: str,
                where: ColumnElement[bool], split: str | None = None, split_values: Sequence[str] = (),
                counts: Mapping[str, ColumnElement[bool]] | None = None) -> Stats:
    """Aggregates of the subquery ``source`` per ``group`` columns, in one pass where the dialect allows.

    ``counts``: name -> condition, counted per group. ``spread``: the continuous percentiles
    (:data:`PERCENTILES`) of ``source.c[value]`` over the rows matching ``where``, per group and per
    value of the ``split`` column (one of ``split_values``; without ``split``, under the key None).

    PostgreSQL: one aggregate over the rows, ``percentile_cont(ARRAY[..]) ... FILTER`` per split value
    (no sort of the whole input by the split column). SQLite has no percentile_cont: ``row_number()``
    over the sorted values finds the two rows around each percentile's position; only those come back
    to Python, which interpolates between them exactly as percentile_cont does.
    """
    cols = [source.c[name] for name in group]
    names = list(counts or {})
    count_cols = [func.count().filter(cond).label(name) for name, cond in (counts or {}).items()]
    splits: list[Key] = list(split_values) if split else [None]
    found = Stats({}, {})

    def matching(split_value: Key) -> ColumnElement[bool]:
        return and_(where, source.c[split] == split_value) if split else where

    if conn.dialect.name == "postgresql":
        fractions = postgresql.array([literal(f) for f in PERCENTILES])
        spread_cols = []
        for split_value in splits:
            spread_cols += [func.count().filter(matching(split_value)),
                            func.percentile_cont(fractions).within_group(source.c[value]).filter(matching(split_value))]
        query: Select[Any] = select(*cols, *count_cols, *spread_cols)
        for row in (await conn.execute(query.group_by(*cols) if cols else query)).all():
            key = tuple(row[: len(cols)])
            found.counts[key] = {name: int(row._mapping[name]) for name in names}
            rest = row[len(cols) + len(names):]
            for i, split_value in enumerate(splits):
                samples, pcts = int(rest[2 * i]), rest[2 * i + 1]
                if samples:
                    found.spread[(key, split_value)] = Distribution(
                        samples, {f: _round(v) for f, v in zip(PERCENTILES, pcts, strict=True)})
        return found
    if count_cols:
        query = select(*cols, *count_cols)
        for row in (await conn.execute(query.group_by(*cols) if cols else query)).all():
            found.counts[tuple(row[: len(cols)])] = {name: int(row._mapping[name]) for name in names}
    parts = [*cols, source.c[split]] if split else cols
    values = select(*[c.label(f"p{i}") for i, c in enumerate(parts)], source.c[value].label("value")).where(
        where, *([source.c[split].in_(splits)] if split else [])).subquery()
    vparts = [values.c[f"p{i}"] for i in range(len(parts))]
    ranked = select(
        *vparts, values.c.value,
        func.row_number().over(partition_by=vparts or None, order_by=values.c.value).label("rn"),
        func.count().over(partition_by=vparts or None).label("n"),
    ).subquery()
    wanted = []
    for f in PERCENTILES:
        below = cast(f * (ranked.c.n - 1), Integer) + 1  # 1-based row at or below the position
        wanted += [ranked.c.rn == below, ranked.c.rn == below + 1]
    rparts = [ranked.c[f"p{i}"] for i in range(len(parts))]
    near = select(*rparts, ranked.c.n, ranked.c.rn, ranked.c.value).where(or_(*wanted))
    by_rank: dict[tuple[Key, ...], dict[int, float]] = {}
    sizes: dict[tuple[Key, ...], int] = {}
    for row in (await conn.execute(near)).all():
        part_key = tuple(row[: len(parts)])
        sizes[part_key] = int(row.n)
        by_rank.setdefault(part_key, {})[int(row.rn)] = float(row.value)
    for part_key, ranks in by_rank.items():
        n = sizes[part_key]
        interpolated: dict[float, float | None] = {}
        for f in PERCENTILES:
            position = f * (n - 1)
            index = int(position)
            low = ranks[index + 1]
            high = ranks.get(index + 2, low)
            interpolated[f] = _round(low + (high - low) * (position - index))
        key, split_value = (part_key[:-1], part_key[-1]) if split else (part_key, None)
        found.spread[(key, split_value)] = Distribution(n, interpolated)
    return found


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

async def funnel_report(conn: AsyncConnection, config: HandoffConfig, *, start: datetime | None,
                        end: datetime | None, group_by: str | None, now: datetime,
                        connect: Connect | None = None) -> dict[str, Any]:
    """The funnel report (see the module docstring for every figure and the response shape).

    ``connect`` (e.g. ``db.read`` on PostgreSQL) lets the independent queries run side by side on
    pooled connections; without it they run one after the other on ``conn``.
    """
    key = group_column(group_by) if group_by else None
    window = Window(start, end)
    await tune(conn)
    queries = _Queries(conn, connect)
    if key is None:
        raw, detail = await asyncio.gather(_raw_figures(queries, window, None, now),
                                           queries.run(_sla_detail, window, config))
        totals, by_key = _assemble(raw, [None])[None], {}
    else:
        # The counts of all leads are the sums of the groups' (every lead is in exactly one group);
        # only the percentiles need their own pass over all leads.
        raw, detail, stays, speed = await asyncio.gather(
            _raw_figures(queries, window, key, now), queries.run(_sla_detail, window, config),
            queries.run(_stays, window, None), queries.run(_speed_to_lead, window, None))
        by_key = _assemble(raw, raw.keys())
        totals = _assemble(_summed(raw, stays, speed), [None])[None]
    totals["sla"] = detail
    ordered = sorted(by_key.items(), key=lambda item: (-_entered(item[1]), item[0] is None, str(item[0])))
    groups = [{"key": k, **figures} for k, figures in ordered]
    return {
        "generated_at": now.isoformat(),
        "window": {"from": start.isoformat() if start else None, "to": end.isoformat() if end else None},
        "group_by": group_by,
        "funnel": list(FUNNEL),
        "totals": totals,
        "groups": groups,
        "marketing_sla": marketing_sla(config.marketing_sla.mql_per_month, int(totals["mql_this_month"]), now),
    }


class _Queries:
    """Runs the report's independent queries: in turn on one connection, or (given ``connect``) side by
    side on at most ``PARALLEL`` pooled connections."""

    PARALLEL = 4

    def __init__(self, conn: AsyncConnection, connect: Connect | None) -> None:
        self.conn = conn
        self.connect = connect
        self.lock = asyncio.Lock()  # one connection runs one statement at a time
        self.slots = asyncio.Semaphore(self.PARALLEL)

    async def run(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self.connect is None:
            async with self.lock:
                return await query(self.conn, *args)
        async with self.slots, self.connect() as conn:
            await tune(conn)
            return await query(conn, *args)


@dataclass
class _Raw:
    """What the figure queries return, keyed by group (None: all leads) before assembly."""

    reached: dict[Key, dict[str, int]]
    stays: dict[tuple[Key, str], Distribution]
    current: dict[Key, dict[str, int]]
    speed: dict[Key, Distribution]
    sla: dict[Key, dict[str, int]]
    rejects: dict[Key, list[dict[str, Any]]]
    mqls: dict[Key, int]

    def keys(self) -> set[Key]:
        return set(self.reached) | set(self.current) | set(self.speed) | set(self.sla) | set(self.rejects) | set(
            self.mqls)


async def _raw_figures(queries: _Queries, window: Window, key: Any, now: datetime) -> _Raw:
    """Every figure's query, for all leads (``key`` None: under the key None) or per value of ``key``."""
    found: list[Any] = await asyncio.gather(
        queries.run(_reached, window, key), queries.run(_stays, window, key), queries.run(_current, window, key),
        queries.run(_speed_to_lead, window, key), queries.run(_sla_summary, window, key),
        queries.run(_reject_reasons, window, key), queries.run(_mqls_this_month, key, now))
    return _Raw(*found)


def _summed(raw: _Raw, stays: dict[tuple[Key, str], Distribution], speed: dict[Key, Distribution]) -> _Raw:
    """All leads' figures from the groups' counts (summed) and all leads' own percentiles."""
    def add(per_group: Mapping[Key, Mapping[str, int]]) -> dict[Key, dict[str, int]]:
        total: dict[str, int] = {}
        for counts in per_group.values():
            for name, count in counts.items():
                total[name] = total.get(name, 0) + count
        return {None: total}

    reasons: dict[Key, int] = {}
    for rows in raw.rejects.values():
        for row in rows:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + row["count"]
    return _Raw(reached=add(raw.reached), stays=stays, current=add(raw.current), speed=speed, sla=add(raw.sla),
                rejects={None: _by_frequency([{"reason": r, "count": n} for r, n in reasons.items()])},
                mqls={None: sum(raw.mqls.values())})


def _assemble(raw: _Raw, keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
    """The response's figures per key (of the groups found in ``raw``, or None for all leads)."""
    out: dict[Key, dict[str, Any]] = {}
    for k in keys:
        got, now_in = raw.reached.get(k, {}), raw.current.get(k, {})
        stages: list[dict[str, Any]] = [{"stage": s, "reached": got.get(s, 0), "current": now_in.get(s, 0)}
                                        for s in STAGES]
        conversion = conversions({s: got.get(s, 0) for s in STAGES})
        out[k] = {
            "stages": stages,
            "conversion": conversion,
            "leak": leak_point(conversion),
            "time_in_stage": [_stay_row(stage, raw.stays.get((k, stage))) for stage in FUNNEL[:-1]],
            "speed_to_lead": _speed_row(raw.speed.get(k)),
            "sla": sla_figures(raw.sla.get(k, {})),
            "reject_reasons": raw.rejects.get(k, []),
            "mql_this_month": raw.mqls.get(k, 0),
        }
    return out


def _entered(figures: Mapping[str, Any]) -> int:
    return max((row["reached"] for row in figures["stages"]), default=0)


def _keyed(query: Select[Any], lead_id: Any, key: Any) -> Select[Any]:
    """Join the lead for its group attribute (grouped), or just leave merged leads out (totals)."""
    if key is None:
        # Merged leads are few and listed in lead_merges: a small hashed set, not a join of every row.
        return query.where(lead_id.not_in(select(lead_merges.c.loser_id)))
    return query.join(leads, leads.c.id == lead_id).where(leads.c.merged_into.is_(None))


def _cols(key: Any) -> list[Any]:
    return [key.label("k")] if key is not None else []


def _split(row: Any, key: Any) -> tuple[Key, tuple[Any, ...]]:
    return (row[0], tuple(row[1:])) if key is not None else (None, tuple(row))


async def _reached(conn: AsyncConnection, window: Window, key: Any) -> dict[Key, dict[str, int]]:
    """Funnel stages reached, each lead counted once; plus entries into the off-funnel stages.

    A lead's latest move before ``end`` carries in ``top`` how far it had got by then (see
    services/stage_chain.py), and that move lies in the window exactly when the lead changed stage in
    the window: so counting those moves per ``top`` counts each lead once, without grouping by lead.
    With an open end these are the moves with ``left_at`` NULL: an index-only scan of
    ``ix_stage_history_latest`` on PostgreSQL.
    """
    sh = stage_history.c
    if window.end is None:
        latest = and_(sh.top.is_not(None), sh.left_at.is_(None))
    else:
        latest = and_(sh.top.is_not(None), sh.at < window.end, or_(sh.left_at.is_(None), sh.left_at >= window.end))
    query: Select[Any] = select(*_cols(key), sh.top, func.count()).select_from(stage_history)
    query = _keyed(query, sh.lead_id, key).where(latest, *Window(window.start, None).on(sh.at))
    off: Select[Any] = select(*_cols(key), sh.to_stage, func.count()).select_from(stage_history)
    off = _keyed(off, sh.lead_id, key).where(sh.to_stage.in_(OFF_FUNNEL), is_move(), *window.on(sh.at))
    out: dict[Key, dict[str, int]] = {}
    for row in await conn.execute(query.group_by(*([key] if key is not None else []), sh.top)):
        k, (top, count) = _split(row, key)
        got = out.setdefault(k, {})
        for stage in FUNNEL[:int(top) + 1]:
            got[stage] = got.get(stage, 0) + int(count)
    for row in await conn.execute(off.group_by(*([key] if key is not None else []), sh.to_stage)):
        k, (stage, count) = _split(row, key)
        out.setdefault(k, {})[stage] = int(count)
    return out


async def _stays(conn: AsyncConnection, window: Window, key: Any) -> dict[tuple[Key, str], Distribution]:
    """Completed stays that started in the window, per stage: the stored ``stay`` of each move that
    has a next one (an index-only scan of ``ix_stage_history_stays`` on PostgreSQL)."""
    sh = stage_history.c
    query: Select[Any] = select(*_cols(key), sh.to_stage, sh.stay).select_from(stage_history)
    query = _keyed(query, sh.lead_id, key).where(sh.stay.is_not(None), sh.to_stage.in_(FUNNEL[:-1]),
                                                 *window.on(sh.at))
    found = await stats(conn, query.subquery(), [*(["k"] if key is not None else []), "to_stage"], value="stay",
                        where=literal(True))
    return {((group[0] if key is not None else None), group[-1]): dist for (group, _), dist in found.spread.items()}


async def _current(conn: AsyncConnection, window: Window, key: Any) -> dict[Key, dict[str, int]]:
    query: Select[Any] = select(*_cols(key), leads.c.stage, func.count()).where(
        leads.c.merged_into.is_(None), *window.on(leads.c.stage_changed_at))
    query = query.group_by(*([key] if key is not None else []), leads.c.stage)
    out: dict[Key, dict[str, int]] = {}
    for row in await conn.execute(query):
        k, (stage, count) = _split(row, key)
        out.setdefault(k, {})[stage] = int(count)
    return out


def conversions(reached: Mapping[str, int]) -> list[dict[str, Any]]:
    """Stage-to-stage conversion along the funnel from the ``reached`` counts."""
    rows = []
    for before, after in itertools.pairwise(FUNNEL):
        entered, converted = int(reached.get(before, 0)), int(reached.get(after, 0))
        rate = round(converted / entered, 4) if entered else None
        rows.append({"from": before, "to": after, "entered": entered, "converted": converted, "rate": rate})
    return rows


def leak_point(conversion: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The transition losing the largest share of leads (the first along the funnel on a tie)."""
    candidates = [row for row in conversion if row["rate"] is not None]
    if not candidates:
        return None
    return dict(min(candidates, key=lambda row: row["rate"]))


def _stay_row(stage: str, found: Distribution | None) -> dict[str, Any]:
    if found is None:
        return {"stage": stage, "samples": 0, "median_seconds": None, "p90_seconds": None}
    return {"stage": stage, "samples": found.samples, "median_seconds": found.values.get(0.5),
            "p90_seconds": found.values.get(0.9)}


async def _speed_to_lead(conn: AsyncConnection, window: Window, key: Any) -> dict[Key, Distribution]:
    first = select(assignments.c.lead_id, func.min(assignments.c.assigned_at).label("first_at")).group_by(
        assignments.c.lead_id).subquery()
    speed = seconds_between(conn.dialect.name, leads.c.contacted_at, first.c.first_at)
    values = select(*_cols(key), speed.label("value"))
    values = values.select_from(leads.join(first, first.c.lead_id == leads.c.id)).where(
        leads.c.merged_into.is_(None), leads.c.contacted_at.is_not(None),
        leads.c.contacted_at >= first.c.first_at,  # a contact logged before the assignment is no speed
        *window.on(leads.c.contacted_at))
    found = await stats(conn, values.subquery(), ["k"] if key is not None else [], value="value",
                        where=literal(True))
    return {(group[0] if key is not None else None): dist for (group, _), dist in found.spread.items()}


def _speed_row(found: Distribution | None) -> dict[str, Any]:
    if found is None:
        return {"samples": 0, "p50_seconds": None, "p90_seconds": None}
    return {"samples": found.samples, "p50_seconds": found.values.get(0.5), "p90_seconds": found.values.get(0.9)}


def sla_figures(counts: Mapping[str, int]) -> dict[str, Any]:
    """``{"met", "breached", "running", "stopped", "compliance"}`` from per-state counts."""
    figures: dict[str, Any] = {state: int(counts.get(state, 0)) for state in SLA_STATES}
    decided = figures["met"] + figures["breached"]
    figures["compliance"] = round(figures["met"] / decided, 4) if decided else None
    return figures


async def _sla_summary(conn: AsyncConnection, window: Window, key: Any) -> dict[Key, dict[str, int]]:
    query: Select[Any] = select(*_cols(key), lead_sla.c.state, func.count()).select_from(lead_sla)
    query = _keyed(query, lead_sla.c.lead_id, key).where(*window.on(lead_sla.c.started_at))
    query = query.group_by(*([key] if key is not None else []), lead_sla.c.state)
    out: dict[Key, dict[str, int]] = {}
    for row in await conn.execute(query):
        k, (state, count) = _split(row, key)
        out.setdefault(k, {})[state] = int(count)
    return out


async def _sla_detail(conn: AsyncConnection, window: Window, config: HandoffConfig) -> dict[str, Any]:
    """Totals plus compliance per rep (every configured rep, then unknown ones) and per team."""
    query: Select[Any] = select(lead_sla.c.rep_id, assignments.c.team, lead_sla.c.state, func.count())
    query = query.select_from(lead_sla.outerjoin(assignments, assignments.c.id == lead_sla.c.assignment_id))
    query = _keyed(query, lead_sla.c.lead_id, None).where(*window.on(lead_sla.c.started_at))
    query = query.group_by(lead_sla.c.rep_id, assignments.c.team, lead_sla.c.state)
    total: dict[str, int] = {}
    by_rep: dict[str | None, dict[str, int]] = {rep.id: {} for rep in config.reps}
    by_team: dict[str | None, dict[str, int]] = {team: {} for team in config.teams}
    for rep_id, team, state, count in await conn.execute(query):
        for bucket in (total, by_rep.setdefault(rep_id, {}), by_team.setdefault(team, {})):
            bucket[state] = bucket.get(state, 0) + int(count)
    names = {rep.id: rep.name or rep.id for rep in config.reps}
    return {
        **sla_figures(total),
        "by_rep": [{"rep_id": rep_id, "name": names.get(rep_id or "", rep_id), **sla_figures(counts)}
                   for rep_id, counts in by_rep.items()],
        "by_team": [{"team": team, **sla_figures(counts)} for team, counts in by_team.items()],
    }


async def _reject_reasons(conn: AsyncConnection, window: Window, key: Any) -> dict[Key, list[dict[str, Any]]]:
    query: Select[Any] = select(*_cols(key), feedback.c.reason, func.count()).select_from(feedback)
    query = _keyed(query, feedback.c.lead_id, key).where(feedback.c.type == "rejected", *window.on(feedback.c.at))
    query = query.group_by(*([key] if key is not None else []), feedback.c.reason)
    out: dict[Key, list[dict[str, Any]]] = {}
    for row in await conn.execute(query):
        k, (reason, count) = _split(row, key)
        out.setdefault(k, []).append({"reason": reason, "count": int(count)})
    return {k: _by_frequency(reasons) for k, reasons in out.items()}


def _by_frequency(reasons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(reasons, key=lambda r: (-r["count"], r["reason"] is None, r["reason"] or ""))


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding ``now``: [first instant, first instant of the next month)."""
    now = now.astimezone(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    return start, start + timedelta(days=days)


async def _mqls_this_month(conn: AsyncConnection, key: Any, now: datetime) -> dict[Key, int]:
    start, end = month_bounds(now)
    sh = stage_history.c
    query: Select[Any] = select(*_cols(key), func.count(sh.lead_id.distinct())).select_from(stage_history)
    query = _keyed(query, sh.lead_id, key).where(sh.to_stage == "mql", sh.at >= start, sh.at < end)
    if key is not None:
        query = query.group_by(key)
    out: dict[Key, int] = {}
    for row in await conn.execute(query):
        k, (count,) = _split(row, key)
        out[k] = int(count)
    return out


def marketing_sla(target: int, mql_so_far: int, now: datetime) -> dict[str, Any]:
    """MQLs this month against the target with a linear forecast to the month's end.

    >>> marketing_sla(200, 50, datetime(2026, 11, 16, tzinfo=UTC))["forecast"]
    100.0
    """
    start, end = month_bounds(now)
    elapsed = (now.astimezone(UTC) - start) / (end - start)
    forecast = round(mql_so_far / elapsed, 1) if elapsed > 0 else float(mql_so_far)
    return {
        "month": start.strftime("%Y-%m"),
        "target": target,
        "mql_so_far": mql_so_far,
        "elapsed_fraction": round(elapsed, 4),
        "forecast": forecast,
        "forecast_vs_target": round(forecast / target, 4) if target else None,
        "on_track": forecast >= target if target else None,
    }


# ---------------------------------------------------------------------------------------------
# Leads waiting for their first contact (the dashboard's worklist)
# ---------------------------------------------------------------------------------------------

async def awaiting_contact(conn: AsyncConnection, *, now: datetime, limit: int = 50) -> dict[str, Any]:
    """Leads in ``sql`` whose SLA clock runs (or already breached), most urgent (earliest due) first.

    ``{"count": 12, "items": [{"lead_id", "email", "owner", "team", "total", "due_at", "seconds_left",
    "state", "assigned_at"}]}``; ``seconds_left`` is negative once overdue.
    """
    waiting = and_(leads.c.stage == "sql", leads.c.merged_into.is_(None),
                   lead_sla.c.state.in_(("running", "breached")))
    joined = leads.join(lead_sla, lead_sla.c.lead_id == leads.c.id)
    count = (await conn.execute(select(func.count()).select_from(joined).where(waiting))).scalar_one()
    query = select(leads.c.id, leads.c.email, leads.c.owner, leads.c.team, leads.c.total, leads.c.assigned_at,
                   lead_sla.c.due_at, lead_sla.c.state, lead_sla.c.rep_id).select_from(joined).where(waiting)
    query = query.order_by(lead_sla.c.due_at, leads.c.id).limit(limit)
    items = []
    for row in (await conn.execute(query)).mappings():
        items.append({
            "lead_id": row["id"], "email": row["email"], "owner": row["owner"] or row["rep_id"],
            "team": row["team"], "total": row["total"], "state": row["state"],
            "assigned_at": row["assigned_at"].isoformat() if row["assigned_at"] else None,
            "due_at": row["due_at"].isoformat(),
            "seconds_left": round((row["due_at"] - now).total_seconds(), 1),
        })
    return {"count": int(count), "items": items}


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)
