"""Several backends behind one server, over real sockets (issue 15): three backends of the
tests' own, each saying who it is, and a phantom in front of them."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from conftest import RawClient, async_test, fetch, get
from named import NamedOrigin, NamedWebSocketBackend, balanced_config
from origin import Reply
from websockets.asyncio.client import ClientConnection, connect

from phantom import create_proxy
from phantom.config import load_config
from phantom.control_client import call

NAMES = ("a", "b", "c")


@asynccontextmanager
async def three_origins() -> AsyncIterator[dict[str, NamedOrigin]]:
    async with AsyncExitStack() as stack:
        yield {name: await stack.enter_async_context(NamedOrigin(name)) for name in NAMES}


@asynccontextmanager
async def balanced(urls: list[str], **options: Any) -> AsyncIterator[Any]:
    async with create_proxy(balanced_config(urls, **options)) as proxy:
        yield proxy


def balancer_of(proxy: Any) -> Any:
    return proxy.servers["app"].backends.balancer


def state_of(proxy: Any, url: str) -> str:
    balancer = balancer_of(proxy)
    (backend,) = [b for b in balancer.backends if str(b.url) == url]
    return str(backend.state(balancer.clock()))


async def until(condition: Callable[[], bool], limit: float) -> float:
    """Seconds until ``condition()`` holds; fails after ``limit``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < limit, "did not happen in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def who(client: RawClient, headers: list[tuple[str, str]] | None = None) -> str:
    response = await client.request("GET", "/who", headers or [])
    assert response.status == 200, (response.status, response.body)
    return response.body.decode()


@async_test(timeout=90)
async def test_weighted_round_robin_follows_the_weights() -> None:
    async with three_origins() as origins:
        weights = {"a": 1, "b": 2, "c": 3}
        config = balanced_config([o.url for o in origins.values()])
        for table, name in zip(config["server"]["app"]["backends"], NAMES, strict=True):
            table["weight"] = weights[name]
        async with create_proxy(config) as proxy:
            seen: Counter[str] = Counter()

            async def client() -> None:
                async with await RawClient.connect(proxy.port) as conn:
                    for _ in range(300):
                        seen[await who(conn)] += 1

            await asyncio.gather(*(client() for _ in range(10)))
    assert sum(seen.values()) == 3000
    for name, weight in weights.items():
        expected = 3000 * weight / 6
        assert abs(seen[name] - expected) <= 0.05 * expected, seen


@async_test(timeout=30)
async def test_least_connections_sends_new_work_away_from_a_slow_backend() -> None:
    async with three_origins() as origins:
        origins["a"].route("/work", Reply(200, [("Cache-Control", "no-store")], b"a", delay=3))
        for name in ("b", "c"):
            origins[name].route(
                "/work", Reply(200, [("Cache-Control", "no-store")], name.encode(), delay=0.05)
            )
        urls = [o.url for o in origins.values()]
        async with balanced(urls, load_balance="least_connections") as proxy:
            answers: list[str] = []

            async def work(n: int) -> None:
                # Each its own URL: misses of one URL would wait for each other (coalescing).
                response = await get(proxy.port, f"/work?n={n}")
                answers.append(response.body.decode())

            tasks = []
            for n in range(30):
                tasks.append(asyncio.ensure_future(work(n)))
                await asyncio.sleep(0.03)
            await asyncio.gather(*tasks)
    counts = Counter(answers)
    assert counts["a"] <= 2, counts  # round robin would have sent it 10
    assert counts["b"] + counts["c"] >= 28


@async_test(timeout=60)
async def test_consistent_hashing_keeps_each_websocket_client_on_one_backend() -> None:
    async with AsyncExitStack() as stack:
        backends = [
            await stack.enter_async_context(NamedWebSocketBackend(name)) for name in NAMES
        ]
        proxy = await stack.enter_async_context(
            create_proxy(
                balanced_config(
                    [b.url for b in backends],
                    load_balance="consistent_hash",
                    hash_key="header:x-user",
                )
            )
        )
        url = f"ws://127.0.0.1:{proxy.port}/ws"

        async def home_of(user: str) -> str:
            async with connect(url, additional_headers={"X-User": user}) as ws:
                greeting = await ws.recv()
                await ws.send("ping")
                assert await ws.recv() == "ping"
                return str(greeting)

        homes = {}
        for user in (f"user-{n}" for n in range(10)):
            seen = {await home_of(user) for _ in range(20)}  # 20 reconnects
            assert len(seen) == 1, (user, seen)
            homes[user] = seen.pop()
        assert len(set(homes.values())) >= 2  # the users are spread


