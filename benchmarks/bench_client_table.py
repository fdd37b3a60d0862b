"""The built-in bridge with a huge number of distinct client addresses (issue #9: 200,000 clients).

wrk through the bridge before, during and after N distinct source addresses (127.x.y.z, each one short
connection) pass through it; then the stats file's size and how long `opskit traffic wait --json` takes
to answer. The issue measured, before the table was bounded: a 35 MB file, 1-3.5 s forwarding stalls at
every rewrite (~30k -> ~5k req/s, p99 0.8 s) and 18.8 s for `traffic wait --json`.

    .venv/bin/python benchmarks/bench_client_table.py --clients 200000 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_proxy import process, wrk  # noqa: E402

from opskit.proxy.bridge import FORWARDER_PATH  # noqa: E402
from tests.servers.common import free_port  # noqa: E402
from tests.servers.nginx import start_nginx  # noqa: E402


def address(n: int) -> str:
    """The n-th distinct loopback source address: 127.1.0.1, 127.1.0.2, ... (never 127.0.0.x)."""
    n += 1
    return f"127.{1 + (n >> 16) % 254}.{(n >> 8) & 255}.{n & 255 or 1}"


def fill(port: int, clients: int, distinct: int, stop: threading.Event, done: list[int]) -> None:
    """`clients` short connections from `distinct` addresses (bounded by count and `stop`)."""
    for n in range(clients):
        if stop.is_set():
            break
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            try:
                s.bind((address(n % distinct), 0))
                s.connect(("127.0.0.1", port))
                s.sendall(b"x")  # one byte, so the row has traffic (no probe, no empty connect)
            except OSError:
                continue
        done[0] += 1


def bench_client_table(
    clients: int, seconds: float, *, distinct: int = 0, extra: str = "", fill_timeout: float = 600.0
) -> dict[str, object]:
    """wrk through the built-in bridge before, during and after `clients` connections from distinct
    addresses; the stats file's size and rows, the bridge's worst sweep and loop lag, and how long
    `opskit traffic wait --json` takes to answer."""
    results: dict[str, object] = {}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-table-")))
        nginx = stack.enter_context(start_nginx(work / "nginx"))
        port, stats_file = free_port(), work / "bridge.json"
        argv = [sys.executable, str(FORWARDER_PATH), "--listen", f"127.0.0.1:{port}"]
        argv += ["--to", nginx.http, "--stats-file", str(stats_file), "--quiet"]
        argv += extra.split()
        stack.enter_context(process(argv, port))

        results["before"] = wrk(port, "/1k.txt", 50, 2, seconds)
        stop, done = threading.Event(), [0]
        filler = threading.Thread(
            target=fill, args=(port, clients, distinct or clients, stop, done), daemon=True
        )
        started = time.monotonic()
        filler.start()
        during = []
        while filler.is_alive() and time.monotonic() - started < fill_timeout:
            during.append(wrk(port, "/1k.txt", 50, 2, seconds))
            print(f"  {done[0]} clients so far: {during[-1]['rps']:.0f} req/s, "
                  f"p99 {during[-1]['p99_ms']:.1f} ms", flush=True)  # fmt: skip
        stop.set()
        filler.join(timeout=30)
        results["fill_s"] = round(time.monotonic() - started, 1)
        results["clients_sent"] = done[0]
        results["during_rps_min"] = min((r["rps"] for r in during), default=None)
        results["during_p99_max_ms"] = max((r["p99_ms"] for r in during), default=None)
        time.sleep(2.0)
        results["after"] = wrk(port, "/1k.txt", 50, 2, seconds)
        results["stats_file_bytes"] = stats_file.stat().st_size
        data = json.loads(stats_file.read_text())
        results["rows"] = len(data["clients"])
        results["clients_other"] = data.get("clients_other")
        results["sweep_max_ms"] = data.get(
            "sweep_max_ms"
        )  # the bookkeeping on the event loop (CPU)
        results["loop_lag_max_ms"] = data.get("loop_lag_max_ms")  # the loop's worst late wake-up
        opskit = [
            str(REPO / ".venv/bin/opskit"),
            "traffic",
            "wait",
            "--stats-file",
            str(stats_file),
        ]
        t0 = time.monotonic()
        subprocess.run([*opskit, "--timeout", "0s", "--json"], capture_output=True, check=False)
        results["traffic_wait_json_s"] = round(time.monotonic() - t0, 3)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fill-timeout", type=float, default=600.0)
    parser.add_argument(
        "--distinct",
        type=int,
        default=0,
        help="addresses to spread the connections over (default: one each); a control run with "
        "--distinct 100 shows what the connection churn alone costs",
    )
    parser.add_argument("--extra", default="", help="more forwarder arguments, space-separated")
    args = parser.parse_args()
    results = bench_client_table(
        args.clients,
        args.seconds,
        distinct=args.distinct,
        extra=args.extra,
        fill_timeout=args.fill_timeout,
    )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
