"""the scoring fold, the stored score and the outbox's event data as JSON text

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 23:15:00

``leads.score_state`` and ``leads.score`` are rewritten for every lead of every scoring batch, and
``outbox.data`` is written for every event; all three are only ever read whole. As JSONB, PostgreSQL
parsed each write into its binary form (a 310-row update of the state: 6.4 ms as JSONB, 3.5 ms as
text). The values stay the same JSON; SQLite stored text already (only the declared type changes). On
PostgreSQL the upgrade rewrites both tables under an exclusive lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


COLUMNS = {"leads": {"score_state": False, "score": True}, "outbox": {"data": False}}  # name: nullable
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, nullable in columns.items():
                batch_op.alter_column(name, type_=sa.Text(), existing_nullable=nullable,
                                      postgresql_using=f"{name}::text")


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, nullable in columns.items():
                batch_op.alter_column(name, existing_type=sa.Text(), type_=JSON_TYPE, existing_nullable=nullable,
                                      postgresql_using=f"{name}::jsonb")
