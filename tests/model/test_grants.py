"""Write grants: segment-wise patterns, the conflicts rule, the WELCOME wire form."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tiendasync.model.grants import WriteGrants, matches, segment_match

SEGMENT = st.text(alphabet="abcz-12/", min_size=1, max_size=8)
DOCS = st.one_of(
    st.sampled_from(["catalog", "locations", "conflicts", "stock/tienda-1", "sales/t/2026-01"]),
    st.builds(lambda loc: f"stock/{loc}", SEGMENT),
    st.builds(lambda loc, m: f"sales/{loc}/{m}", SEGMENT, st.sampled_from(["2026-01", "x"])),
    st.builds(lambda loc: f"resolutions/{loc}", SEGMENT),
    st.text(max_size=20),
)
#: Anything a hostile or older relay could put under ``grants`` in a WELCOME.
WIRE: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["location", "write", "x"]), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(location=SEGMENT, doc=DOCS)
def test_a_star_never_crosses_a_slash(location: str, doc: str) -> None:
    pattern = f"sales/{location}/*"
    parts, wanted = doc.split("/"), pattern.split("/")
    if segment_match(pattern, doc):
        assert len(parts) == len(wanted) and doc.startswith(f"sales/{location}/")
    if "/" not in location:
        assert segment_match(pattern, doc) == (len(parts) == 3 and parts[:2] == ["sales", location])


def test_another_location_whose_name_extends_ours_is_not_matched() -> None:
    assert segment_match("sales/tienda-2/*", "sales/tienda-2/2026-01")
    assert not segment_match("sales/tienda-2/*", "sales/tienda-2/x/2026-01")
    assert not segment_match("sales/tienda-2*", "sales/tienda-2/2026-01")
    assert matches(("*",), "sales/tienda-2/x/2026-01")


@given(patterns=st.lists(st.sampled_from(["*", "catalog", "stock/*", "conflicts", "c*"])), doc=DOCS)
def test_nobody_but_the_relay_writes_conflicts(patterns: list[str], doc: str) -> None:
    for location in (None, "tienda-1"):
        grants = WriteGrants(tuple(patterns), location)
        assert not grants.can_write("conflicts")
        if doc != "conflicts" and location is None and not doc.startswith("resolutions/"):
            assert grants.can_write(doc) == matches(tuple(patterns), doc)


@given(
    patterns=st.lists(st.sampled_from(["*", "resolutions/*", "resolutions/tienda-2"])),
    location=st.sampled_from([None, "tienda-1"]),
    doc=DOCS,
)
def test_resolution_requests_go_only_to_the_stores_own_location(
    patterns: list[str], location: str | None, doc: str
) -> None:
    """The relay's ownership rule refuses another location's requests whatever the grants
    say, so the replica never sends one (a refused write would stop its whole sync)."""
    grants = WriteGrants(tuple(patterns), location)
    if doc.startswith("resolutions/") and grants.can_write(doc):
        assert location is not None and doc == f"resolutions/{location}"


@given(doc=DOCS)
def test_a_bound_store_writes_its_own_location_and_only_what_is_granted_beyond(doc: str) -> None:
    grants = WriteGrants((), "tienda-1")
    own = doc in (
        "stock/tienda-1",
        "resolutions/tienda-1",
        "locations",
    ) or (doc.startswith("sales/tienda-1/") and doc.count("/") == 2)
    if grants.can_write(doc):
        assert own, doc
    for mine in ("stock/tienda-1", "sales/tienda-1/2026-01", "resolutions/tienda-1", "locations"):
        assert grants.can_write(mine)
    for theirs in ("stock/tienda-2", "sales/tienda-2/2026-01", "resolutions/tienda-2", "catalog"):
        assert not grants.can_write(theirs)


@given(patterns=st.lists(st.text(max_size=12), max_size=4), location=st.none() | SEGMENT)
def test_the_wire_form_round_trips(patterns: list[str], location: str | None) -> None:
    grants = WriteGrants(tuple(patterns), location)
    assert WriteGrants.from_wire(grants.to_wire()) == grants


@given(value=WIRE)
def test_garbage_grants_in_a_welcome_are_ignored_or_well_formed(value: Any) -> None:
    grants = WriteGrants.from_wire(value)
    if grants is not None:  # only a well-formed value is taken
        assert isinstance(value, dict) and isinstance(value.get("write"), list)
        assert all(isinstance(p, str) for p in grants.patterns)
        assert grants.location is None or isinstance(grants.location, str)
        assert not grants.can_write("conflicts")
