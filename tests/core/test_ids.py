"""Identifiers: random ids, and event ids derived from the command that records them."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from cqrs_ddd_core._ids import EVENT_ID_NAMESPACE, derived_id, new_id

# Names as they reach derived_id (no lone surrogate: uuid5 could not encode one).
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300)


@given(message_id=names, aggregate_type=names, aggregate_id=names, ordinal=st.integers(1, 10**6))
def test_a_derived_id_is_the_uuid5_of_its_four_parts_in_the_event_id_namespace(
    message_id: str, aggregate_type: str, aggregate_id: str, ordinal: int
) -> None:
    name = f"{message_id}\x1f{aggregate_type}\x1f{aggregate_id}\x1f{ordinal}"

    assert derived_id(message_id, aggregate_type, aggregate_id, ordinal) == str(
        uuid.uuid5(EVENT_ID_NAMESPACE, name)
    )


def test_derived_ids_do_not_depend_on_the_ids_derived_before() -> None:
    first = derived_id("m", "Order", "o-1", 1)
    for ordinal in range(1, 50):  # the seeded hash must never carry state over
        derived_id("m", "Order", "o-1", ordinal)

    assert derived_id("m", "Order", "o-1", 1) == first
    assert derived_id("m", "Order", "o-1", 2) != first


def test_an_id_with_a_lone_surrogate_still_derives_a_stable_id() -> None:
    assert derived_id("m\ud800", "T", "a", 1) == derived_id("m\ud800", "T", "a", 1)
    assert derived_id("m\ud800", "T", "a", 1) != derived_id("m\ud801", "T", "a", 1)


def test_new_ids_are_distinct_uuid4s() -> None:
    ids = [new_id() for _ in range(1000)]

    assert len(set(ids)) == 1000
    assert {uuid.UUID(i).version for i in ids} == {4}
