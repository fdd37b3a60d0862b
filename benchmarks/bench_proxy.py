"""The bridge side by side: wrk against nginx directly, through the built-in engine, socat and HAProxy.

HTTP mode (mitmproxy embedded) is measured too, to report its rate honestly: it is far slower by design.

Interleaved rounds (the order rotates every round), medians. Everything on 127.0.0.1; every run has a
fixed length; every process is started and stopped by pid. Goals (issue #5, "Speed and memory"):
1 KiB at c=50 >= 0.5x direct and >= 0.9x HAProxy, <= 30 us CPU per request, 10 MiB >= 0.5x direct,
< 100 us added at c=1, <= 10 KiB per idle bridged connection, 1000 simultaneous connects < 1 s.

    .venv/bin/python benchmarks/bench_proxy.py --rounds 3 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opskit.proxy.bridge import FORWARDER_PATH  # noqa: E402
from tests.servers.common import free_port, wait_tcp  # noqa: E402
from tests.servers.nginx import Nginx, start_nginx  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """One way to reach nginx: its port and the pid whose CPU and memory we measure (None: direct)."""

    name: str
    port: int
    pid: int | None


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_s(pid: int) -> float:
    """utime+stime of a process and its children, live or reaped (socat forks one per connection)."""
    fields = _stat(pid)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                child = _stat(int(entry))
            except OSError:
                continue
            if child[1] == str(pid):
                total += int(child[11]) + int(child[12])
    return total / CLK_TCK


def pss_kib(pid: int) -> int:
    """Proportional set size of a process in KiB."""
    for row in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if row.startswith("Pss:"):
            return int(row.split()[1])
    raise RuntimeError("no Pss")


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    port: int, path: str, conns: int, threads: int, seconds: float, *, close: bool = False
) -> dict[str, float]:
    """One fixed-length wrk run: requests, req/s, MiB/s, p50/p99 ms, errors.

    close=True sends `Connection: close`: one request per connection, so req/s is new connections/s.
    """
    header = ["-H", "Connection: close"] if close else []
    out = subprocess.run(
        [
            "wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "30s",
            *header, f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    result["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    size, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()  # type: ignore[union-attr]
    # wrk's MB/GB are 2^20 / 2^30 bytes
    result["mib_s"] = float(size) * {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[unit]
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{pct}_ms"] = float(value) * _UNITS_MS[unit]
    errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = 1.0 if errors else 0.0
    return result


def measured_run(
    target: Target, path: str, conns: int, threads: int, seconds: float, *, close: bool = False
) -> dict[str, float]:
    before = cpu_s(target.pid) if target.pid else 0.0
    result = wrk(target.port, path, conns, threads, seconds, close=close)
    if target.pid:
        cpu = cpu_s(target.pid) - before
        result["cpu_us_per_req"] = cpu / max(result["requests"], 1) * 1e6
        result["cpu_cores"] = cpu / seconds
    return result


def idle_memory(target: Target, count: int = 2000) -> float:
    """KiB of Pss the proxy spends per idle bridged connection (count idle connections)."""
    if target.pid is None:
        raise ValueError("direct has no proxy process to measure")
    socks: list[socket.socket] = []
    before = pss_kib(target.pid)
    try:
        for _ in range(count):
            socks.append(socket.create_connection(("127.0.0.1", target.port), timeout=10))
        time.sleep(1.0)  # let the proxy finish its connects upstream
        after = pss_kib(target.pid)
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    return (after - before) / count


def simultaneous_connects(target: Target, count: int = 1000) -> float:
    """Seconds until `count` clients that connect at once all have their 1 KiB answer."""
    sel = selectors.DefaultSelector()
    request = b"GET /1k.txt HTTP/1.0\r\nHost: x\r\n\r\n"
    started = time.monotonic()
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", target.port))
        sel.register(s, selectors.EVENT_WRITE)
        socks.append(s)
    pending, done = count, 0
    deadline = started + 30
    while done < count and time.monotonic() < deadline:
        for key, events in sel.select(timeout=1):
            s = key.fileobj
            if not isinstance(s, socket.socket):
                continue
            if events & selectors.EVENT_WRITE:
                try:
                    s.send(request)
                except OSError:
                    continue
                sel.modify(s, selectors.EVENT_READ)
            else:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(s)
                    s.close()
                    done += 1
    elapsed = time.monotonic() - started
    for s in socks:
        s.close()
    sel.close()
    if done < count:
        print(f"  {target.name}: only {done}/{count} answered", file=sys.stderr)
    del pending
    return elapsed


@contextmanager
def process(argv: list[str], port: int) -> Iterator[int]:
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_tcp("127.0.0.1", port)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def haproxy_cfg(port: int, upstream: int) -> str:
    return f"""global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 127.0.0.1:{upstream}
