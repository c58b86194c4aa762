"""phantom.routing: host and path matching, prefix stripping, base paths. Pure, no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from phantom import routing
from phantom.config import config_from_dict
from phantom.errors import RequestRejected
from phantom.headers import with_backend_host
from phantom.routing import Router, request_host


def router(**servers: dict[str, Any]) -> Router:
    tables = {
        name: {"proxy_url": "http://127.0.0.1:8080", **body} for name, body in servers.items()
    }
    return Router(config_from_dict({"server": tables}).servers)


def routed(r: Router, target: str, host: str | None = "example.com") -> tuple[str, str] | None:
    route = r.route(None if host is None else host.encode(), target.encode(), b"GET")
    return None if route is None else (route.server.name, route.target.decode())


def test_longest_prefix_on_segment_boundaries_then_fallback() -> None:
    r = router(
        api={"bind_to": "/api"},
        admin={"bind_to": "/api/admin"},
        web={"bind_to": "*"},
    )
    assert routed(r, "/api") == ("api", "/")
    assert routed(r, "/api/") == ("api", "/")
    assert routed(r, "/api/users?x=1") == ("api", "/users?x=1")
    assert routed(r, "/api/admin/x") == ("admin", "/x")
    assert routed(r, "/api/administrator") == ("api", "/administrator")
    assert routed(r, "/apix") == ("web", "/apix")
    assert routed(r, "/") == ("web", "/")


def test_remembered_decisions_match_fresh_ones_and_stay_bounded() -> None:
    """route() remembers hosts and targets (bounded); a router that remembers answers
    exactly as a new one deciding afresh, for every host, path and query."""
    tables = {
        "api": {"proxy_url": "http://127.0.0.1:8080", "bind_to": "/api", "hosts": ["a.test"]},
        "web": {"proxy_url": "http://127.0.0.1:8081"},
    }
    servers = config_from_dict({"server": tables}).servers
    remembering = Router(servers)
    requests = [
        (host, f"/{path}{query}".encode())
        for host in (b"a.test", b"A.TEST:80", b"b.test", None, b"h" * routing.MEMO_MAX_BYTES)
        for path in ("api", "api/x", "apix", "", "x" * routing.MEMO_MAX_BYTES)
        for query in ("", "?q=/api")
    ]
    requests += [(b"a.test", f"/api/{n}".encode()) for n in range(routing.MEMO_ENTRIES + 10)]
    for _ in range(2):  # the second round answers from memory where it can
        for host, target in requests:
            assert remembering.route(host, target, b"GET") == Router(servers).route(
                host, target, b"GET"
            )
    assert len(remembering._memo) == routing.MEMO_ENTRIES


def test_no_match_and_no_fallback_is_none() -> None:
    r = router(api={"bind_to": "/api"})
    assert routed(r, "/other") is None
    assert routed(r, "/apix") is None
    assert routed(r, "*") is None


def test_base_path_prepended_and_query_kept() -> None:
    r = router(api={"bind_to": "/api", "proxy_url": "http://127.0.0.1:8080/v1"})
    assert routed(r, "/api/users?page=2&q=a%20b") == ("api", "/v1/users?page=2&q=a%20b")
    assert routed(r, "/api?x") == ("api", "/v1/?x")


def test_strip_prefix_false_keeps_the_path() -> None:
    r = router(docs={"bind_to": "/docs", "strip_prefix": False})
    assert routed(r, "/docs/_next/webpack-hmr") == ("docs", "/docs/_next/webpack-hmr")


def test_trailing_slash_in_bind_to_and_slash_alone() -> None:
    r = router(api={"bind_to": "/api/"}, root={"bind_to": "/"})
    assert routed(r, "/api/x") == ("api", "/x")
    assert routed(r, "/else") == ("root", "/else")


def test_hosts_exact_and_wildcard_before_path() -> None:
    r = router(
        app={"hosts": ["App.Example.com"]},
        app_api={"hosts": ["app.example.com"], "bind_to": "/api"},
        preview={"hosts": ["*.preview.example.com"]},
        deep={"hosts": ["*.x.preview.example.com"]},
        other={"bind_to": "*"},
        other_api={"bind_to": "/api"},
    )
    assert routed(r, "/", "app.example.com") == ("app", "/")
    assert routed(r, "/api/x", "APP.example.com:8443") == ("app_api", "/x")
    assert routed(r, "/", "app.example.com.") == ("app", "/")
    assert routed(r, "/", "pr-1.preview.example.com") == ("preview", "/")
    assert routed(r, "/", "a.b.preview.example.com") == ("preview", "/")
    assert routed(r, "/", "a.x.preview.example.com") == ("deep", "/")
    assert routed(r, "/", "preview.example.com") == ("other", "/")  # wildcard needs a label
    assert routed(r, "/api/x", "unknown.test") == ("other_api", "/x")
    assert routed(r, "/", None) == ("other", "/")


def test_claimed_host_without_a_matching_path_is_not_routed_elsewhere() -> None:
    r = router(app={"hosts": ["app.test"], "bind_to": "/app"}, rest={"bind_to": "*"})
    assert routed(r, "/other", "app.test") is None
    assert routed(r, "/other", "else.test") == ("rest", "/other")


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("[::1]:3000", "::1"),
        ("[::1]", "::1"),
        ("example.com.", "example.com"),
        ("", ""),
    ],
)
def test_request_host(header: str, host: str) -> None:
    assert request_host(header.encode()) == host


def test_with_backend_host_replaces_host_and_origin_only_on_request() -> None:
    headers = [(b"HOST", b"app.test"), (b"Origin", b"https://app.test"), (b"X", b"1")]
    assert with_backend_host(headers, b"127.0.0.1:9000", origin=True) == [
        (b"HOST", b"127.0.0.1:9000"),
        (b"Origin", b"http://127.0.0.1:9000"),
        (b"X", b"1"),
    ]
    assert with_backend_host(headers, b"127.0.0.1:9000", origin=False)[1] == headers[1]
    assert with_backend_host([(b"X", b"1")], b"b:1", origin=False) == [
        (b"Host", b"b:1"),
        (b"X", b"1"),
    ]


def test_routing_and_the_forwarded_target_use_the_normal_form() -> None:
    r = router(admin={"bind_to": "/admin"}, web={"bind_to": "*"})
    for target in ("/admin/x", "/%61dmin/x", "//admin//x", "/x/../admin/x", "/%2E/admin/x"):
        route = r.route(b"example.com", target.encode(), b"GET")
        assert route is not None
        assert (route.server.name, route.target, route.path) == ("admin", b"/x", b"/admin/x")


def test_merge_slashes_false_routes_by_the_merged_path_but_keeps_the_slashes() -> None:
    r = router(api={"bind_to": "/api", "merge_slashes": False}, web={"bind_to": "*"})
    route = r.route(b"example.com", b"//api//x/%61?q", b"GET")
    assert route is not None
    assert (route.server.name, route.target, route.path) == ("api", b"//x/a?q", b"//api//x/a?q")


def test_encoded_separators_refused_unless_the_server_allows_them() -> None:
    r = router(api={"bind_to": "/api", "allow_encoded_slashes": True}, web={"bind_to": "*"})
    route = r.route(b"example.com", b"/api/a%2fb", b"GET")
    assert route is not None and route.target == b"/a%2Fb"
    with pytest.raises(RequestRejected) as refused:
        r.route(b"example.com", b"/%2faccount", b"GET")
    assert refused.value.status == 400
    assert routed(r, "/account") == ("web", "/account")


def test_patterns_rewrites_and_most_specific_first() -> None:
    r = router(
        user={"bind_to": ["/users/{id}"], "rewrite": "/v1/user/{id}"},
        me={"bind_to": "/users/me"},
        files={"bind_to": "/files/{path*}", "rewrite": "/storage/{path*}"},
        kept={"bind_to": ["/docs/{path*}", "=/pricing"]},
        login={"bind_to": "/login", "rewrite": "/auth/login"},
        web={"bind_to": "*"},
    )
    assert routed(r, "/users/7?full=1") == ("user", "/v1/user/7?full=1")
    assert routed(r, "/users/7/") == ("user", "/v1/user/7")
    assert routed(r, "/users/me") == ("me", "/")
    assert routed(r, "/users/7/posts") == ("web", "/users/7/posts")
    assert routed(r, "/files") == ("files", "/storage")
    assert routed(r, "/files/a/b?x") == ("files", "/storage/a/b?x")
    assert routed(r, "/docs/a") == ("kept", "/docs/a")  # a pattern's path is kept
    assert routed(r, "/pricing") == ("kept", "/pricing")
    assert routed(r, "/pricing/x") == ("web", "/pricing/x")
    assert routed(r, "/login?next=/") == ("login", "/auth/login?next=/")
    assert routed(r, "/login/x") == ("login", "/auth/login/x")


def test_rewrite_reads_the_normal_form_and_base_path_comes_first() -> None:
    r = router(user={"bind_to": "/users/{id}", "rewrite": "/u/{id}",
                     "proxy_url": "http://127.0.0.1:8080/v1"})
    assert routed(r, "/x/../users/%37?q") == ("user", "/v1/u/7?q")


def request(r: Router, method: str, target: str) -> str | int:
    try:
        route = r.route(b"example.com", target.encode(), method.encode())
    except routing.MethodNotAllowed as refused:
        return f"405 {refused.allow_header.decode()}"
    return 404 if route is None else route.server.name


def test_methods_try_the_next_route_then_405_with_allow() -> None:
    r = router(
        read={"bind_to": "/users/{id}", "methods": ["GET"]},
        write={"bind_to": "/users/{id}", "methods": ["post", "PUT"]},
        any_users={"bind_to": "/users", "methods": ["OPTIONS"]},
    )
    assert request(r, "GET", "/users/1") == "read"
    assert request(r, "HEAD", "/users/1") == "read"  # GET brings HEAD
    assert request(r, "POST", "/users/1") == "write"
    assert request(r, "OPTIONS", "/users/1") == "any_users"  # the next matching route
    assert request(r, "DELETE", "/users/1") == "405 GET, HEAD, OPTIONS, POST, PUT"
    assert request(r, "DELETE", "/users") == "405 OPTIONS"
    assert request(r, "GET", "/other") == 404
    for _ in range(2):  # remembered 405s answer the same, each time a new exception
        assert request(r, "DELETE", "/users/1") == "405 GET, HEAD, OPTIONS, POST, PUT"


def test_a_catch_all_takes_what_methods_leave() -> None:
    r = router(api={"bind_to": "/api", "methods": ["GET"]}, web={"bind_to": "*"})
    assert request(r, "POST", "/api/x") == "web"


def test_asterisk_form_matches_only_the_fallback() -> None:
    r = router(root={"bind_to": "=/"}, web={"bind_to": "*"})
    assert routed(r, "*") == ("web", "*")
    assert routed(router(root={"bind_to": ["=/", "/{x*}"]}), "*") is None


def test_target_at_another_base_path() -> None:
    r = router(api={"bind_to": "/api", "proxy_url": "http://127.0.0.1:8080/v1"})
    route = r.route(None, b"/api/x?q", b"GET")
    assert route is not None and route.target == b"/v1/x?q"
    fallback = config_from_dict(
        {"server": {"f": {"proxy_url": "https://preview.example.com/base"}}}
    ).servers[0].proxy_url
    assert routing.target_at(route.server, route.target, fallback) == b"/base/x?q"


def test_route_on_one_server_ignores_hosts() -> None:
    server = config_from_dict(
        {"server": {"a": {"proxy_url": "http://127.0.0.1:1/b", "hosts": ["a.test"],
                          "bind_to": "/x"}}}
    ).servers[0]
    route = routing.route_on(server, b"/x/y")
    assert route is not None and route.target == b"/b/y"
    assert routing.route_on(server, b"/z") is None
