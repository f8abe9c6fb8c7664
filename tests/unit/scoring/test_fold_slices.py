"""The scoring consumer folds a batch's leads in slices: every lead exactly once, in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scoring.consumer import FOLD_SHARES, MIN_SLICE, _slices


@given(st.integers(min_value=0, max_value=3_000))
def test_slices_cover_every_lead_once_in_order(count: int) -> None:
    items = list(range(count))
    parts = list(_slices(items))  # type: ignore[arg-type]  # any list: the slicing reads no lead
    assert [i for part in parts for i in part] == items
    assert all(parts) and len(parts) <= len(FOLD_SHARES)
    assert all(len(part) >= MIN_SLICE for part in parts[:-1])


def test_the_last_slice_of_a_full_batch_is_the_smallest() -> None:
    sizes = [len(part) for part in _slices(list(range(400)))]  # type: ignore[arg-type]
    assert len(sizes) == len(FOLD_SHARES) and sizes[-1] == min(sizes) and sum(sizes) == 400