@async_test(timeout=60)
async def test_client_ip_hashing_behind_a_trusted_proxy_spreads_its_clients() -> None:
    """Behind a load balancer (trusted_proxies), the key is each client's address: the
    balancer's own would stick every client to one backend."""
    async with three_origins() as origins:
        options = {"load_balance": "consistent_hash", "trusted_proxies": ["127.0.0.1"]}
        async with balanced([o.url for o in origins.values()], **options) as proxy:
            async with await RawClient.connect(proxy.port) as conn:
                homes = {
                    client: {await who(conn, [("X-Forwarded-For", client)]) for _ in range(3)}
                    for client in (f"198.51.100.{n}" for n in range(1, 31))
                }
    assert all(len(home) == 1 for home in homes.values())  # each client sticks
    assert len(set().union(*homes.values())) >= 2  # and they are spread


@async_test(timeout=60)
async def test_when_a_backend_leaves_only_its_keys_move() -> None:
    async with three_origins() as origins:
        options = {"load_balance": "consistent_hash", "hash_key": "cookie:session"}
        async with balanced([o.url for o in origins.values()], control_port=0, **options) as proxy:

            async def owners() -> dict[str, str]:
                async with await RawClient.connect(proxy.port) as conn:
                    return {
                        key: await who(conn, [("Cookie", f"theme=dark; session={key}")])
                        for key in (f"key-{n}" for n in range(1000))
                    }

            before = await owners()
            assert set(before.values()) == set(NAMES)
            control = f"http://127.0.0.1:{proxy.control_port}"
            answer = await asyncio.to_thread(
                call, control, "/backends/drain", {"url": origins["b"].url}, None
            )
            assert answer["drained"][0]["state"] == "draining"
            after = await owners()
    moved = [key for key in before if before[key] != after[key]]
    assert all(before[key] == "b" for key in moved)
    assert len(moved) <= 1000 * (1 / 3 + 0.05), len(moved)
    assert "b" not in after.values()


@async_test(timeout=60)
async def test_killing_a_backend_mid_load_costs_gets_nothing_and_posts_a_clean_502() -> None:
    async with three_origins() as origins:
        for origin in origins.values():
            origin.route("/post", Reply(200, [("Cache-Control", "no-store")], origin.name.encode()))
        async with balanced([o.url for o in origins.values()]) as proxy:
            statuses: Counter[int] = Counter()
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    async with await RawClient.connect(proxy.port) as conn:
                        for _ in range(20):
                            statuses[(await conn.request("GET", "/who")).status] += 1

            workers = [asyncio.ensure_future(load()) for _ in range(5)]
            await asyncio.sleep(0.3)
            await origins["b"].close()  # killed mid-load: its connections and its port go
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*workers)
            assert set(statuses) == {200}, statuses
            assert statuses[200] > 100
            assert balancer_of(proxy).retry_counts["success"] >= 1

            await origins["c"].close()
            posts = [await fetch(proxy.port, "POST", "/post", body=b"x") for _ in range(6)]
            assert {r.status for r in posts} == {200, 502}
            for response in posts:
                if response.status == 502:  # never retried: the body might have done something
                    assert response.complete
                    assert response.body == b"The backend refused the connection.\n"
                else:
                    assert response.body == b"a"


