"""A text column's values as one text (services.db.arrays.joined_texts): split back as PostgreSQL's
``string_to_array(text, SEPARATOR, NULL_MARK)`` splits, they are the values, or they are not joined."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.db.arrays import NULL_MARK, SEPARATOR, joined_texts


def string_to_array(text: str) -> list[str | None]:
    """What PostgreSQL's ``string_to_array(text, SEPARATOR, NULL_MARK)`` returns."""
    if text == "":
        return []  # an empty input is an empty array
    return [None if part == NULL_MARK else part for part in text.split(SEPARATOR)]


TEXT = st.text(alphabet=st.sampled_from(["a", "\u00e9", "'", '"', "\\", ",", SEPARATOR, NULL_MARK, "\n"]))


@given(st.lists(st.none() | TEXT, min_size=1, max_size=12))
def test_joined_values_split_back_into_themselves(values: list[str | None]) -> None:
    joined = joined_texts(values)
    if joined is not None:
        assert string_to_array(joined) == values


@given(st.lists(st.none() | st.text(alphabet="ab,'\u00e9"), min_size=1, max_size=12))
def test_values_without_separators_are_joined_unless_the_text_would_be_empty(values: list[str | None]) -> None:
    assert (joined_texts(values) is None) == (values == [""])


def test_values_that_are_not_text_are_not_joined() -> None:
    assert joined_texts(["a", 3]) is None
    assert joined_texts(["a", f"b{SEPARATOR}c"]) is None
    assert joined_texts([NULL_MARK]) is None
    assert joined_texts([None, "x"]) == f"{NULL_MARK}{SEPARATOR}x"
