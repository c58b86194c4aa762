"""`phantom routes` and `--microfrontends` as a real subprocess: the table, where paths go,
one-line errors. Nothing here binds a socket."""

from __future__ import annotations

import shutil
from pathlib import Path

from test_cli import assert_one_line_error, phantom

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "microfrontends"

ROUTES = """\
[server.user]
proxy_url = "http://127.0.0.1:8001/v1"
bind_to = "/users/{id}"
rewrite = "/user/{id}"
methods = ["GET"]
fallback_url = "https://preview.example.com"

[server.api]
proxy_url = "http://127.0.0.1:8002"
bind_to = ["/api", "=/health"]
hosts = ["api.test"]
"""


def test_routes_prints_the_table_and_where_each_path_goes(tmp_path: Path) -> None:
    (tmp_path / "phantom.toml").write_text(ROUTES)
    result = phantom("routes", "/users/7?x=1", "/nothing", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "hosts     bind_to      methods  server  backend                   path sent"
        "                fallback_url\n"
        "api.test  /api         any      api     http://127.0.0.1:8002     prefix stripped"
        "          -\n"
        "api.test  =/health     any      api     http://127.0.0.1:8002     kept"
        "                     -\n"
        "any       /users/{id}  GET      user    http://127.0.0.1:8001/v1  rewritten to /user/{id}"
        "  https://preview.example.com:443\n"
        "\n"
        "GET /users/7?x=1 -> server user: http://127.0.0.1:8001/v1/user/7?x=1"
        " (if refused: fallback https://preview.example.com:443/user/7?x=1)\n"
        "GET /nothing -> 404, no server is bound to this host and path\n"
    )
    posted = phantom("routes", "--method", "post", "/users/7", cwd=tmp_path)
    assert posted.stdout.endswith("POST /users/7 -> 405, Allow: GET, HEAD\n")
    hosted = phantom("routes", "--host", "API.test:80", "/api/x", cwd=tmp_path)
    assert hosted.stdout.endswith(
        "GET /api/x (Host: API.test:80) -> server api: http://127.0.0.1:8002/x\n"
    )


def test_microfrontends_alone_and_with_a_phantom_toml_next_to_it(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "seed-002.json", tmp_path / "microfrontends.json")
    result = phantom("routes", "--microfrontends", "microfrontends.json", "/docs/x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(
        "GET /docs/x -> server docs: http://localhost:3001/docs/x\n"
    )
    checked = phantom("check", "--config", "phantom.toml", cwd=tmp_path)
    assert checked.returncode == 2  # no phantom.toml yet
    (tmp_path / "phantom.toml").write_text(
        '[defaults]\ncache_strategy = "all"\n'
        '[server.docs]\nbind_to = "/docs"\nstrip_prefix = true\n'
    )
    moved = phantom("routes", "--microfrontends", "microfrontends.json", "/docs/x", cwd=tmp_path)
    assert moved.stdout.endswith("GET /docs/x -> server docs: http://localhost:3001/x\n")


def test_a_bad_microfrontends_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "microfrontends.json").write_text('{"applications": {"a": {}, "b": {}}}')
    result = phantom("serve", "--microfrontends", "microfrontends.json", cwd=tmp_path)
    assert_one_line_error(
        result,
        f"{tmp_path / 'microfrontends.json'}: applications.b: has no routing, like a: only "
        "the default application goes without",
    )
    demo = phantom("serve", "--demo", "--microfrontends", "x.json", cwd=tmp_path)
    assert demo.returncode == 2 and "--microfrontends" in demo.stderr


def test_routes_without_a_config_says_what_to_pass(tmp_path: Path) -> None:
    result = phantom("routes", cwd=tmp_path)
    assert_one_line_error(
        result,
        "phantom.toml: <file>: file not found (pass --config PATH or --microfrontends FILE)",
    )
