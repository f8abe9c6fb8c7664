"""stage chain: when each move ended, how long it lasted, how far the lead had got

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 18:40:00

Adds ``stage_history.left_at``, ``stay`` and ``top`` (see services/stage_chain.py), derives them for the
history already stored, and adds the partial indexes the funnel report scans (two on stage_history,
two on leads).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import services.db.types
from services.stage_chain import chain_update

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STAYS_WHERE = sa.text("stay IS NOT NULL")
LATEST_WHERE = sa.text("top IS NOT NULL AND left_at IS NULL")
LIVE_WHERE = sa.text("merged_into IS NULL")
CONTACTED_WHERE = sa.text("contacted_at IS NOT NULL AND merged_into IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("stage_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("left_at", services.db.types.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("stay", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("top", sa.Integer(), nullable=True))
    bind = op.get_bind()
    bind.execute(chain_update(bind.dialect.name))
    with op.batch_alter_table("stage_history", schema=None) as batch_op:
        batch_op.create_index("ix_stage_history_stays", ["to_stage", "stay"], unique=False,
                              postgresql_include=["at", "lead_id"], postgresql_where=STAYS_WHERE,
                              sqlite_where=STAYS_WHERE)
        batch_op.create_index("ix_stage_history_latest", ["top"], unique=False,
                              postgresql_include=["at", "lead_id"], postgresql_where=LATEST_WHERE,
                              sqlite_where=LATEST_WHERE)
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.create_index("ix_leads_stage_changed", ["stage_changed_at"], unique=False,
                              postgresql_include=["stage"], postgresql_where=LIVE_WHERE, sqlite_where=LIVE_WHERE)
        batch_op.create_index("ix_leads_contacted", ["contacted_at"], unique=False, postgresql_include=["id"],
                              postgresql_where=CONTACTED_WHERE, sqlite_where=CONTACTED_WHERE)


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index("ix_leads_contacted")
        batch_op.drop_index("ix_leads_stage_changed")
    with op.batch_alter_table("stage_history", schema=None) as batch_op:
        batch_op.drop_index("ix_stage_history_latest")
        batch_op.drop_index("ix_stage_history_stays")
        batch_op.drop_column("top")
        batch_op.drop_column("stay")
        batch_op.drop_column("left_at")
