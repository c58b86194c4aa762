"""The edge guards' pure decisions: where a token is (phantom.bearer), GCRA rate limits and
byte pacing with a fake clock (phantom.ratelimit), allow/deny (phantom.iprules), Origin
matching (phantom.origins) and CORS (phantom.cors)."""

from __future__ import annotations

import ipaddress

import pytest

from phantom.bearer import TokenPlaces, find_token
from phantom.config import CorsConfig, RateLimitConfig
from phantom.cors import Cors
from phantom.iprules import IpRules
from phantom.origins import OriginMatcher, origin_allowed, parse_origin_pattern
from phantom.ratelimit import Limiter, Pacer, rate_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- bearer -----------------------------------------------------------------------------------

PLACES = TokenPlaces("session", "access_token")


@pytest.mark.parametrize(
    ("headers", "target", "token", "forwarded"),
    [
        ([(b"authorization", b"Bearer abc.def")], b"/x", "abc.def", b"/x"),
        ([(b"authorization", b"bearer  abc ")], b"/x", "abc", b"/x"),
        ([(b"authorization", b"Bearer a b")], b"/x", "", b"/x"),  # malformed: refused later
        ([(b"authorization", b"Basic dXNlcg==")], b"/x?access_token=q", "q", b"/x"),
        ([(b"cookie", b"a=1; session=c.o.k")], b"/x", "c.o.k", b"/x"),
        (
            [(b"cookie", b"session=c"), (b"authorization", b"Bearer h")],
            b"/x?access_token=q&b=2",
            "h",
            b"/x?b=2",
        ),
        ([], b"/ws?a=1&access_token=q1&access_token=q2&z", "q1", b"/ws?a=1&z"),
        ([], b"/ws?access%5Ftoken=q", "q", b"/ws"),
        ([], b"/ws?my_access_token=q", None, b"/ws?my_access_token=q"),
        ([], b"/x", None, b"/x"),
    ],
)
def test_find_token(
    headers: list[tuple[bytes, bytes]], target: bytes, token: str | None, forwarded: bytes
) -> None:
    found, rest, in_header = find_token(headers, target, PLACES)
    assert (found, rest) == (token, forwarded)
    assert in_header == any(
        n == b"authorization" and v.lower().startswith(b"bearer") for n, v in headers
    )


def test_no_cookie_or_query_place_when_unset() -> None:
    places = TokenPlaces(None, "")
    assert find_token([(b"cookie", b"session=c")], b"/x?access_token=q", places) == (
        None,
        b"/x?access_token=q",
        False,
    )


# -- rate limits ------------------------------------------------------------------------------


def limiter(
    clock: Clock, requests: int = 10, per: float = 10, burst: int = 3, keys: int = 100
) -> Limiter:
    return Limiter(RateLimitConfig(requests, per, burst), keys, clock)


def test_burst_then_the_steady_rate() -> None:
    clock = Clock()
    limit = limiter(clock)  # one request a second, three at once
    waits = []
    left = []
    for _ in range(4):
        waits.append(limit.take("a"))
        left.append(dict(limit.quota.fields(limit.full_in("a"), waits[-1]))[b"RateLimit"])
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert left[:3] == [b'"default";r=2;t=1', b'"default";r=1;t=2', b'"default";r=0;t=3']
    assert waits[3] == pytest.approx(1.0)
    assert dict(limit.quota.fields(limit.full_in("a"), waits[3])) == {
        b"RateLimit-Policy": b'"default";q=10;w=10',
        b"RateLimit": b'"default";r=0;t=3',
        b"Retry-After": b"1",
    }
    clock.now += 0.5
    assert limit.take("a")  # a refusal costs nothing, and half a token is none
    clock.now += 0.5
    assert limit.take("a") == 0
    assert limit.take("a")
    assert limit.take("b") == 0  # each key its own bucket


def test_over_time_the_rate_holds() -> None:
    clock = Clock()
    limit = limiter(clock, requests=100, per=60, burst=20)
    allowed = 0
    for _ in range(6000):  # 60 s of a request every 10 ms
        allowed += limit.take("k") == 0
        clock.now += 0.01
    assert allowed == pytest.approx(20 + 100, abs=1)


