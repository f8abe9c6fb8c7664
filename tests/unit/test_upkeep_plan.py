"""Which tables a round of upkeep VACUUMs or ANALYZEs: autovacuum's own rules, as a pure function."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.db.upkeep import Chore, TableActivity, Thresholds, plan_upkeep

counts = st.integers(min_value=0, max_value=10_000_000)
activity = st.builds(TableActivity, table=st.sampled_from(["leads", "outbox", "touchpoints", "deliveries"]),
                     live=counts, dead=counts, changed_since_analyze=counts, inserted_since_vacuum=counts)


def table(name: str = "outbox", live: int = 0, dead: int = 0, changed: int = 0, inserted: int = 0) -> TableActivity:
    return TableActivity(name, live=live, dead=dead, changed_since_analyze=changed, inserted_since_vacuum=inserted)


def test_a_quiet_table_is_left_alone() -> None:
    assert plan_upkeep([table(live=1_000, dead=250, changed=150, inserted=1_200)]) == []


def test_dead_rows_past_the_threshold_get_a_vacuum() -> None:
    # 50 + 0.2 * 1,000 = 250 dead rows allowed
    assert plan_upkeep([table(live=1_000, dead=251)]) == [Chore("outbox", vacuum=True, analyze=False)]


def test_inserts_past_the_threshold_get_a_vacuum_of_an_insert_only_table() -> None:
    # 1,000 + 0.2 * 10,000 = 3,000 inserted rows allowed; the changed rows are the same inserts
    assert plan_upkeep([table("touchpoints", live=10_000, inserted=3_001, changed=900)]) == [
        Chore("touchpoints", vacuum=True, analyze=False)]


def test_changes_past_the_threshold_get_an_analyze_and_with_a_vacuum_both_in_one_statement() -> None:
    # 50 + 0.1 * 1,000 = 150 changed rows allowed
    assert plan_upkeep([table(live=1_000, changed=151)]) == [Chore("outbox", vacuum=False, analyze=True)]
    chores = plan_upkeep([table("leads", live=1_000, dead=300, changed=300)])
    assert [c.statement for c in chores] == ['VACUUM (ANALYZE) "leads"']


def test_statements_and_order() -> None:
    chores = plan_upkeep([table("touchpoints", changed=51), table("leads", dead=51), table("outbox")])
    assert [c.statement for c in chores] == ['VACUUM "leads"', 'ANALYZE "touchpoints"']


def test_a_never_analyzed_new_table_is_analyzed_once_it_has_rows() -> None:
    assert plan_upkeep([table("deliveries", live=0, changed=60)]) == [Chore("deliveries", vacuum=False, analyze=True)]


@given(st.lists(activity, unique_by=lambda t: t.table))
def test_chores_are_exactly_the_tables_past_a_threshold(tables: list[TableActivity]) -> None:
    limits = Thresholds()
    chores = {c.table: c for c in plan_upkeep(tables, limits)}
    for t in tables:
        vacuum = t.dead > 50 + 0.2 * t.live or t.inserted_since_vacuum > 1_000 + 0.2 * t.live
        analyze = t.changed_since_analyze > 50 + 0.1 * t.live
        expected = Chore(t.table, vacuum, analyze) if vacuum or analyze else None
        assert chores.get(t.table) == expected


@given(activity, st.integers(min_value=0, max_value=1_000_000))
def test_more_dead_rows_never_take_a_vacuum_away(t: TableActivity, more: int) -> None:
    before = plan_upkeep([t])
    after = plan_upkeep([TableActivity(t.table, t.live, t.dead + more, t.changed_since_analyze,
                                       t.inserted_since_vacuum)])
    assert not (before and before[0].vacuum) or (after and after[0].vacuum)
