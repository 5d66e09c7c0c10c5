"""The OData $filter / $select / $expand subset used by Batch list operations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.odata import ODataError, apply_select, parse_expand, parse_filter, parse_select

POOL: dict[str, Any] = {
    "id": "pool-1",
    "state": "active",
    "allocationState": "steady",
    "targetDedicatedNodes": 2,
    "currentDedicatedNodes": 2,
    "enableAutoScale": False,
    "creationTime": "2024-05-01T10:00:00.1234567Z",
    "lastModified": datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
    "displayName": "it's mine",
    "executionInfo": {"exitCode": -1, "result": "failure"},
    "stats": None,
}


def matches(text: str, obj: dict[str, Any] = POOL) -> bool:
    return parse_filter(text)(obj)


@pytest.mark.parametrize(("text", "expected"), [
    ("state eq 'active'", True),
    ("state eq 'Active'", False),  # case-sensitive: Batch enum values are lower-case
    ("state ne 'active'", False),
    ("(state eq 'idle') or (state eq 'active')", True),
    ("id eq 'pool-1' and state ne 'deleting'", True),
    ("id eq 'x' and state ne 'deleting'", False),
    ("targetDedicatedNodes gt 1", True),
    ("targetDedicatedNodes ge 2 and targetDedicatedNodes le 2", True),
    ("targetDedicatedNodes lt 2", False),
    ("targetDedicatedNodes eq 2.0", True),
    ("targetDedicatedNodes eq '2'", False),  # different types are never equal...
    ("targetDedicatedNodes ne '2'", True),   # ...so they are always unequal
    ("targetDedicatedNodes gt '1'", False),  # ...and never ordered
    ("enableAutoScale eq false", True),
    ("enableAutoScale", False),
    ("not enableAutoScale", True),
    ("enableAutoScale eq 0", False),  # booleans are not numbers
    ("executionInfo/exitCode eq -1", True),
    ("executionInfo/result eq 'failure'", True),
    ("executionInfo/missing eq null", True),
    ("nothing/at/all eq null", True),
    ("nothing ne null", False),
    ("stats eq null", True),
    ("nothing gt 1", False),
    ("nothing lt 1", False),
    ("startswith(id,'pool')", True),
    ("startswith(id, 'Pool')", False),
    ("startswith(nothing,'x')", False),
    ("startswith(id,'p') eq true", True),
    ("displayName eq 'it''s mine'", True),
    ("creationTime gt datetime'2024-01-01T00:00:00Z'", True),
    ("creationTime lt DateTime'2024-05-01T10:00:00.2Z'", True),
    ("creationTime gt 2024-05-01T10:00:00Z", True),
    ("creationTime eq 2024-05-01T10:00:00.1234567Z", True),
    ("lastModified ge 2024-06-01T12:00:00Z and lastModified le 2024-06-01T14:00:00+02:00", True),
    ("lastModified gt datetime'2024-06-01T12:00:00Z'", False),
    ("displayName gt 2024-01-01T00:00:00Z", False),  # not a timestamp string: incomparable
    ("not state eq 'active'", False),  # "not" negates the whole comparison
    ("not (state eq 'active') or id eq 'pool-1'", True),
    ("not not state eq 'active'", True),
    ("state EQ 'active' AND NOT (id Eq 'x')", True),  # keywords are case-insensitive
    ("State eq 'active'", True),  # property names fall back to a case-insensitive match
    ("((((state eq 'active'))))", True),
    ("state eq 'idle' or state eq 'active' and id eq 'x'", False),  # "and" binds tighter than "or"
    ("(state eq 'idle' or state eq 'active') and id eq 'pool-1'", True),
    ("true", True),
    ("false or true", True),
    ("", True),
    ("   ", True),
    ("1 eq 1", True),
    ("id eq id", True),
])
def test_filter_evaluation(text: str, expected: bool) -> None:
    assert matches(text) is expected


def test_long_chains_do_not_recurse() -> None:
    text = " and ".join(["state eq 'active'"] * 5000)
    assert matches(text)
    assert not matches(" or ".join(["state eq 'x'"] * 5000))


def test_properties_lists_the_referenced_paths() -> None:
    predicate = parse_filter("startswith(id,'p') and not (executionInfo/exitCode ne 0) or state eq 'active'")
    assert predicate.properties == {"id", "executionInfo/exitCode", "state"}
    assert parse_filter("").properties == frozenset()


@pytest.mark.parametrize(("text", "position", "reason"), [
    ("state eq", 8, "expected a value"),
    ("state eq 'active' and", 21, "expected a value"),
    ("state eq 'active' and eq 1", 22, "expected a value before 'eq'"),
    ("state 'active'", 6, "expected 'and', 'or' or the end of the clause"),
    ("a eq 1 eq 2", 7, "expected 'and', 'or' or the end of the clause"),
    ("(state eq 'idle'", 16, "expected ')' to close the '(' at position 0"),
    ("state eq 'idle')", 15, "expected 'and', 'or' or the end of the clause"),
    ("state eq 'it''s", 9, "unterminated string literal"),
    ("'abc'", 0, "expected a condition"),
    ("42 and state eq 'x'", 0, "expected a condition"),
    ("not 'x'", 4, "expected a condition"),
    ("state eq 'a' and 7", 17, "expected a condition"),
    ("contains(id,'x')", 0, "unsupported function 'contains'"),
    ("startswith(id)", 0, "startswith takes 2 arguments, not 1"),
    ("startswith(id,'a','b')", 0, "startswith takes 2 arguments, not 3"),
    ("startswith(id 'a')", 14, "expected ')' to close startswith("),
    ("executionInfo/ eq 1", 14, "expected a property name after '/'"),
    ("id eq guid'abc'", 6, "unsupported literal type 'guid'"),
    ("creationTime gt datetime'yesterday'", 25, "'yesterday' is not a valid timestamp"),
    ("creationTime gt 2024-13-45T00:00:00Z", 16, "is not a valid timestamp"),
    ("n eq 12abc", 5, "'12abc' is not a valid number"),
    ("n eq 1.", 5, "'1.' is not a valid number"),
    ("n eq " + "9" * 5000, 5, "the number is too large"),
    ("state eq \"active\"", 9, "unexpected character '\"'"),
    ("state -eq 1", 6, "unexpected character '-'"),
    ("(" * 100 + "true" + ")" * 100, 64, "nests more than 64 levels deep"),
    ("not " * 100 + "true", 256, "nests more than 64 levels deep"),
])
def test_filter_errors_are_positioned(text: str, position: int, reason: str) -> None:
    with pytest.raises(ODataError) as caught:
        parse_filter(text)
    assert caught.value.position == position
    assert caught.value.message.startswith(f"Invalid $filter clause at position {position}: ")
    assert reason in caught.value.message
    assert str(caught.value) == caught.value.message


# --- $select / $expand ------------------------------------------------------------------------------------------


def test_parse_select() -> None:
    assert parse_select("id,state") == ["id", "state"]
    assert parse_select(" id , state,id ,executionInfo/exitCode") == ["id", "state", "executionInfo/exitCode"]
    assert parse_select("") == []
    assert parse_select("*") == ["*"]


@pytest.mark.parametrize(("text", "position"), [("id,,state", 3), ("id,", 3), (",id", 0), ("id, 1x", 4),
                                                ("id state", 0), ("id,st-ate", 3)])
def test_parse_select_errors(text: str, position: int) -> None:
    with pytest.raises(ODataError) as caught:
        parse_select(text)
    assert caught.value.position == position
    assert caught.value.message.startswith(f"Invalid $select clause at position {position}: ")


def test_apply_select_keeps_top_level_properties_and_whole_nested_objects() -> None:
    obj = {"odata.metadata": "m", **POOL}
    assert apply_select(obj, ["id", "executionInfo/exitCode", "nope"]) == {
        "odata.metadata": "m", "id": "pool-1", "executionInfo": {"exitCode": -1, "result": "failure"}}
    assert apply_select(obj, ["ID"]) == {"odata.metadata": "m", "id": "pool-1"}
    assert apply_select(obj, []) == obj
    assert apply_select(obj, ["*", "id"]) == obj
    assert apply_select(obj, ["id"]) is not obj


def test_parse_expand() -> None:
    assert parse_expand("stats") == ["stats"]
    assert parse_expand("Stats, stats", allowed=["stats"]) == ["stats"]
    assert parse_expand("") == []
    with pytest.raises(ODataError) as caught:
        parse_expand("stats,metadata", allowed=["stats"])
    assert caught.value.position == 6
    assert "'metadata' cannot be expanded here; expected one of: stats" in caught.value.message
    with pytest.raises(ODataError):
        parse_expand("*")


# --- properties -------------------------------------------------------------------------------------------------

TOKENS = ["(", ")", ",", " ", "eq", "ne", "gt", "and", "or", "not", "'a'", "''", "'", "1", "-1", "2.5", "state",
          "executionInfo/exitCode", "/", "startswith", "true", "null", "datetime'2024-01-01T00:00:00Z'",
          "2024-01-01T00:00:00Z", "datetime'", "-", "id"]
SAMPLES: list[dict[str, Any]] = [POOL, {}, {"state": 1, "executionInfo": "x", "id": None}]


def check_parse(text: str) -> None:
    try:
        predicate = parse_filter(text)
    except ODataError as exc:
        assert 0 <= exc.position <= len(text)
        assert exc.message.startswith(f"Invalid $filter clause at position {exc.position}: ")
        return
    for sample in SAMPLES:
        assert predicate(sample) in (True, False)


@settings(max_examples=500)
@given(st.text(max_size=120))
def test_arbitrary_text_never_crashes(text: str) -> None:
    check_parse(text)


@settings(max_examples=500)
@given(st.lists(st.sampled_from(TOKENS), max_size=30).map(" ".join))
def test_token_soup_never_crashes(text: str) -> None:
    check_parse(text)


@settings(max_examples=200)
@given(st.lists(st.sampled_from(TOKENS), max_size=30).map("".join))
def test_glued_token_soup_never_crashes(text: str) -> None:
    check_parse(text)


@given(st.text(max_size=60))
def test_select_never_crashes(text: str) -> None:
    try:
        fields = parse_select(text)
    except ODataError as exc:
        assert 0 <= exc.position <= len(text)
        return
    assert isinstance(apply_select(POOL, fields), dict)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=20))
def test_string_literals_round_trip(value: str) -> None:
    quoted = "'" + value.replace("'", "''") + "'"
    assert matches(f"displayName eq {quoted}", {"displayName": value})
