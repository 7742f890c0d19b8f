"""Store keys: collision-free for any values, bounded in length, tenant-tagged."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from ratelimitd.core.keys import TAG_BUDGET, TAIL_BUDGET, counter_key
from ratelimitd.model.rules import Limit, Unit

LIMIT = Limit("token_bucket", 10, Unit.MINUTE, 10)


def key(*entries: tuple[str, str], domain: str = "d", limit: Limit = LIMIT) -> str:
    return counter_key(domain, entries, limit, "tb")


def hash_tag(k: str) -> str:
    start = k.index("{")
    return k[start + 1 : k.index("}", start)]


def test_readable_for_ordinary_values() -> None:
    assert key(("tenant", "acme"), ("route", "/v1/search")) == (
        "rl:{d:tenant=acme}:tb:10/60:10:route=/v1/search"
    )


def test_separators_inside_values_never_collide() -> None:
    tricky = [
        (("a", "b:c"),),
        (("a:b", "c"),),
        (("a", "b"), ("c", "")),
        (("a", "b:c="),),
        (("a", "b=c"),),
        (("a", "b}"), ("c", "d")),
        (("a", "b"), ("c", "d")),
        (("a", "b%3Ac"),),
        (("a", "#b"),),
        (("a", "~b"),),
    ]
    keys = [key(*entries) for entries in tricky]
    assert len(set(keys)) == len(keys)


def test_domain_is_part_of_the_identity() -> None:
    assert key(("a", "b"), domain="x:a=b") != key(("a", "b"), domain="x")
    assert key(("a", "b"), domain="one") != key(("a", "b"), domain="two")


def test_limit_and_algorithm_are_part_of_the_identity() -> None:
    other_rate = Limit("token_bucket", 20, Unit.MINUTE, 20)
    other_unit = Limit("token_bucket", 10, Unit.HOUR, 10)
    other_burst = Limit("token_bucket", 10, Unit.MINUTE, 15)
    variants = {key(("a", "b"), limit=lim) for lim in (LIMIT, other_rate, other_unit, other_burst)}
    assert len(variants) == 4
    assert counter_key("d", (("a", "b"),), LIMIT, "tb") != counter_key(
        "d", (("a", "b"),), LIMIT, "fw"
    )


def test_shared_wildcard_counter_differs_from_a_literal_value() -> None:
    shared = counter_key("d", (("k", "x1"),), LIMIT, "tb", shared=("x*",))
    assert shared != key(("k", "x*"))
    assert shared == counter_key("d", (("k", "x2"),), LIMIT, "tb", shared=("x*",))


def test_long_values_are_hashed_to_a_bounded_length() -> None:
    long_a, long_b = "a" * 5000, "a" * 4999 + "b"
    first = key(("tenant", long_a), ("route", long_a), ("user", long_a))
    second = key(("tenant", long_b), ("route", long_a), ("user", long_a))
    third = key(("tenant", long_a), ("route", long_a), ("user", long_b))
    assert len({first, second, third}) == 3
    for k in (first, second, third):
        assert len(k) <= len("rl:{}:tb:10/60:10:") + TAG_BUDGET + TAIL_BUDGET + 4


def test_hashed_and_plain_text_cannot_collide() -> None:
    long_value = "v" * 1000
    hashed = key(("k", long_value))
    plain = key(("k", hash_tag(hashed)))  # a value spelling out the digest text
    assert hashed != plain


def test_a_tenants_keys_share_one_hash_tag() -> None:
    tenant_wide = key(("tenant", "acme"))
    per_route = key(("tenant", "acme"), ("route", "/a"))
    per_user = key(("tenant", "acme"), ("route", "/b"), ("user", "u1"))
    assert hash_tag(tenant_wide) == hash_tag(per_route) == hash_tag(per_user)
    assert hash_tag(key(("tenant", "other"))) != hash_tag(tenant_wide)


def test_hash_tag_is_first_braces_even_with_braces_in_values() -> None:
    k = key(("tenant", "{evil}"), ("route", "{x}"))
    assert hash_tag(k) == "d:tenant=%7Bevil%7D"
    assert k.count("{") == 1
    assert k.count("}") == 1


entry = st.tuples(st.text(min_size=1, max_size=12), st.text(max_size=12))


descriptor = st.lists(entry, min_size=1, max_size=3).map(tuple)


@given(st.lists(descriptor, min_size=2, max_size=6, unique=True))
def test_distinct_descriptors_give_distinct_keys(
    descriptors: list[tuple[tuple[str, str], ...]],
) -> None:
    keys = {key(*d) for d in descriptors}
    assert len(keys) == len(descriptors)


def test_every_pair_of_small_descriptors_is_distinct() -> None:
    alphabet = ["a", ":", "=", "%", "#", "~", "{", "}", ""]
    values = ["".join(p) for p in itertools.product(alphabet, repeat=2)]
    keys = {key(("k", v)) for v in values}
    assert len(keys) == len(set(values))


def test_tenants_spread_evenly_over_a_three_primary_cluster() -> None:
    # Redis Cluster's default split of the 16384 slots over three primaries.
    primaries = [range(0, 5461), range(5461, 10923), range(10923, 16384)]
    per_primary = [0, 0, 0]
    for n in range(3000):
        tenant_keys = {
            key_slot(key(("tenant", f"tenant-{n}"), *more).encode())
            for more in [(), (("route", "/v1/search"),), (("route", "/v1/export"),)]
        }
        [slot] = tenant_keys  # all of one tenant's counters: one slot, one script call
        per_primary[next(i for i, r in enumerate(primaries) if slot in r)] += 1
    assert all(900 <= count <= 1100 for count in per_primary), per_primary
