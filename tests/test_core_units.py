"""Fast unit tests of the I/O-free core: ids, durations, timestamps, api-versions, RBAC, ETags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.auth import rbac
from shoal.core import apiversion, errors, etags, ids, timefmt

SUB = "11111111-2222-3333-4444-555555555555"


def test_resource_id_parse_is_case_insensitive_in_keywords_and_keeps_names() -> None:
    rid = ids.parse(f"/SUBSCRIPTIONS/{SUB}/resourcegroups/MyGroup/providers/microsoft.compute/GALLERIES/g1/"
                    "images/def/versions/1.0.0")
    assert rid.subscription == SUB
    assert rid.resource_group == "MyGroup"
    assert rid.type == "Microsoft.Compute/galleries/images/versions"
    assert rid.names == ("g1", "def", "1.0.0")
    assert str(rid) == (f"/subscriptions/{SUB}/resourceGroups/MyGroup/providers/Microsoft.Compute/galleries/g1/"
                        "images/def/versions/1.0.0")
    assert rid.key == ids.key(str(rid).upper().replace("MYGROUP", "mygroup"))
    assert rid.parent() is not None and rid.parent().type == "Microsoft.Compute/galleries/images"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", "subscriptions/x", "/subscriptions", "/subscriptions//resourceGroups/x",
                                 f"/subscriptions/{SUB}/resourceGroups", f"/subscriptions/{SUB}/providers",
                                 f"/subscriptions/{SUB}/resourceGroups/g/providers/Microsoft.Compute/images",
                                 f"/subscriptions/{SUB}/foo/bar"])
def test_malformed_resource_ids_are_invalid_resource_id(bad: str) -> None:
    with pytest.raises(errors.InvalidResourceId):
        ids.parse(bad)


@given(st.text(max_size=200))
def test_resource_id_parser_never_crashes(text: str) -> None:
    try:
        rid = ids.parse(text)
    except errors.InvalidResourceId:
        return
    assert ids.parse(str(rid)) == rid


def test_canonical_path_rewrites_keywords_only() -> None:
    path = f"/subscriptions/{SUB}/resourcegroups/RG/providers/microsoft.batch/batchaccounts/Acct/pools/P"
    assert ids.canonical_path(path) == (f"/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.Batch/"
                                        "batchAccounts/Acct/pools/P")
    # A user name that happens to be a keyword stays where it is.
    assert ids.canonical_path(f"/subscriptions/{SUB}/resourcegroups/images") == (
        f"/subscriptions/{SUB}/resourceGroups/images")
    assert ids.canonical_path("/batch/acct/pools") == "/batch/acct/pools"


@pytest.mark.parametrize(("text", "delta"), [
    ("PT15M", timedelta(minutes=15)), ("PT20M00S", timedelta(minutes=20)), ("PT01H00M00S", timedelta(hours=1)),
    ("P1DT2H", timedelta(days=1, hours=2)), ("PT0.5S", timedelta(seconds=0.5)), ("P2W", timedelta(days=14)),
    ("pt5m", timedelta(minutes=5)),
])
def test_durations_parse_leniently(text: str, delta: timedelta) -> None:
    assert timefmt.parse_duration(text) == delta


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(minutes=15), "PT15M"), (timedelta(hours=1, minutes=30), "PT1H30M"), (timedelta(days=1), "P1D"),
    (timedelta(0), "PT0S"), (timedelta(seconds=1.5), "PT1.5S"),
    (timefmt.INFINITE_DURATION, timefmt.INFINITE_DURATION_TEXT),
])
def test_durations_format_canonically(delta: timedelta, text: str) -> None:
    assert timefmt.format_duration(delta) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)))
def test_duration_round_trip(delta: timedelta) -> None:
    assert timefmt.parse_duration(timefmt.format_duration(delta)) == delta


@pytest.mark.parametrize("bad", ["", "P", "PT", "15M", "PTXM", "P1Y2", "forever"])
def test_bad_durations_are_rejected(bad: str) -> None:
    with pytest.raises(timefmt.TimeFormatError):
        timefmt.parse_duration(bad)


@pytest.mark.parametrize("text", ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.0000000Z",
                                  "2024-01-01T01:00:00+01:00", "2024-01-01 00:00:00", "2024-01-01T00:00Z"])
def test_timestamps_parse_leniently(text: str) -> None:
    assert timefmt.parse_timestamp(text) == datetime(2024, 1, 1, tzinfo=UTC)


def test_timestamps_format_with_seven_digits_and_z() -> None:
    assert timefmt.format_timestamp(datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)) == "2024-01-02T03:04:05.1234560Z"


@pytest.mark.parametrize("text", ["2024-11-01", "2021-04-01-preview", "2024-07-01.20.0", "2025-06-01",
                                  "2019-08-01.10.0"])
def test_api_versions_accept_any_date_shape(text: str) -> None:
    assert apiversion.parse(text).text == text


@pytest.mark.parametrize(("text", "code"), [(None, "MissingApiVersionParameter"), ("", "MissingApiVersionParameter"),
                                            ("latest", "InvalidApiVersionParameter"),
                                            ("2024-02-30", "InvalidApiVersionParameter")])
def test_bad_api_versions(text: str | None, code: str) -> None:
    with pytest.raises(errors.AzureError) as info:
        apiversion.parse(text)
    assert info.value.code == code and info.value.status == 400


def test_managed_images_on_the_data_plane_end_with_2019_08_01() -> None:
    assert apiversion.parse("2019-08-01.10.0").data_plane_accepts_managed_image()
    assert not apiversion.parse("2020-03-01.11.0").data_plane_accepts_managed_image()
    assert not apiversion.parse("2025-06-01").data_plane_accepts_managed_image()


def test_builtin_roles_follow_azure_action_rules() -> None:
    assert rbac.OWNER.allows("Microsoft.Authorization/roleAssignments/write")
    assert rbac.CONTRIBUTOR.allows("Microsoft.Compute/images/write")
    assert not rbac.CONTRIBUTOR.allows("Microsoft.Authorization/roleAssignments/write")
    assert not rbac.CONTRIBUTOR.allows("microsoft.authorization/roleassignments/DELETE")
    assert rbac.READER.allows("Microsoft.Compute/images/read")
    assert not rbac.READER.allows("Microsoft.Compute/images/write")
    assert not rbac.READER.allows("Microsoft.Compute/images/read/extra/write")


def test_scopes_cover_their_descendants_only() -> None:
    group = f"/subscriptions/{SUB}/resourceGroups/rg"
    assert rbac.scope_covers(f"/subscriptions/{SUB}", group)
    assert rbac.scope_covers(group, group + "/providers/Microsoft.Compute/images/i")
    assert not rbac.scope_covers(group, f"/subscriptions/{SUB}/resourceGroups/rg2")
    assert not rbac.scope_covers(group, f"/subscriptions/{SUB}")
    assert rbac.scope_prefixes(group.upper())[-1] == group.lower()


def test_etag_conditions() -> None:
    tag = etags.new_etag()
    assert tag.startswith("0x")
    etags.check_write(tag, f'"{tag}"', None)
    etags.check_write(tag, f'W/"{tag}"', None)
    etags.check_write(None, None, "*")
    with pytest.raises(errors.PreconditionFailed):
        etags.check_write(tag, '"0x1"', None)
    with pytest.raises(errors.PreconditionFailed):
        etags.check_write(None, "*", None)
    with pytest.raises(errors.Conflict):
        etags.check_write(tag, None, "*")


def test_ends_a_failed_finish_pass_could_not_record_wait_for_the_next_pass() -> None:
    """A finish pass whose transaction fails (a row changed under it) puts its ends back: none is lost."""
    import contextlib as _contextlib
    from collections.abc import Iterator as _Iterator

    from sqlalchemy.orm.exc import StaleDataError

    from shoal.core.clock import Clock
    from shoal.domain.batch.outcomes import Finished
    from shoal.reconcilers.tasks.attempts import Attempts
    from shoal.reconcilers.tasks.finish import Finisher

    class RowChanged:
        @_contextlib.contextmanager
        def write(self) -> _Iterator[None]:
            raise StaleDataError("UPDATE statement on table 'nodes' expected to update 20 row(s); 0 were matched.")
            yield

    attempts = Attempts(agent=None, workers=1)  # type: ignore[arg-type]
    ends = [Finished("job/t1", "a1", 0), Finished("job/t2", "a2", 3)]
    for end in ends:
        attempts.done.put(end)
    with pytest.raises(StaleDataError):
        Finisher(RowChanged(), Clock(), attempts).run()  # type: ignore[arg-type]
    assert attempts.drain() == ends
    attempts.waiters.shutdown()



def test_times_bound_in_bulk_are_each_their_own_even_when_one_repeats() -> None:
    """The datetime bind remembers its last value (a bulk write repeats one time); every other value, naive or
    in another zone, is still converted, and what is read back is each row's own UTC time."""
    from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select

    from shoal.store.models import UTCDateTime

    table = Table("times", MetaData(), Column("key", String, primary_key=True), Column("at", UTCDateTime()))
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    first = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    east = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))  # 03:04:05 UTC
    times = [first, first, first, east, datetime(2026, 1, 2, 3, 4, 5), first, None]
    with engine.begin() as c:
        c.execute(insert(table), [{"key": f"k{i}", "at": t} for i, t in enumerate(times)])
        read = dict(c.execute(select(table.c.key, table.c.at)).all())
    expected = [first, first, first, first.replace(microsecond=0), first.replace(microsecond=0), first, None]
    assert [read[f"k{i}"] for i in range(len(times))] == expected
