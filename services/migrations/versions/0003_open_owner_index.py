"""each rep's open leads through a partial index

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 06:00:00

The router counts each rep's open leads (stage sql or contacted, owned, not merged away) on every batch
that assigns a lead (services/rep_loads.py). Over the stage index that count visited every lead at
those stages, merged ones included; ``ix_leads_open_owner`` holds only the leads it counts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OPEN_OWNED_WHERE = sa.text("stage IN ('sql', 'contacted') AND owner IS NOT NULL AND merged_into IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.create_index("ix_leads_open_owner", ["owner"], unique=False,
                              postgresql_where=OPEN_OWNED_WHERE, sqlite_where=OPEN_OWNED_WHERE)


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index("ix_leads_open_owner")
