"""Batch data-plane conditional requests: If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.batch_conditions import NOT_MODIFIED, PRECONDITION_FAILED, check
from shoal.core.timefmt import format_http_date

ETAG = "0x8DC1234ABCDEF01"
MODIFIED = datetime(2026, 11, 26, 5, 12, 44, 654321, tzinfo=UTC)
LAST_MODIFIED_HEADER = format_http_date(MODIFIED)  # what the client saw: whole seconds
EARLIER = format_http_date(MODIFIED - timedelta(seconds=1))
LATER = format_http_date(MODIFIED + timedelta(seconds=1))
WRITES = ["PUT", "PATCH", "POST", "DELETE"]


def run(method: str, **headers: str) -> int | None:
    return check(method, ETAG, MODIFIED, {k.replace("_", "-"): v for k, v in headers.items()})


@pytest.mark.parametrize("method", ["GET", "HEAD", *WRITES])
def test_no_conditions_proceed(method: str) -> None:
    assert run(method) is None
    assert run(method, If_Match="", If_None_Match="  ") is None  # empty headers are absent


@pytest.mark.parametrize("method", ["GET", "HEAD", *WRITES])
@pytest.mark.parametrize("value", [ETAG, f'"{ETAG}"', f'W/"{ETAG}"', f"'{ETAG}'", "*", f'"0x1", "{ETAG}"'])
def test_if_match_that_matches_proceeds(method: str, value: str) -> None:
    assert run(method, If_Match=value) is None


@pytest.mark.parametrize("method", ["GET", "HEAD", *WRITES])
def test_if_match_mismatch_is_412(method: str) -> None:
    assert run(method, If_Match='"0x8DC0000000000"') == PRECONDITION_FAILED


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("value", [ETAG, f'"{ETAG}"', f'W/"{ETAG}"', "*"])
def test_read_with_matching_if_none_match_is_304(method: str, value: str) -> None:
    assert run(method, If_None_Match=value) == NOT_MODIFIED


@pytest.mark.parametrize("method", WRITES)
@pytest.mark.parametrize("value", [f'"{ETAG}"', "*"])
def test_write_with_matching_if_none_match_is_412(method: str, value: str) -> None:
    assert run(method, If_None_Match=value) == PRECONDITION_FAILED


@pytest.mark.parametrize("method", ["GET", *WRITES])
def test_if_none_match_mismatch_proceeds(method: str) -> None:
    assert run(method, If_None_Match='"0x8DC0000000000"') is None


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_modified_since_on_reads(method: str) -> None:
    assert run(method, If_Modified_Since=LAST_MODIFIED_HEADER) == NOT_MODIFIED  # sub-second part ignored
    assert run(method, If_Modified_Since=LATER) == NOT_MODIFIED
    assert run(method, If_Modified_Since=EARLIER) is None


@pytest.mark.parametrize("method", WRITES)
def test_if_modified_since_guards_writes_too(method: str) -> None:
    assert run(method, If_Modified_Since=LAST_MODIFIED_HEADER) == PRECONDITION_FAILED
    assert run(method, If_Modified_Since=EARLIER) is None


@pytest.mark.parametrize("method", ["GET", "HEAD", *WRITES])
def test_if_unmodified_since(method: str) -> None:
    assert run(method, If_Unmodified_Since=LAST_MODIFIED_HEADER) is None  # sub-second part ignored
    assert run(method, If_Unmodified_Since=LATER) is None
    assert run(method, If_Unmodified_Since=EARLIER) == PRECONDITION_FAILED


def test_if_match_takes_precedence_over_if_unmodified_since() -> None:
    assert run("PUT", If_Match=f'"{ETAG}"', If_Unmodified_Since=EARLIER) is None
    assert run("PUT", If_Match='"0x1"', If_Unmodified_Since=LATER) == PRECONDITION_FAILED


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    assert run("GET", If_None_Match='"0x1"', If_Modified_Since=LATER) is None
    assert run("GET", If_None_Match=f'"{ETAG}"', If_Modified_Since=EARLIER) == NOT_MODIFIED


def test_a_failed_precondition_wins_over_not_modified() -> None:
    assert run("GET", If_Match='"0x1"', If_None_Match=f'"{ETAG}"') == PRECONDITION_FAILED
    assert run("GET", If_Unmodified_Since=EARLIER, If_Modified_Since=LATER) == PRECONDITION_FAILED


def test_header_names_are_case_insensitive_and_method_case_is_ignored() -> None:
    assert check("get", ETAG, MODIFIED, {"if-none-match": f'"{ETAG}"'}) == NOT_MODIFIED
    assert check("delete", ETAG, MODIFIED, {"IF-MATCH": '"0x1"'}) == PRECONDITION_FAILED


def test_invalid_dates_are_ignored() -> None:
    assert run("GET", If_Modified_Since="yesterday") is None
    assert run("PUT", If_Unmodified_Since="not a date") is None


def test_naive_last_modified_is_utc() -> None:
    assert check("GET", ETAG, MODIFIED.replace(tzinfo=None), {"If-Modified-Since": LAST_MODIFIED_HEADER}) == 304


def test_resource_etag_may_itself_be_quoted() -> None:
    assert check("PUT", f'"{ETAG}"', MODIFIED, {"If-Match": ETAG}) is None


@given(method=st.sampled_from(["GET", "HEAD", "PUT", "DELETE"]),
       values=st.dictionaries(st.sampled_from(["If-Match", "If-None-Match", "If-Modified-Since",
                                               "If-Unmodified-Since"]), st.text(max_size=40)))
def test_arbitrary_header_values_never_crash(method: str, values: dict[str, str]) -> None:
    assert check(method, ETAG, MODIFIED, values) in (None, NOT_MODIFIED, PRECONDITION_FAILED)
