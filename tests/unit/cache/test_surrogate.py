"""phantom.cache.surrogate and Surrogate-Control in the storage decision (W3C Edge
Architecture Specification 1.0, §2.2 and §3; the policy's RFC 9111 rules for the rest)."""

from __future__ import annotations

import pytest
from storage_decisions import decide as _decide

from phantom.cache import surrogate
from phantom.cache.policy import StorageDecision


def decide(
    response_headers: list[tuple[bytes, bytes]],
    request_headers: list[tuple[bytes, bytes]] | None = None,
    *,
    enabled: bool = True,
    status: int = 200,
) -> StorageDecision | None:
    return _decide(response_headers, request_headers, status=status, surrogate_control=enabled)


def test_directives_parse_like_cache_control() -> None:
    """Edge Architecture §3: comma-separated directives with optional arguments; names are
    case-insensitive, quoted arguments unquoted, the first occurrence wins."""
    assert surrogate.directives([b'Max-Age=60, no-store, content="ESI/1.0"', b"max-age=5"]) == {
        "max-age": "60",
        "no-store": None,
        "content": "ESI/1.0",
    }


def test_directives_addressed_to_other_devices_are_ignored() -> None:
    """Edge Architecture §3: ``;device`` addresses a directive to one surrogate; phantom reads
    only those addressed to every device or to ``phantom``."""
    found = surrogate.directives([b"no-store;edge1, max-age=30;Phantom , max-age=90"])
    assert found == {"max-age": "30"}


def test_surrogate_max_age_takes_precedence_over_cache_control() -> None:
    """Edge Architecture §2.2: a surrogate uses Surrogate-Control in preference to
    Cache-Control: max-age, s-maxage, Expires, no-cache and no-store there are for browsers."""
    decision = decide(
        [
            (b"cache-control", b"no-store, no-cache, max-age=0, s-maxage=5"),
            (b"expires", b"0"),
            (b"surrogate-control", b"max-age=300"),
        ]
    )
    assert decision is not None
    assert decision.freshness_lifetime == 300.0 and not decision.no_cache


def test_surrogate_no_store_wins_over_cache_control() -> None:
    """Edge Architecture §3: ``no-store`` in Surrogate-Control: the surrogate keeps nothing,
    whatever Cache-Control allows browsers."""
    assert decide([(b"cache-control", b"public, max-age=600"),
                   (b"surrogate-control", b"no-store")]) is None


def test_surrogate_control_never_overrides_what_protects_users() -> None:
    """RFC 9111 §3, §3.5, §5.2.2.7: ``private``, Set-Cookie and Authorization keep a response
    out of the shared cache; Surrogate-Control does not change that (nor a request's own
    ``no-store``, §5.2.1.5)."""
    surrogate_ttl = (b"surrogate-control", b"max-age=300")
    assert decide([surrogate_ttl, (b"cache-control", b"private")]) is None
    assert decide([surrogate_ttl, (b"set-cookie", b"id=1")]) is None
    assert decide([surrogate_ttl], [(b"authorization", b"Basic eDp5")]) is None
    assert decide([surrogate_ttl], [(b"cache-control", b"no-store")]) is None


def test_surrogate_control_is_ignored_when_turned_off() -> None:
    """``surrogate_control = false``: the header means nothing to phantom (RFC 9111 only)."""
    fields = [(b"cache-control", b"max-age=10"), (b"surrogate-control", b"max-age=300")]
    decision = decide(fields, enabled=False)
    assert decision is not None and decision.freshness_lifetime == 10.0
    assert decide([(b"cache-control", b"max-age=10"), (b"surrogate-control", b"no-store")],
                  enabled=False) is not None


@pytest.mark.parametrize("status", [503, 203])
def test_surrogate_max_age_is_explicit_freshness(status: int) -> None:
    """RFC 9111 §3: a status that needs explicit freshness to be stored gets it from
    Surrogate-Control's max-age too."""
    decision = decide([(b"surrogate-control", b"max-age=30")], status=status)
    assert decision is not None and decision.freshness_lifetime == 30.0


def test_without_field_removes_every_line_and_keeps_the_rest() -> None:
    """Edge Architecture §2.2: the header is for surrogates; clients never receive it."""
    fields = [(b"Surrogate-Control", b"max-age=1"), (b"a", b"1"),
              (b"surrogate-control", b"no-store;x"), (b"a", b"2")]
    assert surrogate.without_field(fields) == [(b"a", b"1"), (b"a", b"2")]
