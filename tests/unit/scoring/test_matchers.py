"""services.matchers: every matcher, dotted paths, AND semantics and the errors a config author sees."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.matchers import MatcherError, compile_matcher, compile_when, is_missing, lookup

TOUCH = {
    "type": "page_view",
    "properties": {"path": "/pricing/teams", "count": 3, "score": "12.5", "flag": True, "none": None},
    "traits": {"title": "VP Sales", "employees": 120, "country": "DE"},
}


def matches(when: dict[str, Any], data: dict[str, Any] = TOUCH) -> bool:
    return compile_when(when)(data)


# -- lookup -----------------------------------------------------------------------------------------

def test_lookup_follows_dotted_paths_and_reports_missing() -> None:
    assert lookup(TOUCH, "properties.path") == "/pricing/teams"
    assert lookup(TOUCH, "type") == "page_view"
    assert is_missing(lookup(TOUCH, "properties.nope"))
    assert is_missing(lookup(TOUCH, "type.deeper"))  # a string is not a mapping
    assert is_missing(lookup({}, "a"))
    assert lookup(TOUCH, "properties.none") is None and not is_missing(lookup(TOUCH, "properties.none"))


# -- equality -----------------------------------------------------------------------------------------

def test_plain_value_is_equality_case_insensitive_for_strings() -> None:
    assert matches({"type": "page_view"})
    assert matches({"type": "PAGE_VIEW"})
    assert not matches({"type": "form_submit"})
    assert matches({"properties.count": 3})
    assert not matches({"properties.count": "3"})  # no coercion for plain equality
    assert not matches({"properties.missing": None})  # a missing key never equals anything


def test_equality_with_nested_path_and_bool() -> None:
    assert matches({"properties.flag": True})
    assert not matches({"properties.flag": False})
    assert matches({"traits.country": "de"})


# -- prefix -----------------------------------------------------------------------------------------

def test_prefix_is_case_sensitive_and_needs_a_string_value() -> None:
    assert matches({"properties.path": {"prefix": "/pricing"}})
    assert not matches({"properties.path": {"prefix": "/PRICING"}})
    assert not matches({"properties.count": {"prefix": "3"}})
    assert not matches({"properties.missing": {"prefix": ""}})
    assert matches({"properties.path": {"prefix": ""}})


@settings(max_examples=60)
@given(value=st.text(max_size=8), prefix=st.text(max_size=4))
def test_prefix_property(value: str, prefix: str) -> None:
    assert compile_matcher("p", {"prefix": prefix})(value) == value.startswith(prefix)


# -- regex ------------------------------------------------------------------------------------------

def test_regex_searches_anywhere_and_honours_inline_flags() -> None:
    assert matches({"traits.title": {"regex": r"(?i)\bvp\b"}})
    assert matches({"traits.title": {"regex": "Sales$"}})
    assert not matches({"traits.title": {"regex": "^Sales"}})
    assert not matches({"traits.employees": {"regex": "120"}})  # only strings are searched
    assert not matches({"traits.missing": {"regex": ".*"}})


# -- in ---------------------------------------------------------------------------------------------

def test_in_matches_any_option_case_insensitively() -> None:
    assert matches({"traits.country": {"in": ["FR", "de"]}})
    assert not matches({"traits.country": {"in": ["FR", "GB"]}})
    assert not matches({"traits.country": {"in": []}})
    assert matches({"traits.employees": {"in": [100, 120]}})
    assert not matches({"traits.missing": {"in": [None]}})


@settings(max_examples=60)
@given(value=st.integers(-3, 3), options=st.lists(st.integers(-3, 3), max_size=4))
def test_in_property(value: int, options: list[int]) -> None:
    assert compile_matcher("p", {"in": options})(value) == (value in options)


# -- gte / lte --------------------------------------------------------------------------------------

def test_gte_lte_compare_numbers_and_numeric_strings() -> None:
    assert matches({"traits.employees": {"gte": 50}})
    assert matches({"traits.employees": {"gte": 120, "lte": 120}})
    assert not matches({"traits.employees": {"lte": 119.5}})
    assert matches({"properties.score": {"gte": 12}})  # "12.5" compares as a number
    assert not matches({"properties.score": {"gte": 13}})


def test_gte_lte_refuse_bools_missing_and_non_numeric_strings() -> None:
    assert not matches({"properties.flag": {"gte": 0}})
    assert not matches({"traits.missing": {"lte": 10}})
    assert not matches({"traits.title": {"gte": 1}})
    assert not matches({"properties.path": {"gte": 0}})


def test_gte_lte_compare_strings_as_strings() -> None:
    assert compile_matcher("p", {"gte": "2026-01-01"})("2026-03-01")
    assert not compile_matcher("p", {"lte": "2026-01-01"})("2026-03-01")
    assert not compile_matcher("p", {"gte": "a"})(5)  # a number against a string bound: no comparison


@settings(max_examples=60)
@given(value=st.floats(-1e6, 1e6), bound=st.floats(-1e6, 1e6))
def test_gte_lte_property(value: float, bound: float) -> None:
    assert compile_matcher("p", {"gte": bound})(value) == (value >= bound)
    assert compile_matcher("p", {"lte": bound})(value) == (value <= bound)


# -- exists -----------------------------------------------------------------------------------------

def test_exists_treats_none_as_absent() -> None:
    assert matches({"traits.title": {"exists": True}})
    assert not matches({"traits.title": {"exists": False}})
    assert matches({"traits.missing": {"exists": False}})
    assert not matches({"properties.none": {"exists": True}})
    assert matches({"properties.none": {"exists": False}})


# -- combinations -----------------------------------------------------------------------------------

def test_every_entry_and_every_operator_must_hold() -> None:
    assert matches({"type": "page_view", "properties.path": {"prefix": "/pricing"}})
    assert not matches({"type": "page_view", "properties.path": {"prefix": "/blog"}})
    assert matches({"properties.path": {"prefix": "/pricing", "regex": "teams$"}})
    assert not matches({"properties.path": {"prefix": "/pricing", "regex": "^/blog"}})


def test_empty_or_missing_when_matches_everything() -> None:
    assert compile_when({})({})
    assert compile_when(None)({"anything": 1})


# -- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"startswith": "/x"}, "unknown matcher"),
        ({}, "unknown matcher"),
        ({"prefix": 3}, "prefix takes a string"),
        ({"regex": 3}, "regex takes a string"),
        ({"regex": "("}, "invalid regex"),
        ({"in": "DE"}, "in takes a list"),
        ({"gte": True}, "gte takes a number or a string"),
        ({"lte": [1]}, "lte takes a number or a string"),
        ({"exists": "yes"}, "exists takes true or false"),
    ],
)
def test_bad_matchers_name_the_path_and_the_fix(spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(MatcherError) as info:
        compile_when({"properties.path": spec}, where="scoring.engagement.0.when")
    assert needle in str(info.value)
    assert info.value.path == "scoring.engagement.0.when.properties.path"
    assert isinstance(info.value, ValueError)


def test_when_must_be_a_mapping() -> None:
    with pytest.raises(MatcherError, match="must be a mapping"):
        compile_when(["type", "page_view"])  # type: ignore[arg-type]
