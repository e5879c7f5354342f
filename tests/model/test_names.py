"""The bulk checks of names and integers say what the one-value checks say."""

from __future__ import annotations

import enum

from hypothesis import given, settings
from hypothesis import strategies as st

from tiendasync import InvalidArgument
from tiendasync.model.names import (
    MAX_NAME_LENGTH,
    MAX_SAFE_INTEGER,
    all_safe_ints,
    check_name,
    check_names,
    check_safe_int,
)

NAMES = st.one_of(
    st.text(max_size=8),
    st.text(alphabet=" \t\x00\x1f\x7fab", max_size=4),
    st.just("x" * (MAX_NAME_LENGTH + 1)),
    st.just("x" * MAX_NAME_LENGTH),
    st.integers(),
    st.none(),
)


class Units(enum.IntEnum):
    ONE = 1


INTS = st.one_of(
    st.integers(-3, 3),
    st.integers(MAX_SAFE_INTEGER - 1, MAX_SAFE_INTEGER + 1),
    st.booleans(),
    st.floats(0, 3),
    st.just(Units.ONE),
    st.text(max_size=1),
)


def _refusal(values: list[object]) -> str | None:
    for value in values:
        try:
            check_name(value, "SKU")
        except InvalidArgument as exc:
            return str(exc)
    return None


@settings(max_examples=300, deadline=None)
@given(values=st.lists(NAMES, max_size=6))
def test_check_names_refuses_what_check_name_refuses_with_its_message(values: list[object]) -> None:
    try:
        check_names(values, "SKU")
    except InvalidArgument as exc:
        assert str(exc) == _refusal(values)
    else:
        assert _refusal(values) is None


@settings(max_examples=300, deadline=None)
@given(values=st.lists(INTS, max_size=6), minimum=st.integers(0, 2))
def test_all_safe_ints_holds_only_when_each_value_passes_one_by_one(
    values: list[object], minimum: int
) -> None:
    def one_by_one() -> bool:
        try:
            for value in values:
                if check_safe_int(value, "units") < minimum:
                    return False
        except (InvalidArgument, TypeError):
            return False
        return True

    if all_safe_ints(values, minimum):
        assert one_by_one()
        assert all(type(v) is int for v in values)
    else:  # only "look one by one": an int subclass may still pass there
        assert not one_by_one() or any(type(v) is not int for v in values)
