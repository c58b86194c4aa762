"""Route matching with many routes: does a match cost the path's segments, not the routes?

    python benchmarks/route_match.py [--repeats 7] [--routes 10,100,1000,10000]

For each route count N it builds N ``bind_to`` entries (a mix: 40% prefixes ``/svcK``, 30%
patterns ``/api/vK/resK/{id}``, 20% tails ``/files/K/{path*}``, 10% exact paths ``=/page/K``,
plus ``"*"``) on N servers and times, per request path (a mix of 1 to 6 segments, hits on each
kind and misses that end at ``"*"``):

* ``trie``: ``PathTrie.matches`` up to the first match (the matcher alone);
* ``route``: ``Router.route`` with its memo off (normalising the target, matching, building the
  forwarded target): what a request pays the first time its target is seen;
* ``scan``: the baseline, in the same run: the linear scan of prefixes phantom used before
  (longest first, a segment-boundary check each), on the same N entries taken as prefixes.

Figures are medians over ``--repeats`` runs, in microseconds per match, and the ratio of the
N-route figure to the 10-route one (1.0 = flat in N). Then the worst case for the trie: a path
where a literal branch dead-ends beside a parameter at every one of its segments.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from phantom import routing
from phantom.config import config_from_dict
from phantom.patterns import PathTrie, parse_pattern
from phantom.routing import Router


def entries(count: int) -> list[str]:
    out = []
    for index in range(count):
        kind = index % 10
        if kind < 4:
            out.append(f"/svc{index}")
        elif kind < 7:
            out.append(f"/api/v{index % 7}/res{index}/{{id}}")
        elif kind < 9:
            out.append(f"/files/{index}/{{path*}}")
        else:
            out.append(f"=/page/{index}")
    return out


def paths(bound: list[str], rng: random.Random, count: int = 2000) -> list[str]:
    out = []
    for _ in range(count):
        entry = rng.choice(bound)
        if rng.random() < 0.15:  # a miss: ends at "*"
            out.append(f"/nothing/{rng.randint(0, 9)}/x")
        elif entry.startswith("="):
            out.append(entry[1:])
        elif "{id}" in entry:
            out.append(entry.replace("{id}", str(rng.randint(1, 10**6))))
        elif "{path*}" in entry:
            tail = "/".join(f"p{n}" for n in range(rng.randint(0, 3)))
            out.append(entry.replace("{path*}", tail).rstrip("/"))
        else:
            out.append(entry + "/" + "/".join(f"s{n}" for n in range(rng.randint(0, 4))))
    return out


def per_call(function: Callable[[str], object], inputs: list[str], repeats: int) -> float:
    """Median over ``repeats`` of the time per call, in microseconds."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in inputs:
            function(item)
        samples.append((time.perf_counter() - start) / len(inputs) * 1e6)
    return statistics.median(samples)


def measure(count: int, repeats: int) -> dict[str, float]:
    rng = random.Random(count)
    bound = entries(count)
    inputs = paths(bound, rng)
    trie: PathTrie[int] = PathTrie()
    for index, entry in enumerate([*bound, "*"]):
        trie.add(parse_pattern(entry), index)
    tables = {
        f"s{index}": {"proxy_url": "http://127.0.0.1:8080", "bind_to": entry}
        for index, entry in enumerate([*bound, "*"])
    }
    router = Router(config_from_dict({"server": tables}).servers)
    targets = [path.encode() for path in inputs]
    # The old matcher: prefixes longest first, each checked on a segment boundary.
    prefixes = sorted(
        (e.lstrip("=").split("/{")[0] for e in bound), key=len, reverse=True
    )

    def scan(path: str) -> str | None:
        for prefix in prefixes:
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                if not rest or rest[0] in "/?":
                    return prefix
        return None

    by_target = dict(zip(inputs, targets, strict=True))
    return {
        "trie": per_call(lambda p: next(trie.matches(p)), inputs, repeats),
        "route": per_call(lambda p: router.route(b"h", by_target[p], b"GET"), inputs, repeats),
        "scan": per_call(scan, inputs, repeats),
    }


def worst_case(depth: int, repeats: int) -> float:
    """``/a/a/.../a/x`` literal chains beside ``/{p}/.../{p}/y`` parameter chains: the path
    ``/a/.../a/y`` walks each literal branch to its end before the parameter beside it."""
    trie: PathTrie[int] = PathTrie()
    for length in range(1, depth + 1):
        trie.add(parse_pattern("/" + "/".join(["a"] * length) + "/x"), length)
        params = "/".join(f"{{p{n}}}" for n in range(length))
        trie.add(parse_pattern(f"/{params}/y"), -length)
    path = "/" + "/".join(["a"] * depth) + "/y"
    return per_call(lambda p: next(trie.matches(p)), [path] * 200, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--routes", default="10,100,1000,10000")
    args = parser.parse_args()
    routing.MEMO_MAX_BYTES = 0  # every route() decides afresh
    counts = [int(n) for n in args.routes.split(",")]
    base: dict[str, float] = {}
    print(f"{'routes':>7}  {'trie us':>8}  {'route us':>8}  {'scan us':>8}  "
          f"{'trie/10':>7}  {'route/10':>8}  {'scan/10':>7}")
    for count in counts:
        figures = measure(count, args.repeats)
        base = base or figures
        print(
            f"{count:>7}  {figures['trie']:>8.2f}  {figures['route']:>8.2f}  "
            f"{figures['scan']:>8.2f}  {figures['trie'] / base['trie']:>7.2f}  "
            f"{figures['route'] / base['route']:>8.2f}  {figures['scan'] / base['scan']:>7.2f}"
        )
    for depth in (4, 8):
        print(f"worst case, {depth} segments: {worst_case(depth, args.repeats):.2f} us")


if __name__ == "__main__":
    main()
