"""phantom.cache.rules: include/exclude path rules and cache_strategy, pure."""

from __future__ import annotations

import pytest

from phantom.cache.rules import CacheRules, parse_path_rule


def rules(
    include: tuple[str, ...] | list[str] = (),
    exclude: tuple[str, ...] | list[str] = (),
    strategy: str = "all",
) -> CacheRules:
    return CacheRules(
        strategy=strategy,
        include=tuple(parse_path_rule(r) for r in include),
        exclude=tuple(parse_path_rule(r) for r in exclude),
    )


@pytest.mark.parametrize(
    ("include", "exclude", "method", "target", "expected"),
    [
        ([], [], b"GET", b"/anything", True),
        (["/api/*"], [], b"GET", b"/api/x?q=1", True),
        (["/api/*"], [], b"GET", b"/static/x", False),
        (["GET /api/*"], [], b"HEAD", b"/api/x", False),
        (["*.css"], [], b"GET", b"/a/b/site.css?v=3", True),  # query is not part of the path
        ([], ["/admin*"], b"GET", b"/admin/users", False),
        (["/api/*"], ["/api/private/*"], b"GET", b"/api/private/x", False),  # exclude wins
        (["*"], ["POST *"], b"GET", b"/x", True),
        (["/a*b*c"], [], b"GET", b"/a--b--c", True),
    ],
)
def test_uses_cache(
    include: list[str], exclude: list[str], method: bytes, target: bytes, expected: bool
) -> None:
    assert rules(include, exclude).uses_cache(method, target) is expected


def test_strategy_none_never_uses_the_cache() -> None:
    assert not rules(strategy="none").uses_cache(b"GET", b"/")


@pytest.mark.parametrize(
    ("strategy", "content_type", "expected"),
    [
        ("all", None, True),
        ("only_html", b"text/html; charset=utf-8", True),
        ("only_html", b"TEXT/HTML", True),
        ("only_html", b"application/json", False),
        ("only_html", None, False),
        ("no_images", b"image/png", False),
        ("no_images", b"text/css", True),
        ("no_images", None, True),
        ("only_images", b"image/svg+xml", True),
        ("only_images", b"text/html", False),
        ("only_assets", b"text/css", True),
        ("only_assets", b"application/javascript", True),
        ("only_assets", b"application/problem+json", True),
        ("only_assets", b"font/woff2", True),
        ("only_assets", b"application/wasm", True),
        ("only_assets", b"image/webp", True),
        ("only_assets", b"text/html", False),
    ],
)
def test_strategy_keeps(strategy: str, content_type: bytes | None, expected: bool) -> None:
    assert rules(strategy=strategy).keeps(content_type) is expected


@pytest.mark.parametrize("text", ["api/*", "GET", "G3T /x", ""])
def test_bad_path_rules(text: str) -> None:
    with pytest.raises(ValueError):
        parse_path_rule(text)


def test_path_rule_method_is_case_insensitive() -> None:
    rule = parse_path_rule("get /x")
    assert rule.method == "GET" and rule.matches("GET", "/x")


@pytest.mark.parametrize("strategy", ["all", "no_images", "only_assets", "only_html"])
@pytest.mark.parametrize(
    "content_type", [b"text/event-stream", b"Text/Event-Stream; charset=utf-8"]
)
def test_server_sent_events_are_never_kept(strategy: str, content_type: bytes) -> None:
    """A stream of events is live for each client: no strategy keeps one."""
    assert rules(strategy=strategy).keeps(content_type) is False
