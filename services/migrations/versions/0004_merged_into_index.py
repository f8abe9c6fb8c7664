"""the leads merged into a lead through a partial index

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 15:45:00

A lead's document lists the leads merged into it (services/lead_documents.py), read for every CRM push
and every ``GET /v1/leads/{id}``. ``leads.merged_into`` had no index: each of those reads scanned the
whole leads table. ``ix_leads_merged_into`` holds only the leads that were merged away.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MERGED = sa.text("merged_into IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.create_index("ix_leads_merged_into", ["merged_into"], unique=False,
                              postgresql_where=MERGED, sqlite_where=MERGED)


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index("ix_leads_merged_into")
