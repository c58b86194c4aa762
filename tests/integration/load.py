"""Mixed client load for the resource test and benchmarks/soak.py: cache hits and misses, POSTs,
upgrade tunnels opening and closing, and clients that vanish at random points.

The proxy's backend is an `UpgradeBackend` (echo mode): it tunnels upgrades and answers every
other request `200 plain`, with no freshness of its own, which phantom caches when
`cache_heuristic = "always"` (for cache_ttl), so `/hit` is a cache hit after its first request
and `/miss?N` (a new N each time) always goes to the backend.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from itertools import count as counter

from conftest import ClosedBeforeResponse, RawClient, build_request

KINDS = ("hit", "miss", "post", "tunnel")
ABORT_POINTS = ("head", "body", "response")
POST_BODY = bytes(range(256)) * 40
_misses = counter()


async def one_client(port: int, kind: str, abort: str | None) -> str:
    """One connection of `kind`; with `abort`, vanish (RST) at that point. Returns the
    outcome: "ok", "aborted", or "error: ..." for anything a correct proxy would not do."""
    client = await RawClient.connect(port)
    try:
        if kind == "tunnel":
            head = build_request("GET", "/tunnel", [("Connection", "Upgrade"), ("Upgrade", "x")])
        elif kind == "post":
            head = build_request("POST", "/post", body=POST_BODY)
        elif kind == "miss":
            head = build_request("GET", f"/miss?{next(_misses)}")
        else:
            head = build_request("GET", "/hit")
        if abort == "head":
            await client.send(head[: len(head) // 2])
            client.vanish()
            return "aborted"
        if abort == "body":
            await client.send(head[: len(head) - len(POST_BODY) // 2 if kind == "post" else -1])
            client.vanish()
            return "aborted"
        await client.send(head)
        if abort == "response":
            await client.read_exactly(12)
            client.vanish()
            return "aborted"
        response = await client.read_response()
        if kind == "tunnel":
            if response.status != 101:
                return f"error: tunnel got {response.status}"
            await client.send(b"ping" * 64)
            if await client.read_exactly(256) != b"ping" * 64:
                return "error: tunnel echo differs"
        elif (response.status, response.body) != (200, b"plain\n"):
            return f"error: {kind} got {response.status} {response.body[:50]!r}"
        return "ok"
    except (ClosedBeforeResponse, ConnectionError, asyncio.IncompleteReadError) as exc:
        return f"error: {kind}: {exc!r}"
    finally:
        await client.close()


async def run_mixed(
    port: int, count: int, *, concurrency: int = 20, abort_ratio: float = 0.5, seed: int = 0
) -> Counter[str]:
    """`count` connections of random kinds, `abort_ratio` of them vanishing at random points."""
    rng = random.Random(seed)
    plan = [
        (rng.choice(KINDS), rng.choice(ABORT_POINTS) if rng.random() < abort_ratio else None)
        for _ in range(count)
    ]
    outcomes: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)

    async def bounded(kind: str, abort: str | None) -> None:
        async with gate:
            outcome = await one_client(port, kind, abort)
            outcomes[outcome if outcome.startswith("error") else f"{kind}:{outcome}"] += 1

    await asyncio.gather(*(bounded(kind, abort) for kind, abort in plan))
    return outcomes