def test_keys_are_bounded_least_recently_seen_forgotten() -> None:
    clock = Clock()
    limit = limiter(clock, burst=1, keys=3)
    for key in "abc":
        limit.take(key)
    limit.take("a")  # refused, but seen: "b" is now the oldest
    limit.take("d")
    assert len(limit) == 3
    assert limit.take("b") == 0  # forgotten: a full bucket again
    assert limit.take("a") > 0


def test_pacer_keeps_the_byte_rate() -> None:
    clock = Clock()
    pacer = Pacer(1000, burst=0.05, clock=clock)
    assert pacer.charge(50) == 0  # within the burst
    assert pacer.charge(1000) == pytest.approx(1.0)
    clock.now += 1.0
    assert pacer.charge(100) == pytest.approx(0.1)  # the 50 of the first call still count
    clock.now += 10
    assert pacer.charge(10) == 0  # idle time is not saved up beyond the burst


@pytest.mark.parametrize(
    ("spec", "headers", "claims", "key"),
    [
        ("client_ip", [], None, "ip:10.0.0.1"),
        ("jwt:sub", [], {"sub": "alice"}, "jwt:alice"),
        ("jwt:sub", [], None, "ip:10.0.0.1"),  # no verified token
        ("jwt:sub", [], {"sub": {"x": 1}}, "ip:10.0.0.1"),
        ("header:x-api-key", [(b"x-api-key", b"k1")], None, "header:k1"),
        ("header:x-api-key", [(b"x-api-key", b"10.0.0.9")], None, "header:10.0.0.9"),
        ("header:x-api-key", [], None, "ip:10.0.0.1"),
    ],
)
def test_rate_keys(
    spec: str, headers: list[tuple[bytes, bytes]], claims: dict[str, object] | None, key: str
) -> None:
    assert rate_key(spec, "10.0.0.1", headers, claims) == key


def test_long_key_values_are_hashed() -> None:
    key = rate_key("header:x", "1.2.3.4", [(b"x", b"v" * 10_000)])
    assert key.startswith("header:") and len(key) < 50


# -- IP rules ---------------------------------------------------------------------------------


def nets(*texts: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


@pytest.mark.parametrize(
    ("allow", "deny", "client", "permitted"),
    [
        ((), (), "203.0.113.9", True),
        (("10.0.0.0/8", "::1"), (), "10.1.2.3", True),
        (("10.0.0.0/8", "::1"), (), "::1", True),
        (("10.0.0.0/8", "::1"), (), "11.0.0.1", False),
        (("10.0.0.0/8",), (), "::ffff:10.0.0.1", True),  # IPv4 on a dual-stack listener
        (("10.0.0.0/8",), ("10.0.0.0/24",), "10.0.0.5", False),  # deny wins
        ((), ("127.0.0.2",), "127.0.0.2", False),
        ((), ("127.0.0.2",), "127.0.0.1", True),
        (("fd00::/8",), (), "fd00::1", True),
        (("10.0.0.0/8",), (), "not-an-address", False),
    ],
)
def test_ip_rules(
    allow: tuple[str, ...], deny: tuple[str, ...], client: str, permitted: bool
) -> None:
    rules = IpRules(nets(*allow), nets(*deny))
    assert rules.permits(client) is permitted
    assert rules.permits(client) is permitted  # and again, from its memory


# -- origins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "matched"),
    [
        (b"https://app.example.com", True),
        (b"https://APP.example.com", True),
        (b"https://app.example.com:443", True),
        (b"https://app.example.com:8443", False),
        (b"http://app.example.com", False),
        (b"https://a.b.example.com", True),
        (b"https://example.com", False),  # the wildcard is subdomains only
        (b"https://evilexample.com", False),
        (b"https://example.com.evil.net", False),
        (b"http://localhost:3000", True),
        (b"null", False),
        (b"https://app.example.com/path", False),
        (b"\xff", False),
    ],
)
def test_origin_matching(origin: bytes, matched: bool) -> None:
    matcher = OriginMatcher(
        ["https://app.example.com", "https://*.example.com", "http://localhost:3000"]
    )
    assert matcher.matches(origin) is matched