@async_test(timeout=30)
async def test_health_checks_take_a_backend_out_and_bring_it_back() -> None:
    interval, threshold = 0.2, 2
    check = {
        "path": "/healthz",
        "interval": interval,
        "timeout": interval,
        "unhealthy_threshold": threshold,
        "healthy_threshold": threshold,
    }
    async with three_origins() as origins:
        async with balanced([o.url for o in origins.values()], health_check=check) as proxy:
            b = origins["b"]
            await b.close()
            took = await until(lambda: state_of(proxy, b.url) == "unhealthy", 5)
            assert took <= interval * threshold + 2 * interval + 0.3
            async with await RawClient.connect(proxy.port) as conn:
                assert {await who(conn) for _ in range(6)} == {"a", "c"}
            await b.start()  # back, on its port
            took = await until(lambda: state_of(proxy, b.url) == "healthy", 5)
            assert took <= interval * threshold + 2 * interval + 0.3
            async with await RawClient.connect(proxy.port) as conn:
                assert {await who(conn) for _ in range(6)} == {"a", "b", "c"}


@async_test(timeout=30)
async def test_the_breaker_opens_half_opens_and_closes() -> None:
    async with three_origins() as origins:
        b = origins["b"]
        b.route("/who", Reply(503, [("Cache-Control", "no-store")], b"b is sick"))
        options = {
            "breaker_failures": 2,
            "breaker_statuses": [503],
            "breaker_open": 0.5,
            "control_port": 0,
        }
        async with balanced([o.url for o in origins.values()], **options) as proxy:
            control = f"http://127.0.0.1:{proxy.control_port}"
            async with await RawClient.connect(proxy.port) as conn:
                answers = [(await conn.request("GET", "/who")).body for _ in range(6)]
                assert answers.count(b"b is sick") == 2  # relayed, and counted
                assert state_of(proxy, b.url) == "open"
                assert {await who(conn) for _ in range(6)} == {"a", "c"}
                metrics = await asyncio.to_thread(_get_text, control, "/metrics")
                assert f'phantom_backend_breaker_state{{server="app",backend="{b.url}"}} 2' in (
                    metrics
                )
                await asyncio.sleep(0.5)
                assert state_of(proxy, b.url) == "half-open"
                b.route("/who", Reply(200, [("Cache-Control", "no-store")], b"b"))
                assert "b" in {await who(conn) for _ in range(3)}  # the trial
                assert state_of(proxy, b.url) == "healthy"
                assert {await who(conn) for _ in range(6)} == {"a", "b", "c"}
                listed = await asyncio.to_thread(call_get, control, "/backends")
                states = [row["state"] for row in listed["servers"]["app"]["backends"]]
                assert states == ["healthy"] * 3


def _get_text(base: str, path: str) -> str:
    with urllib.request.urlopen(base + path, timeout=5) as response:
        return str(response.read().decode())


def call_get(base: str, path: str) -> Any:
    return call(base, path, None, None)


@async_test(timeout=60)
async def test_draining_moves_new_websockets_and_lets_open_ones_finish() -> None:
    async with AsyncExitStack() as stack:
        backends = [
            await stack.enter_async_context(NamedWebSocketBackend(name)) for name in NAMES
        ]
        proxy = await stack.enter_async_context(
            create_proxy(balanced_config([b.url for b in backends], control_port=0))
        )
        url = f"ws://127.0.0.1:{proxy.port}/ws"
        sockets: list[tuple[str, ClientConnection]] = []
        for _ in range(30):
            ws = await stack.enter_async_context(connect(url))
            sockets.append((str(await ws.recv()), ws))
        on_a = [ws for name, ws in sockets if name == "a"]
        assert len(on_a) == 10
        control = f"http://127.0.0.1:{proxy.control_port}"
        drained = await asyncio.to_thread(
            call, control, "/backends/drain", {"url": backends[0].url}, None
        )
        assert drained["drained"][0]["tunnels_open"] == 10  # it says what is still open
        for _ in range(10):
            async with connect(url) as ws:
                assert await ws.recv() in ("b", "c")
        for ws in on_a:  # the ten run on, to their own end
            await ws.send("still here")
            assert await ws.recv() == "still here"
            await ws.close()
        await until(lambda: backends[0].open == 0, 5)
        listed = await asyncio.to_thread(call_get, control, "/backends")
        row = listed["servers"]["app"]["backends"][0]
        assert (row["state"], row["tunnels_open"]) == ("draining", 0)