"""


def start_targets(stack: ExitStack, nginx: Nginx, workdir: Path, names: list[str]) -> list[Target]:
    targets = [Target("direct", nginx.http_port, None)]
    for name in names:
        port = free_port()
        if name in ("builtin", "builtin-stdlib"):
            argv = [
                sys.executable, str(FORWARDER_PATH), "--listen", f"127.0.0.1:{port}", "--to", nginx.http,
                "--stats-file", str(workdir / f"{name}.json"), "--quiet",
            ]  # fmt: skip
            if name == "builtin-stdlib":
                argv.append("--no-uvloop")
        elif name == "socat":
            argv = [
                "socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=4096",
                f"TCP:127.0.0.1:{nginx.http_port}",
            ]  # fmt: skip
        elif name == "http":
            # HTTP mode: mitmproxy embedded in opskit, for per-request counts at low residual rates.
            argv = [
                sys.executable, "-m", "opskit", "proxy", "start", "--listen", f"127.0.0.1:{port}",
                "--to", nginx.http, "--mode", "http", "--stats-file", str(workdir / "http.json"),
            ]  # fmt: skip
        elif name == "haproxy":
            cfg = workdir / "haproxy.cfg"
            cfg.write_text(haproxy_cfg(port, nginx.http_port))
            argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-f", str(cfg), "-db"]
        else:
            raise SystemExit(f"unknown target {name}")
        targets.append(Target(name, port, stack.enter_context(process(argv, port))))
    return targets


PHASES = ("small", "conn", "single", "bulk", "extras")


def run_phase(t: Target, phase: str, seconds: float) -> dict[str, float]:
    """One measured wrk run of a phase against one target."""
    if phase == "small":
        return measured_run(t, "/1k.txt", 50, 2, seconds)
    if phase == "conn":
        return measured_run(t, "/1k.txt", 50, 2, seconds, close=True)
    if phase == "single":
        return measured_run(t, "/1k.txt", 1, 1, max(2.0, round(seconds / 2)))
    return measured_run(t, "/10m.bin", 4, 1, seconds)


def progress(row: dict[str, object]) -> str:
    """One line per run, for watching a long benchmark."""
    parts = []
    for phase, label, key, scale, unit in (
        ("small", "1k c50", "rps", 1.0, "req/s"),
        ("conn", "new conns c50", "rps", 1.0, "conn/s"),
        ("single", "c1 p50", "p50_ms", 1000.0, "us"),
        ("bulk", "10m", "mib_s", 1.0, "MiB/s"),
    ):
        if phase in row:
            value = row[phase][key] * scale  # type: ignore[index]
            parts.append(f"{label} {value:9.0f} {unit}")
    return "  ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--targets", default="builtin,socat,haproxy,http")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="small (1 KiB keep-alive c=50), conn (one request per connection c=50), single (c=1), "
        "bulk (10 MiB c=4), extras (idle memory, 1000 connects)",
    )
    parser.add_argument("--out", type=Path, help="write every run as JSON lines here")
    args = parser.parse_args()
    phases = args.phases.split(",")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        nginx = stack.enter_context(start_nginx(workdir))
        with open(nginx.prefix / "www" / "10m.bin", "wb") as f:
            f.write(os.urandom(10 * 2**20))
        targets = start_targets(stack, nginx, workdir, args.targets.split(","))
        for t in targets:  # warm up
            wrk(t.port, "/1k.txt", 10, 1, 1)
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
            if rnd % 2:
                order.reverse()
            for t in order:
                row: dict[str, object] = {"round": rnd, "target": t.name}
                for phase in phases:
                    row[phase] = run_phase(t, phase, args.seconds)
                runs.append(row)
                print(f"round {rnd} {t.name:15} {progress(row)}", flush=True)
        extras: dict[str, dict[str, float]] = {}
        for t in targets if "extras" in phases else []:
            extras[t.name] = {"connect_1000_s": simultaneous_connects(t)}
            if t.pid and t.name != "socat":
                extras[t.name]["idle_kib_per_conn"] = idle_memory(t)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in runs))
    report(runs, extras)
    return 0


def median(runs: list[dict[str, object]], target: str, phase: str, key: str) -> float | None:
    values = [
        r[phase][key]  # type: ignore[index]
        for r in runs
        if r["target"] == target and key in r.get(phase, {})  # type: ignore[attr-defined, operator]
    ]
    return statistics.median(values) if values else None  # type: ignore[type-var]


def report(runs: list[dict[str, object]], extras: dict[str, dict[str, float]]) -> None:
    names = list(dict.fromkeys(str(r["target"]) for r in runs))

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    def num(value: float | None, fmt: str = ",.0f", scale: float = 1.0) -> str:
        return "-" if value is None else format(value * scale, fmt)

    d_rps = median(runs, "direct", "small", "rps")
    h_rps = median(runs, "haproxy", "small", "rps")
    d_conn = median(runs, "direct", "conn", "rps")
    h_conn = median(runs, "haproxy", "conn", "rps")
    d_mib = median(runs, "direct", "bulk", "mib_s")
    h_mib = median(runs, "haproxy", "bulk", "mib_s")
    d_p50 = median(runs, "direct", "single", "p50_ms")
    lines = [
        "",
        "| target | 1 KiB c=50 req/s | vs direct | vs HAProxy | CPU us/req "
        "| new conn/s c=50 | vs direct | vs HAProxy | CPU us/conn | c=1 p50 us | added us "
        "| 10 MiB MiB/s | vs direct | vs HAProxy | idle KiB/conn | 1000 connects s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        rps = median(runs, name, "small", "rps")
        conn = median(runs, name, "conn", "rps")
        mib = median(runs, name, "bulk", "mib_s")
        p50 = median(runs, name, "single", "p50_ms")
        cpu = median(runs, name, "small", "cpu_us_per_req")
        cpu_conn = median(runs, name, "conn", "cpu_us_per_req")
        idle = extras.get(name, {}).get("idle_kib_per_conn")
        conn_s = extras.get(name, {}).get("connect_1000_s")
        added = f"{(p50 - d_p50) * 1000:+.0f}" if p50 is not None and d_p50 is not None else "-"
        lines.append(
            f"| {name} | {num(rps)} | {ratio(rps, d_rps)} | {ratio(rps, h_rps)} | {num(cpu, '.1f')} "
            f"| {num(conn)} | {ratio(conn, d_conn)} | {ratio(conn, h_conn)} | {num(cpu_conn, '.1f')} "
            f"| {num(p50, '.0f', 1000)} | {added} "
            f"| {num(mib)} | {ratio(mib, d_mib)} | {ratio(mib, h_mib)} "
            f"| {num(idle, '.1f')} | {num(conn_s, '.3f')} |"
        )
    # Round by round, the built-in engine against HAProxy measured right next to it
    for phase in ("small", "conn"):
        for name in names:
            if name in ("direct", "haproxy"):
                continue
            per_round = []
            for mine in (r for r in runs if r["target"] == name and phase in r):
                peer = [
                    r for r in runs
                    if r["target"] == "haproxy" and r["round"] == mine["round"] and phase in r
                ]  # fmt: skip
                if peer:
                    a, b = mine[phase]["rps"], peer[0][phase]["rps"]  # type: ignore[index]
                    per_round.append(f"{a / b:.2f}")
            if per_round:
                lines.append(f"{phase}: {name} / haproxy by round: {' / '.join(per_round)}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
