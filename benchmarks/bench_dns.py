"""DNS readiness of 500 names, parent walk included: opskit's checker vs a `dig` loop, side by side.

Starts the loopback lab (nsd + knot serving bench.test with 500 names, a parent nsd serving test.), then:
- opskit: the `dns check` library on all 500 names (A, RD=0) with only the NS names pinned, as an
  operator would run it: zone apex, the zone's NS set, the parent's delegation asked at the parent's own
  server, SOA serials, then every name on every server. Three runs, best and all shown.
- dig: the same questions one `dig +norec` process each (the parent's delegation and the NS set once,
  then every name on both servers), all of them measured, not extrapolated (--dig-sample N to sample).
The parent must be asked once per zone, not once per name: the script counts the queries it receives.
Run: .venv/bin/python benchmarks/bench_dns.py [--names 500] [--dig-sample N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opskit.dns import discovery
from opskit.dns.check import CheckOptions, check
from opskit.dns.servers import parse_nameservers
from tests.servers.dns_lab import NS1, NS2, PARENT, dns_lab

GOAL_WALL_S = 1.0
GOAL_RATIO = 30


def _count_parent_queries() -> Counter[str]:
    """Count discovery's questions per server address (the parent walk lives in discovery)."""
    counts: Counter[str] = Counter()
    real_ask = discovery.ask

    async def counting_ask(server, query, **kw):  # type: ignore[no-untyped-def]
        counts[server.host] += 1
        return await real_ask(server, query, **kw)

    discovery.ask = counting_ask  # type: ignore[assignment]
    return counts


def _dig(port: int, server: str, name: str, rtype: str) -> None:
    subprocess.run(
        ["dig", "+norec", "+tries=1", "+time=2", f"@{server}", "-p", str(port), name, rtype],
        check=True,
        capture_output=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=500)
    parser.add_argument("--dig-sample", type=int, default=0, help="dig only N queries (0: all)")
    args = parser.parse_args()
    with dns_lab(bench_names=args.names) as lab:
        names = [f"h{i}.bench.test" for i in range(args.names)]
        port = lab.auth_port
        pins = [
            f"ns1.example.test={NS1}:{port}",
            f"ns2.example.test={NS2}:{port}",
            f"a.nic.test={PARENT}:{port}",
        ]
        options = CheckOptions(types=("A",), nameservers=parse_nameservers(pins, port))
        counts = _count_parent_queries()
        check(["h0.bench.test"], options, now=datetime.now(UTC))  # warm imports only
        parent_for_one = counts[PARENT]
        runs = []
        for _ in range(5):
            counts.clear()
            started = time.perf_counter()
            report = check(names, options, now=datetime.now(UTC))
            runs.append(time.perf_counter() - started)
            answered = sum(1 for r in report.records for ns in r.nameservers if ns.error is None)
            if answered != 2 * args.names:
                print(f"only {answered} of {2 * args.names} answers: the figures would lie")
                return 1
        parent_queries = counts[PARENT]
        best = min(runs)

        # the dig loop asks what an operator's script would: the delegation and NS set once per zone,
        # then each name on each server
        queries = [
            (PARENT, "bench.test", "NS"),
            (NS1, "bench.test", "NS"),
            (NS1, "bench.test", "SOA"),
        ]
        queries += [(NS2, "bench.test", "SOA")]
        queries += [(server, n, "A") for n in names for server in (NS1, NS2)]
        sample = queries[: args.dig_sample] if args.dig_sample else queries
        started = time.perf_counter()
        for server, name, rtype in sample:
            _dig(port, server, name, rtype)
        dig_s = (time.perf_counter() - started) * len(queries) / len(sample)

    ratio = dig_s / best
    measured = (
        "measured" if len(sample) == len(queries) else f"{len(sample)} measured, extrapolated"
    )
    print(f"opskit dns check: {args.names} names x 2 servers, parent walk included")
    print(f"  wall: best {best:.3f} s of {len(runs)} ({', '.join(f'{r:.3f}' for r in runs)})")
    print(
        f"  queries to the parent: {parent_queries} for {args.names} names, "
        f"{parent_for_one} for 1 name (per zone, not per name)"
    )
    print(
        f"dig loop: {len(queries)} queries ({measured}): {dig_s:.1f} s, "
        f"{dig_s / len(queries) * 1000:.1f} ms a query"
    )
    print(f"ratio: opskit is {ratio:.0f}x faster (goal >= {GOAL_RATIO}x, < {GOAL_WALL_S:g} s wall)")
    ok = best < GOAL_WALL_S and ratio >= GOAL_RATIO and parent_queries == parent_for_one
    print("GOAL MET" if ok else "GOAL NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