@pytest.mark.parametrize(
    "text", ["*", "null", "app.example.com", "https://a.com/x", "ftp://a.com", "https://a.com:0"]
)
def test_bad_origin_patterns(text: str) -> None:
    with pytest.raises(ValueError):
        parse_origin_pattern(text)


def test_origin_patterns_print_canonically() -> None:
    assert str(parse_origin_pattern("HTTPS://App.Example.com:443")) == "https://app.example.com"
    assert str(parse_origin_pattern("http://*.x.dev:8080")) == "http://*.x.dev:8080"


def test_origin_allowed_on_upgrades() -> None:
    matcher = OriginMatcher(["https://app.example.com"])
    assert origin_allowed([b"https://app.example.com"], matcher, required=False)
    assert not origin_allowed([b"https://evil.example"], matcher, required=False)
    assert origin_allowed([], matcher, required=False)  # not a browser
    assert not origin_allowed([], matcher, required=True)
    two = [b"https://app.example.com", b"https://evil.example"]
    assert not origin_allowed(two, matcher, required=False)


# -- CORS -------------------------------------------------------------------------------------

CORS = CorsConfig(
    origins=("https://app.example.com",),
    methods=("GET", "PUT"),
    headers=("content-type", "authorization"),
    credentials=True,
    max_age=300,
)


def preflight_headers(
    origin: bytes, method: bytes, asked: bytes | None = None
) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", origin), (b"access-control-request-method", method)]
    if asked is not None:
        headers.append((b"access-control-request-headers", asked))
    return headers


def test_a_preflight_from_a_listed_origin_is_answered_204() -> None:
    answer = Cors(CORS).preflight(
        b"OPTIONS",
        preflight_headers(b"https://app.example.com", b"PUT", b"Content-Type, Authorization"),
    )
    assert answer is not None and answer.status == 204
    fields = dict(answer.headers)
    assert fields[b"Access-Control-Allow-Origin"] == b"https://app.example.com"
    assert fields[b"Access-Control-Allow-Credentials"] == b"true"
    assert fields[b"Access-Control-Allow-Methods"] == b"GET, PUT"
    assert fields[b"Access-Control-Allow-Headers"] == b"content-type, authorization"
    assert fields[b"Access-Control-Max-Age"] == b"300"
    assert b"Origin" in fields[b"Vary"]


@pytest.mark.parametrize(
    ("origin", "method", "asked"),
    [
        (b"https://evil.example", b"GET", None),
        (b"https://app.example.com", b"DELETE", None),
        (b"https://app.example.com", b"GET", b"x-secret"),
    ],
)
def test_a_preflight_asking_too_much_is_403(
    origin: bytes, method: bytes, asked: bytes | None
) -> None:
    answer = Cors(CORS).preflight(b"OPTIONS", preflight_headers(origin, method, asked))
    assert answer is not None and answer.status == 403
    assert b"Access-Control-Allow-Origin" not in dict(answer.headers)


def test_not_a_preflight() -> None:
    cors = Cors(CORS)
    assert cors.preflight(b"GET", preflight_headers(b"https://app.example.com", b"GET")) is None
    assert cors.preflight(b"OPTIONS", [(b"origin", b"https://app.example.com")]) is None


def test_answer_fields() -> None:
    cors = Cors(CORS)
    assert cors.answer_fields(b"https://app.example.com") == [
        (b"Access-Control-Allow-Origin", b"https://app.example.com"),
        (b"Access-Control-Allow-Credentials", b"true"),
        (b"Vary", b"Origin"),
    ]
    assert cors.answer_fields(b"https://evil.example") == [(b"Vary", b"Origin")]
    assert cors.answer_fields(None) == [(b"Vary", b"Origin")]
    anyone = Cors(CorsConfig(origins=("*",)))
    assert anyone.answer_fields(b"https://x.example")[0] == (b"Access-Control-Allow-Origin", b"*")
