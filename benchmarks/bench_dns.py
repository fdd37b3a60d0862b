"""DNS readiness of 500 names against two authoritative servers: opskit's checker vs a `dig` loop.

Starts the loopback lab (nsd + knot serving bench.test with 500 names), runs `opskit dns check` logic on
all 500 names (A, both servers, RD=0, plus SOA serials), then a `dig +norec` loop doing the same queries
on a sample and extrapolates. Run: .venv/bin/python benchmarks/bench_dns.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opskit.dns.check import CheckOptions, check
from opskit.dns.servers import parse_nameservers
from tests.servers.dns_lab import NS1, NS2, dns_lab

NAMES = 500
DIG_SAMPLE = 100  # queries; the loop is extrapolated to the full 2 x NAMES


def main() -> None:
    with dns_lab(bench_names=NAMES) as lab:
        names = [f"h{i}.bench.test" for i in range(NAMES)]
        servers = [f"{NS1}:{lab.auth_port}", f"{NS2}:{lab.auth_port}"]
        options = CheckOptions(types=("A",), nameservers=parse_nameservers(servers))
        check(names[:5], options, now=datetime.now(UTC))  # warm imports, not the servers' caches
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            report = check(names, options, now=datetime.now(UTC))
            runs.append(time.perf_counter() - started)
            answered = sum(1 for r in report.records for ns in r.nameservers if ns.error is None)
            if answered != 2 * NAMES:
                raise SystemExit(f"only {answered} of {2 * NAMES} answers: the figures would lie")
        best = min(runs)
        queries = 2 * NAMES
        started = time.perf_counter()
        for i in range(DIG_SAMPLE):
            addr = (NS1, NS2)[i % 2]
            subprocess.run(
                [
                    "dig",
                    "+norec",
                    "+tries=1",
                    "+time=2",
                    f"@{addr}",
                    "-p",
                    str(lab.auth_port),
                    names[i // 2],
                    "A",
                ],
                check=True,
                capture_output=True,
            )
        per_query = (time.perf_counter() - started) / DIG_SAMPLE
        dig_total = per_query * queries
        print(
            f"opskit dns check: {NAMES} names x 2 servers = {queries} record queries (+ SOA serials)"
        )
        print(
            f"  wall: best {best:.3f} s of {len(runs)} runs ({', '.join(f'{r:.3f}' for r in runs)})"
        )
        print(f"dig loop: {DIG_SAMPLE} queries measured, {per_query * 1000:.1f} ms/query,")
        print(f"  extrapolated to {queries} queries: {dig_total:.1f} s")
        print(f"ratio: opskit is {dig_total / best:.0f}x faster (goal >= 20x, < 2 s wall)")


if __name__ == "__main__":
    main()
