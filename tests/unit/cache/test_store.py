"""phantom.cache.store: bounds, expiry on a fake clock, invalidation patterns."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phantom.cache import policy
from phantom.cache.policy import StorageDecision
from phantom.cache.store import MAX_VARIANTS, CachedResponse, CacheStore, Key


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def response(
    body: bytes = b"hello",
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    response_time: float = 1_000.0,
    initial_age: float = 0.0,
    freshness_lifetime: float = 60.0,
    **decision: Any,
) -> CachedResponse:
    return CachedResponse(
        status=200,
        reason=b"OK",
        headers=[(b"content-type", b"text/plain")] if headers is None else headers,
        body=body,
        response_time=response_time,
        decision=StorageDecision(
            freshness_lifetime=freshness_lifetime, initial_age=initial_age, **decision
        ),
    )


def get(store: CacheStore, key: Key) -> CachedResponse | None:
    """The newest stored variant under ``key``."""
    variants = store.variants(key)
    return variants[0] if variants else None


def key(target: str, host: str = "example.com", method: str = "GET") -> Key:
    return policy.store_key(host.encode(), method.encode(), target.encode())


def make_store(
    clock: FakeClock,
    *,
    max_entries: int = 100,
    max_bytes: int = 1_000_000,
    max_object_bytes: int = 100_000,
    stale_keep: float = 0.0,
) -> CacheStore:
    return CacheStore(
        max_entries, max_bytes, max_object_bytes, clock=clock, stale_keep=stale_keep
    )


# --------------------------------------------------------------------------- basics


def test_put_then_get_returns_the_entry() -> None:
    clock = FakeClock()
    store = make_store(clock)
    entry = response()
    assert store.put(key("/a"), entry) is True
    assert get(store, key("/a")) is entry
    assert get(store, key("/b")) is None
    assert get(store, key("/a", host="other.example")) is None
    assert len(store) == 1
    assert store.total_bytes == entry.size


def test_multiple_set_cookie_headers_stay_separate() -> None:
    """RFC 9110 §5.3 and RFC 6265 §3: Set-Cookie lines must not be combined."""
    store = make_store(FakeClock())
    headers = [
        (b"set-cookie", b"a=1; Path=/"),
        (b"cache-control", b"public, max-age=60"),
        (b"set-cookie", b"b=2, c=3; Expires=Wed, 21 Oct 2015 07:28:00 GMT"),
    ]
    store.put(key("/c"), response(headers=list(headers)))
    stored = get(store, key("/c"))
    assert stored is not None
    assert stored.headers == headers
    assert [v for n, v in stored.headers if n == b"set-cookie"] == [headers[0][1], headers[2][1]]


def test_size_counts_body_headers_and_overhead() -> None:
    entry = response(b"x" * 100, headers=[(b"ab", b"cde")])
    assert entry.size >= 100 + 2 + 3 + 4
    assert response(b"x" * 101, headers=[(b"ab", b"cde")]).size == entry.size + 1


def test_negative_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        CacheStore(-1, 10, 10)


# --------------------------------------------------------------------------- expiry


def test_entry_without_validators_goes_when_current_age_reaches_lifetime() -> None:
    """RFC 9111 §4.2: fresh while freshness_lifetime > current_age; after that an entry that
    can be neither revalidated nor served stale is of no use."""
    clock = FakeClock(1_000.0)
    store = make_store(clock)
    store.put(key("/a"), response(freshness_lifetime=60.0))
    clock.now = 1_059.9
    assert get(store, key("/a")) is not None
    clock.now = 1_060.0
    assert get(store, key("/a")) is None
    assert len(store) == 0
    assert store.total_bytes == 0


def test_initial_age_shortens_residence() -> None:
    """RFC 9111 §4.2.3: an entry that arrived 50 s old with a 60 s lifetime has 10 s left."""
    clock = FakeClock(1_000.0)
    store = make_store(clock)
    store.put(key("/a"), response(initial_age=50.0, freshness_lifetime=60.0))
    entry = get(store, key("/a"))
    assert entry is not None
    assert entry.age(clock.now) == 50.0
    assert entry.decision.freshness_lifetime - entry.age(clock.now) == 10.0
    clock.now = 1_010.0
    assert get(store, key("/a")) is None


def test_put_time_after_response_time_counts_resident_time() -> None:
    """RFC 9111 §4.2.3: resident time starts at response_time, not when put() is called."""
    clock = FakeClock(1_030.0)
    store = make_store(clock)
    assert store.put(key("/a"), response(response_time=1_000.0, freshness_lifetime=60.0))
    entry = get(store, key("/a"))
    assert entry is not None
    assert entry.decision.freshness_lifetime - entry.age(clock.now) == 30.0


def test_already_stale_response_is_refused_and_drops_the_old_entry() -> None:
    """RFC 9111 §4.2: a stale response without validators or stale window can never be
    reused, so it is not kept; the newer answer supersedes what was stored."""
    clock = FakeClock(1_000.0)
    store = make_store(clock)
    assert store.put(key("/a"), response(freshness_lifetime=60.0))
    assert store.put(key("/a"), response(freshness_lifetime=0.0)) is False
    assert get(store, key("/a")) is None


# --------------------------------------------------------------------------- bounds


def test_max_entries_evicts_least_recently_used() -> None:
    store = make_store(FakeClock(), max_entries=2)
    store.put(key("/1"), response())
    store.put(key("/2"), response())
    assert get(store, key("/1")) is not None  # /1 is now more recently used than /2
    store.put(key("/3"), response())
    assert len(store) == 2
    assert get(store, key("/2")) is None
    assert get(store, key("/1")) is not None
    assert get(store, key("/3")) is not None


def test_replacing_a_key_at_max_entries_evicts_nothing_else() -> None:
    store = make_store(FakeClock(), max_entries=2)
    store.put(key("/1"), response())
    store.put(key("/2"), response())
    replacement = response(b"new")
    assert store.put(key("/2"), replacement)
    assert get(store, key("/1")) is not None
    assert get(store, key("/2")) is replacement


def test_expired_entries_make_room_before_live_ones_are_evicted() -> None:
    clock = FakeClock(1_000.0)
    store = make_store(clock, max_entries=2)
    store.put(key("/short"), response(freshness_lifetime=5.0))
    store.put(key("/long"), response(freshness_lifetime=500.0))
    clock.now = 1_010.0
    store.put(key("/new"), response(response_time=clock.now))
    assert get(store, key("/long")) is not None
    assert get(store, key("/new")) is not None


def test_max_bytes_evicts_until_it_fits() -> None:
    one = response(b"x" * 1000).size
    store = make_store(FakeClock(), max_bytes=int(one * 2.5), max_object_bytes=one * 2)
    store.put(key("/1"), response(b"x" * 1000))
    store.put(key("/2"), response(b"x" * 1000))
    store.put(key("/3"), response(b"x" * 1000))
    assert len(store) == 2
    assert get(store, key("/1")) is None
    assert store.total_bytes == 2 * one <= store.max_bytes


def test_one_large_object_evicts_several_small_ones() -> None:
    small = response(b"s").size
    big = response(b"b" * (small * 3)).size
    store = make_store(FakeClock(), max_bytes=big + small, max_object_bytes=big)
    for i in range(4):
        store.put(key(f"/{i}"), response(b"s"))
    assert store.put(key("/big"), response(b"b" * (small * 3)))
    assert store.total_bytes <= store.max_bytes
    assert get(store, key("/big")) is not None
    assert len(store) == 2


def test_object_larger_than_max_object_bytes_is_refused() -> None:
    limit = response(b"x" * 100).size
    store = make_store(FakeClock(), max_object_bytes=limit)
    assert store.put(key("/fits"), response(b"x" * 100)) is True
    assert store.put(key("/big"), response(b"x" * 101)) is False
    assert get(store, key("/big")) is None
    assert get(store, key("/fits")) is not None


def test_refused_object_drops_the_entry_it_would_replace() -> None:
    limit = response(b"x" * 100).size
    store = make_store(FakeClock(), max_object_bytes=limit)
    store.put(key("/a"), response(b"old"))
    assert store.put(key("/a"), response(b"x" * 500)) is False
    assert get(store, key("/a")) is None


def test_object_larger_than_max_bytes_is_refused_without_evicting() -> None:
    store = make_store(FakeClock(), max_bytes=500, max_object_bytes=10_000)
    assert store.max_object_bytes == 500
    store.put(key("/small"), response(b"s"))
    assert store.put(key("/big"), response(b"x" * 1000)) is False
    assert get(store, key("/small")) is not None


def test_zero_entries_stores_nothing() -> None:
    store = make_store(FakeClock(), max_entries=0)
    assert store.put(key("/a"), response()) is False
    assert len(store) == 0


# --------------------------------------------------------------------------- removal


def test_discard() -> None:
    """RFC 9111 §4.4: the I/O layer removes entries after unsafe requests."""
    store = make_store(FakeClock())
    store.put(key("/a"), response())
    assert store.discard(key("/a")) == 1
    assert store.discard(key("/a")) == 0
    assert get(store, key("/a")) is None


def filled_store(clock: FakeClock) -> CacheStore:
    store = make_store(clock)
    for host in ("a.example", "b.example:8080"):
        for target in (
            "/api/x",
            "/api/x/y?z=1",
            "/apix",
            "/img/logo.png",
            "/search?q=[1]",
            "/a?b",
            "/aXb",
        ):
            store.put(key(target, host=host), response())
    store.put(key("/api/x", host="a.example", method="OPTIONS"), response())
    return store


@pytest.mark.parametrize(
    ("pattern", "removed"),
    [
        ("GET:/api/*", 4),  # /api/x and /api/x/y?z=1 on both hosts, not /apix
        ("GET:/api/x", 2),  # no star: exact match
        ("*:/api/x", 3),  # any method
        ("GET:/img/*.png", 2),
        ("GET:/search?q=[1]", 2),  # [ ] ? are literal
        ("GET:/a?b", 2),  # ? does not match X
        ("GET:/a*b", 4),  # /a?b and /aXb: * spans any characters
        ("GET:*", 14),
        ("*", 15),
        ("**", 15),
        ("/api/*", 0),  # the method is part of the printable key
        ("GET:/nothing*", 0),
        ("", 0),
    ],
)
def test_invalidate_patterns_match_printable_key_on_all_hosts(pattern: str, removed: int) -> None:
    store = filled_store(FakeClock())
    assert store.invalidate(pattern) == removed
    assert len(store) == 15 - removed


def test_invalidate_leaves_non_matching_entries() -> None:
    store = filled_store(FakeClock())
    store.invalidate("GET:/api/*")
    assert get(store, key("/apix", host="a.example")) is not None
    assert get(store, key("/api/x", host="a.example")) is None
    assert get(store, key("/api/x", host="a.example", method="OPTIONS")) is not None


def test_invalidate_does_not_count_expired_entries() -> None:
    clock = FakeClock(1_000.0)
    store = make_store(clock)
    store.put(key("/old"), response(freshness_lifetime=5.0))
    store.put(key("/new"), response(freshness_lifetime=500.0))
    clock.now = 1_100.0
    assert store.invalidate("*") == 1


def test_invalidate_all() -> None:
    clock = FakeClock(1_000.0)
    store = filled_store(clock)
    store.put(key("/short"), response(freshness_lifetime=1.0))
    clock.now = 1_002.0
    assert store.invalidate_all() == 15
    assert len(store) == 0
    assert store.total_bytes == 0
    assert store.invalidate_all() == 0


def test_pattern_with_many_stars_on_long_key_is_fast() -> None:
    """The matcher must not backtrack exponentially (the control API takes user patterns)."""
    store = make_store(FakeClock(), max_object_bytes=10**6, max_bytes=10**7)
    store.put(("h", "GET:/" + "a" * 20_000), response())
    assert store.invalidate("GET:/" + "*a" * 40 + "*b") == 0
    assert store.invalidate("GET:/" + "*a" * 40 + "*") == 1


def _reference(pattern: str, text: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, text, re.DOTALL) is not None


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="ab*/?[", max_size=8),
    st.text(alphabet="ab/?[", max_size=10),
)
def test_invalidate_matches_a_regex_reference(pattern: str, target: str) -> None:
    store = make_store(FakeClock())
    store.put(("h", target), response())
    assert store.invalidate(pattern) == int(_reference(pattern, target))


# --------------------------------------------------------------------------- stale and variants


def test_entry_with_validator_is_kept_after_expiry_for_revalidation() -> None:
    """RFC 9111 §4.3: a stale response with a validator can still be revalidated."""
    clock = FakeClock(1_000.0)
    store = make_store(clock)
    store.put(key("/a"), response(freshness_lifetime=0.0, etag=b'"v1"'))
    clock.now = 1_000_000.0
    assert get(store, key("/a")) is not None


def test_stale_window_keeps_the_entry_that_long() -> None:
    """RFC 5861 §3, §4: stale-while-revalidate / stale-if-error keep a stale entry usable."""
    clock = FakeClock(1_000.0)
    store = make_store(clock)
    store.put(key("/a"), response(freshness_lifetime=10.0, stale_if_error=30.0))
    clock.now = 1_039.0
    assert get(store, key("/a")) is not None
    clock.now = 1_040.0
    assert get(store, key("/a")) is None


def test_stale_keep_holds_an_expired_entry_for_max_stale() -> None:
    """RFC 9111 §5.2.1.2: a request's max-stale may accept a stale response, so an entry
    without validators or stale window stays ``stale_keep`` seconds past its expiry (then
    goes); a stale window longer than that still counts in full."""
    clock = FakeClock(1_000.0)
    store = make_store(clock, stale_keep=60.0)
    store.put(key("/a"), response(freshness_lifetime=10.0))
    store.put(key("/b"), response(freshness_lifetime=10.0, stale_if_error=100.0))
    clock.now = 1_069.9
    assert get(store, key("/a")) is not None
    clock.now = 1_070.0
    assert get(store, key("/a")) is None
    assert get(store, key("/b")) is not None
    clock.now = 1_110.0
    assert get(store, key("/b")) is None


@pytest.mark.parametrize(
    "rule", [{"no_stale": True}, {"no_cache": True, "stale_if_error": 5.0}], ids=str
)
def test_stale_keep_skips_entries_that_may_never_be_served_stale(rule: dict[str, Any]) -> None:
    """RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.4: must-revalidate (and the like) or no-cache
    responses are never served stale, so keeping them past their own windows is no use."""
    clock = FakeClock(1_000.0)
    store = make_store(clock, stale_keep=60.0)
    store.put(key("/a"), response(freshness_lifetime=10.0, **rule))
    clock.now = 1_015.0
    assert get(store, key("/a")) is None


def test_stale_keep_applies_to_each_variant() -> None:
    """RFC 9111 §4.1: variants of one URL are kept by their own expiry plus the grace."""
    clock = FakeClock(1_000.0)
    store = make_store(clock, stale_keep=60.0)
    store.put(key("/v"), response(b"en", freshness_lifetime=10.0, vary=((b"x", b"en"),)))
    store.put(key("/v"), response(b"fr", freshness_lifetime=100.0, vary=((b"x", b"fr"),)))
    clock.now = 1_075.0
    assert [v.body for v in store.variants(key("/v"))] == [b"fr"]


def test_kept_stale_entries_count_against_max_bytes() -> None:
    """Kept entries stay within ``cache_max_bytes``: the least recently used go first."""
    clock = FakeClock(1_000.0)
    store = make_store(clock, max_bytes=700, stale_keep=3600.0)
    for name in ("/a", "/b", "/c"):
        store.put(key(name), response(b"x" * 200, freshness_lifetime=1.0))
    clock.now = 1_100.0
    assert store.total_bytes <= 700
    assert get(store, key("/a")) is None and get(store, key("/c")) is not None


def test_vary_variants_coexist_newest_first_and_same_variant_replaces() -> None:
    """RFC 9111 §4.1: several responses for one URL, selected by their secondary keys; a new
    response with the same secondary key replaces the old one."""
    store = make_store(FakeClock())
    english = ((b"accept-language", b"en"),)
    french = ((b"accept-language", b"fr"),)
    store.put(key("/v"), response(b"en", vary=english))
    store.put(key("/v"), response(b"fr", vary=french))
    assert [v.body for v in store.variants(key("/v"))] == [b"fr", b"en"]
    store.put(key("/v"), response(b"en2", vary=english))
    assert [v.body for v in store.variants(key("/v"))] == [b"en2", b"fr"]
    assert len(store) == 2
    assert store.discard(key("/v")) == 2


def test_variants_per_url_are_bounded() -> None:
    store = make_store(FakeClock())
    for i in range(MAX_VARIANTS + 5):
        store.put(key("/v"), response(vary=((b"x-i", str(i).encode()),)))
    assert len(store.variants(key("/v"))) == MAX_VARIANTS


def test_404s_are_held_to_their_own_capacity() -> None:
    """The negative cache: at most max_404_entries URLs hold a 404, oldest go first, and they
    never push out other responses beyond that."""
    store = CacheStore(100, 1_000_000, 100_000, clock=FakeClock(), max_404_entries=2)
    store.put(key("/ok"), response())
    for i in range(5):
        missing = response(b"gone")
        missing.status = 404
        assert store.put(key(f"/missing/{i}"), missing)
    assert [get(store, key(f"/missing/{i}")) is not None for i in range(5)] == [
        False, False, False, True, True
    ]
    assert get(store, key("/ok")) is not None


def test_zero_404_capacity_stores_no_404() -> None:
    store = CacheStore(100, 1_000_000, 100_000, clock=FakeClock(), max_404_entries=0)
    missing = response()
    missing.status = 404
    assert store.put(key("/m"), missing) is False


def test_hold_for_bounds_how_long_an_entry_is_kept() -> None:
    """The first level of the shared cache keeps a copy ``hold_for`` seconds at most, however
    long it stays fresh."""
    clock = FakeClock()
    store = CacheStore(100, 1_000_000, 100_000, clock=clock, hold_for=1.0)
    store.put(key("/a"), response(freshness_lifetime=60.0))
    clock.now += 0.9
    assert get(store, key("/a")) is not None
    clock.now += 0.2
    assert get(store, key("/a")) is None
