"""SQLite: the rows a flush writes, in the forms SQLAlchemy's SQLite types store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects.sqlite import DATETIME

from cqrs_ddd_core.adapters.sqlalchemy.sqlite_write import sqlite_timestamp

_stored_by_sqlalchemy = DATETIME().bind_processor(None)

zones = st.one_of(
    st.none(),
    st.just(UTC),
    st.builds(timezone, st.integers(-23 * 60, 23 * 60).map(lambda m: timedelta(minutes=m))),
)
# Away from the ends of the calendar, where another zone's offset cannot move them out.
moments = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31))


@given(moment=moments, zone=zones)
def test_a_timestamp_is_written_as_sqlalchemy_stores_it_in_utc(
    moment: datetime, zone: timezone | None
) -> None:
    value = moment.replace(tzinfo=zone)
    in_utc = value if zone is None else value.astimezone(UTC).replace(tzinfo=None)

    assert sqlite_timestamp(value) == _stored_by_sqlalchemy(in_utc)


def test_a_whole_second_keeps_its_six_zero_digits_so_that_text_sorts_as_time() -> None:
    assert sqlite_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == (
        "2026-01-02 03:04:05.000000"
    )
    assert sqlite_timestamp(datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC)) > (
        sqlite_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    )


def test_timestamps_within_one_second_and_across_seconds_keep_their_own_text() -> None:
    """The text of the last second is kept: each value must still get its own."""
    base = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    moments = [
        base,
        base.replace(microsecond=999_999),
        base + timedelta(seconds=1),
        base + timedelta(days=31),
        base.replace(microsecond=7),
        datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),  # = base
    ]

    assert [sqlite_timestamp(m) for m in moments] == [
        "2026-01-02 03:04:05.000000",
        "2026-01-02 03:04:05.999999",
        "2026-01-02 03:04:06.000000",
        "2026-02-02 03:04:05.000000",
        "2026-01-02 03:04:05.000007",
        "2026-01-02 03:04:05.000000",
    ]