@async_test(timeout=30)
async def test_everything_down_is_503_with_retry_after_or_the_stale_copy() -> None:
    async with three_origins() as origins:
        for origin in origins.values():
            origin.route("/page", Reply(200, [("Cache-Control", "max-age=1")], b"stored"))
        options = {"breaker_failures": 1, "breaker_open": 30, "serve_stale_on_error": 60}
        async with balanced([o.url for o in origins.values()], **options) as proxy:
            assert (await get(proxy.port, "/page")).body == b"stored"
            for origin in origins.values():
                await origin.close()
            # Each backend fails once (its breaker opens), then none is left.
            for _ in range(3):
                await get(proxy.port, "/who")
            response = await get(proxy.port, "/who")
            assert response.status == 503
            assert 28 <= int(response.get("retry-after") or 0) <= 30
            assert response.body == b"No backend is available; try again later.\n"
            await asyncio.sleep(1.1)  # /page is stale now: served as it was
            stale = await get(proxy.port, "/page")
            assert (stale.status, stale.body) == (200, b"stored")
            assert "stale-if-error" in (stale.get("cache-status") or "")


@async_test(timeout=30)
async def test_an_upgrade_goes_elsewhere_when_its_backend_refuses() -> None:
    async with AsyncExitStack() as stack:
        alive = await stack.enter_async_context(NamedWebSocketBackend("alive"))
        dead = await stack.enter_async_context(NamedWebSocketBackend("dead"))
        await dead.close()  # nothing listens on its port any more
        proxy = await stack.enter_async_context(
            create_proxy(balanced_config([dead.url, alive.url], breaker_failures=100))
        )
        for _ in range(6):  # every other one goes to the dead backend first
            async with connect(f"ws://127.0.0.1:{proxy.port}/ws") as ws:
                assert await ws.recv() == "alive"
        assert balancer_of(proxy).retry_counts["success"] == 3


@async_test()
async def test_each_backend_gets_its_base_path_and_with_preserve_host_false_its_host() -> None:
    async with three_origins() as origins:
        for name, origin in origins.items():
            origin.route(f"/{name}/who", Reply(200, [("Cache-Control", "no-store")], b"ok"))
        urls = [f"{o.url}/{name}" for name, o in origins.items()]
        async with balanced(urls, preserve_host=False) as proxy:
            async with await RawClient.connect(proxy.port) as conn:
                for _ in range(3):
                    response = await conn.request("GET", "/who?x=1")
                    assert (response.status, response.body) == (200, b"ok")
        for name, origin in origins.items():
            (request,) = origin.requests_for(f"/{name}/who")
            assert request.target == f"/{name}/who?x=1".encode()
            assert request.get("host") == f"127.0.0.1:{origin.port}"


@async_test(timeout=30)
async def test_a_reload_that_removes_a_backend_drains_it(tmp_path: Any) -> None:
    async with AsyncExitStack() as stack:
        backends = [
            await stack.enter_async_context(NamedWebSocketBackend(name)) for name in NAMES[:2]
        ]
        path = tmp_path / "phantom.toml"

        def write(urls: list[str]) -> None:
            lines = ['listen = "127.0.0.1"', "http_port = 0", "shutdown_timeout = 1"]
            lines.append("[server.app]")
            for url in urls:
                lines += ["[[server.app.backends]]", f'url = "{url}"']
            path.write_text("\n".join(lines) + "\n")

        write([b.url for b in backends])
        assert len(load_config(path).servers[0].backends) == 2
        proxy = await stack.enter_async_context(create_proxy(path))
        url = f"ws://127.0.0.1:{proxy.port}/ws"
        open_ones = []
        for _ in range(2):
            ws = await stack.enter_async_context(connect(url))
            open_ones.append((str(await ws.recv()), ws))
        write([backends[1].url])  # "a" leaves
        await proxy.reload()
        rows = balancer_of(proxy).report()
        assert [(r["url"], r["state"], r.get("removed")) for r in rows] == [
            (backends[1].url, "healthy", None),
            (backends[0].url, "draining", True),
        ]
        for _ in range(4):
            async with connect(url) as ws:
                assert await ws.recv() == "b"
        for name, ws in open_ones:  # the tunnel to "a" goes on
            await ws.send(f"to {name}")
            assert await ws.recv() == f"to {name}"
            await ws.close()
        await until(lambda: len(balancer_of(proxy).report()) == 1, 5)  # forgotten once idle
