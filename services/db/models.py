"""Every table, in one metadata. Migrations (``services/migrations``) are generated from it.

Groups: the embedded bus (log, partitions, offsets, members), the outbox and processed-event ids,
ingest's dedupe ids, the lead state (leads, identities, touchpoints, stage/score history, merges),
routing state (assignments, reps, cursors, account owners), the notifier's rows (deliveries, SLA
timers), dead letters, feedback, and the demo inbox.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from services.db.types import JsonText, JsonType, UtcDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# BigInteger primary keys autoincrement on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# ---------------------------------------------------------------- embedded bus
bus_partitions = Table(
    "bus_partitions", metadata,
    Column("topic", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True),
    # The next offset to hand out; publishers update it under a row lock, so offsets commit in order.
    Column("next_offset", BigInteger, nullable=False, default=0),
)
bus_log = Table(
    "bus_log", metadata,
    Column("topic", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("key", String(500), nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JsonType, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)
bus_offsets = Table(
    "bus_offsets", metadata,
    Column("group_id", String(200), primary_key=True),
    Column("topic", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("committed", BigInteger, nullable=False, default=0),
    Column("owner", String(100), nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
)
bus_members = Table(
    "bus_members", metadata,
    Column("group_id", String(200), primary_key=True),
    Column("member_id", String(100), primary_key=True),
    Column("lease_until", UtcDateTime, nullable=False),
)

# ---------------------------------------------------------------- outbox and idempotency
outbox = Table(
    "outbox", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("topic", String(200), nullable=False),
    Column("key", String(500), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("type", String(200), nullable=False),
    Column("source", String(200), nullable=False),
    Column("time", UtcDateTime, nullable=False),
    # JSON text: written once per event (hundreds per scoring batch), read once whole by the relay.
    Column("data", JsonText, nullable=False),
)
processed_events = Table(
    "processed_events", metadata,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("processed_at", UtcDateTime, nullable=False),
)
ingest_events = Table(
    "ingest_events", metadata,
    Column("event_id", String(200), primary_key=True),
    Column("source", String(100), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

# ---------------------------------------------------------------- leads
OPEN_OWNED_WHERE = "stage IN ('sql', 'contacted') AND owner IS NOT NULL AND merged_into IS NULL"

leads = Table(
    "leads", metadata,
    Column("id", String(64), primary_key=True),
    Column("stage", String(32), nullable=False, index=True),
    Column("email", String(320), nullable=True, index=True),
    Column("company_domain", String(255), nullable=True, index=True),
    Column("fit", Float, nullable=False, default=0),
    Column("engagement", Float, nullable=False, default=0),
    Column("total", Float, nullable=False, default=0),
    Column("traits", JsonType, nullable=False),
    # The scoring fold (scoring.state.LeadScoreState), as JSON text: rewritten for every lead of every
    # scoring batch and read only whole (a 310-row update: 6.4 ms as JSONB, 3.5 ms as text).
    Column("score_state", JsonText, nullable=False),
    # The score as of the last scoring: {fit, engagement, total, fit_breakdown: [...], ...} (the lead
    # document's), as JSON text for the same reason.
    Column("score", JsonText, nullable=True),
    Column("source", String(100), nullable=True, index=True),  # first-touch source
    Column("campaign", String(200), nullable=True, index=True),  # first-touch campaign
    Column("owner", String(100), nullable=True, index=True),  # assigned rep
    Column("team", String(100), nullable=True, index=True),
    Column("merged_into", String(64), nullable=True),
    Column("created_at", UtcDateTime, nullable=False, index=True),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("stage_changed_at", UtcDateTime, nullable=False),
    Column("qualified_at", UtcDateTime, nullable=True, index=True),
    Column("assigned_at", UtcDateTime, nullable=True),
    Column("contacted_at", UtcDateTime, nullable=True),
    Column("version", Integer, nullable=False, default=0),
    # The funnel report's "now in stage" and speed-to-lead as index-only scans (services/reports.py).
    # Both columns change only when the lead moves, so scoring's frequent updates stay HOT.
    Index("ix_leads_stage_changed", "stage_changed_at", postgresql_include=["stage"],
          postgresql_where=text("merged_into IS NULL"), sqlite_where=text("merged_into IS NULL")),
    Index("ix_leads_contacted", "contacted_at", postgresql_include=["id"],
          postgresql_where=text("contacted_at IS NOT NULL AND merged_into IS NULL"),
          sqlite_where=text("contacted_at IS NOT NULL AND merged_into IS NULL")),
    # Each rep's open leads, counted by the router on every batch that assigns (services/rep_loads.py).
    Index("ix_leads_open_owner", "owner", postgresql_where=text(OPEN_OWNED_WHERE),
          sqlite_where=text(OPEN_OWNED_WHERE)),
    # The leads merged into a lead, read for its document (every CRM push, every GET of a lead): without
    # it each read scanned the whole table. Partial: most leads were never merged away.
    Index("ix_leads_merged_into", "merged_into", postgresql_where=text("merged_into IS NOT NULL"),
          sqlite_where=text("merged_into IS NOT NULL")),
)
lead_identities = Table(
    "lead_identities", metadata,
    Column("kind", String(16), primary_key=True),  # email | user | anon
    Column("value", String(320), primary_key=True),
    Column("lead_id", String(64), nullable=False, index=True),
    Column("linked_at", UtcDateTime, nullable=False),
)
touchpoints = Table(
    "touchpoints", metadata,
    Column("event_id", String(200), primary_key=True),
    Column("lead_id", String(64), nullable=False),
    Column("type", String(100), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("source", String(100), nullable=False),
    Column("campaign", String(200), nullable=True),
    Column("payload", JsonType, nullable=False),
    Index("ix_touchpoints_lead_time", "lead_id", "occurred_at"),
)
stage_history = Table(
    "stage_history", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("lead_id", String(64), nullable=False),
    Column("from_stage", String(32), nullable=True),
    Column("to_stage", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("cause", Text, nullable=False),
    # Derived on write from the lead's chain of moves (services/stage_chain.py), NULL on rows that
    # re-enter the stage the lead is in (a reassignment): when the lead moved on (``left_at``), the
    # seconds it stayed (``stay``), and the furthest funnel rank reached so far (``top``). The funnel
    # report then aggregates plain rows instead of a window pass over the whole history.
    Column("left_at", UtcDateTime, nullable=True),
    Column("stay", Float, nullable=True),
    Column("top", Integer, nullable=True),
    Index("ix_stage_history_lead", "lead_id", "at", "id", postgresql_include=["from_stage", "to_stage"]),
    Index("ix_stage_history_to_at", "to_stage", "at"),
    # The report's two big figures as index-only scans: completed stays per stage, and each lead's
    # latest move (how far it got).
    Index("ix_stage_history_stays", "to_stage", "stay", postgresql_include=["at", "lead_id"],
          postgresql_where=text("stay IS NOT NULL"), sqlite_where=text("stay IS NOT NULL")),
    Index("ix_stage_history_latest", "top", postgresql_include=["at", "lead_id"],
          postgresql_where=text("top IS NOT NULL AND left_at IS NULL"),
          sqlite_where=text("top IS NOT NULL AND left_at IS NULL")),
)
score_history = Table(
    "score_history", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("lead_id", String(64), nullable=False, index=True),
    Column("at", UtcDateTime, nullable=False),
    Column("fit", Float, nullable=False),
    Column("engagement", Float, nullable=False),
    Column("total", Float, nullable=False),
    Column("cause", Text, nullable=False),
)
lead_merges = Table(
    "lead_merges", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("winner_id", String(64), nullable=False, index=True),
    Column("loser_id", String(64), nullable=False, index=True),
    Column("at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
)

# ---------------------------------------------------------------- routing
assignments = Table(
    "assignments", metadata,
    Column("id", String(64), primary_key=True),
    Column("lead_id", String(64), nullable=False, index=True),
    Column("rep_id", String(100), nullable=True, index=True),
    Column("team", String(100), nullable=True),
    Column("reason", Text, nullable=False),
    Column("assigned_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("end_reason", Text, nullable=True),
)
rep_state = Table(
    "rep_state", metadata,
    Column("rep_id", String(100), primary_key=True),
    Column("available", Boolean, nullable=True),  # None: as in the config
    Column("capacity", Integer, nullable=True),  # None: as in the config
    Column("updated_at", UtcDateTime, nullable=False),
)
routing_cursors = Table(
    "routing_cursors", metadata,
    Column("team", String(100), primary_key=True),
    Column("cursor", JsonType, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)
account_owners = Table(
    "account_owners", metadata,
    Column("company_domain", String(255), primary_key=True),
    Column("rep_id", String(100), nullable=False),
    Column("since", UtcDateTime, nullable=False),
)

# ---------------------------------------------------------------- notifier
deliveries = Table(
    "deliveries", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("target", String(50), nullable=False),  # crm | alert:webhook | alert:pagerduty | alert:slack
    Column("order_key", String(200), nullable=False),  # per-lead order: one in flight per key and target
    Column("idempotency_key", String(300), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("lead_id", String(64), nullable=True, index=True),
    Column("payload", JsonType, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime, nullable=True),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_order", "target", "order_key", "id"),
)
sla_timers = Table(
    "sla_timers", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("lead_id", String(64), nullable=False, index=True),
    Column("assignment_id", String(64), nullable=False),
    Column("rep_id", String(100), nullable=True),
    Column("kind", String(20), nullable=False),  # reminder | breach
    Column("fraction", Float, nullable=True),
    Column("due_at", UtcDateTime, nullable=False),  # the SLA due time
    Column("fire_at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),  # pending | fired | cancelled
    Column("fired_at", UtcDateTime, nullable=True),
    Index("ix_sla_timers_due", "status", "fire_at"),
)
lead_sla = Table(
    "lead_sla", metadata,
    Column("lead_id", String(64), primary_key=True),
    Column("assignment_id", String(64), nullable=False),
    Column("rep_id", String(100), nullable=True),
    Column("due_at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),  # running | met | breached | stopped
    Column("reminders_sent", Integer, nullable=False, default=0),
    Column("breached_at", UtcDateTime, nullable=True),
    Column("paged", Boolean, nullable=False, default=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("stopped_at", UtcDateTime, nullable=True),
)
feedback = Table(
    "feedback", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("lead_id", String(64), nullable=False, index=True),
    Column("type", String(20), nullable=False),
    Column("rep_id", String(100), nullable=True),
    Column("reason", Text, nullable=True),
    Column("at", UtcDateTime, nullable=False),
    Column("channel", String(50), nullable=False),  # api | crm:<kind>
)

# ---------------------------------------------------------------- failures and demo
dead_letters = Table(
    "dead_letters", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("origin", String(200), nullable=False),  # consumer:<group> | delivery:<target>
    Column("topic", String(200), nullable=True),
    Column("key", String(500), nullable=True),
    Column("event_id", String(200), nullable=True),
    Column("payload", JsonType, nullable=False),  # the event (or delivery) as JSON, enough to replay
    Column("error", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
    Column("replayed_at", UtcDateTime, nullable=True),
    Column("delivery_id", BigInteger, nullable=True),
)
demo_inbox = Table(
    "demo_inbox", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel", String(50), nullable=False, index=True),
    Column("headers", JsonType, nullable=False),
    Column("body", JsonType, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

