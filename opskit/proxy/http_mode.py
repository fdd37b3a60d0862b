"""HTTP mode: plain HTTP through mitmproxy embedded in this process, counted per client and per request.

For low residual rates only: mitmproxy costs about 1.5 ms of CPU per request (~700 req/s per core,
proxy-anchors.md section 6); TCP mode counts connections and bytes at 40x the rate. Fixed settings,
each guarding a measured default: `keep_host_header` (mitmproxy would rewrite Host to the target and
break name-based virtual hosts), streamed bodies (it would buffer whole bodies: +504 MiB for 20 slow
readers of 10 MiB), an X-Forwarded-For we append ourselves (it adds none), a TCP idle timeout that
follows --idle-timeout instead of the hard-coded 600 s, and no CancelledError noise at shutdown.
mitmproxy is imported inside `run` (0.5 s), never at module level.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from opskit import aio
from opskit.errors import Blocked
from opskit.proxy.config import BridgeConfig
from opskit.proxy.detach import child_main, spawn_module
from opskit.proxy.stats import BridgeStats, load
from opskit.proxy.tally import HEARTBEAT_S, Tally, iso

STREAM_LARGE_BODIES = "256k"
NO_IDLE_TIMEOUT_S = 7 * 86400  # "off": a residual client may stay connected for days
MAX_REQUEST_KEYS = 10_000  # distinct "METHOD host path" keys kept; the rest are folded together
OTHER_REQUESTS = "(other)"


def plain_ip(peer: Any) -> str:
    """The client's address without port, and without the ::ffff: prefix of a dual-stack socket."""
    host = str(peer[0]) if isinstance(peer, tuple | list) and peer else str(peer)
    return host.removeprefix("::ffff:")


class Counter:
    """The mitmproxy addon: per-client connections and bytes, per-request counts, X-Forwarded-For."""

    def __init__(self, tally: Tally, *, on_ready: Any = None) -> None:
        self.tally = tally
        self.on_ready = on_ready

    def running(self) -> None:
        if self.on_ready is not None:
            self.on_ready()

    def client_connected(self, client: Any) -> None:
        now = time.time()
        with self.tally.lock:
            row = self.tally.client(plain_ip(client.peername), now)
            row.active += 1
            row.total += 1
            self.tally.active += 1
            self.tally.total += 1
            self.tally.touch(row, now)

    def client_disconnected(self, client: Any) -> None:
        now = time.time()
        with self.tally.lock:
            row = self.tally.client(plain_ip(client.peername), now)
            row.active = max(0, row.active - 1)
            self.tally.active = max(0, self.tally.active - 1)
            self.tally.touch(row, now)

    def _bytes(self, address: str, *, into: int = 0, out: int = 0) -> None:
        now = time.time()
        with self.tally.lock:
            row = self.tally.client(address, now)
            row.bytes_in += into
            row.bytes_out += out
            self.tally.bytes_in += into
            self.tally.bytes_out += out
            self.tally.touch(row, now)

    def requestheaders(self, flow: Any) -> None:
        address = plain_ip(flow.client_conn.peername)
        # The new host should trust only the rightmost entry: the one this bridge appends.
        previous = flow.request.headers.get("X-Forwarded-For")
        flow.request.headers["X-Forwarded-For"] = f"{previous}, {address}" if previous else address
        request = flow.request
        key = f"{request.method} {request.host_header or request.pretty_host} {request.path.split('?', 1)[0]}"
        with self.tally.lock:
            if key not in self.tally.requests and len(self.tally.requests) >= MAX_REQUEST_KEYS:
                key = OTHER_REQUESTS
            self.tally.requests[key] = self.tally.requests.get(key, 0) + 1
        self._bytes(address, into=_head_size(request))
        flow.request.stream = self._streamer(address, inbound=True)

    def responseheaders(self, flow: Any) -> None:
        address = plain_ip(flow.client_conn.peername)
        self._bytes(address, out=_head_size(flow.response))
        flow.response.stream = self._streamer(address, inbound=False)

    def error(self, flow: Any) -> None:
        """The new host refused, timed out or broke the connection: a per-client error."""
        now = time.time()
        with self.tally.lock:
            row = self.tally.client(plain_ip(flow.client_conn.peername), now)
            row.errors += 1
            self.tally.errors += 1
            self.tally.touch(row, now)

    def _streamer(self, address: str, *, inbound: bool) -> Any:
        # Streaming every body (not only large ones) means nothing is buffered whole, and each chunk is
        # counted as it passes.
        def count(chunk: bytes) -> bytes:
            if chunk:
                self._bytes(
                    address, into=len(chunk) if inbound else 0, out=0 if inbound else len(chunk)
                )
            return chunk

        return count


def _head_size(message: Any) -> int:
    """The size of a request or response head as sent on the wire (HTTP/1)."""
    size = len(message.http_version) + 4  # version, spaces, CRLF of the first line, approximately
    size += len(getattr(message, "method", "")) + len(getattr(message, "path", ""))
    size += len(getattr(message, "reason", "")) + (3 if hasattr(message, "status_code") else 0)
    for name, value in message.headers.fields:
        size += len(name) + len(value) + 4
    return size + 2


class _QuietShutdown(logging.Filter):
    """Drop the CancelledError tracebacks mitmproxy logs for live connections at shutdown."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        return not (info and info[0] is not None and issubclass(info[0], asyncio.CancelledError))


def _master(config: BridgeConfig) -> Any:
    """A DumpMaster in reverse mode with the settings the module docstring explains."""
    from mitmproxy import options  # noqa: PLC0415 - 0.5 s import, only when HTTP mode runs
    from mitmproxy.proxy import server as mitm_server  # noqa: PLC0415
    from mitmproxy.tools.dump import DumpMaster  # noqa: PLC0415

    mitm_server.TCP_TIMEOUT = round(config.idle_timeout_s or NO_IDLE_TIMEOUT_S)
    host, port = config.listen_host_port
    thost, tport = config.to_host_port
    target = f"[{thost}]:{tport}" if ":" in thost else f"{thost}:{tport}"
    opts: Any = options.Options(
        mode=[f"reverse:http://{target}"], listen_host=host, listen_port=port
    )
    master = DumpMaster(opts, with_termlog=False, with_dumper=False)
    opts.update(
        keep_host_header=True, stream_large_bodies=STREAM_LARGE_BODIES, connection_strategy="lazy"
    )
    return master


def _saver(config: BridgeConfig, tally: Tally) -> Callable[[dict[str, Any]], None]:
    """Write the stats file; a failure is counted in it and said once in the log, never fatal."""
    failing: list[str] = []

    def save(header: dict[str, Any]) -> None:
        _, error = tally.save(config.stats_file, **header)
        if error and not failing:
            message = f"opskit: cannot write the stats file, still forwarding: {error}"
            print(message, file=sys.stderr)  # noqa: T201 - the bridge's log
        failing[:] = [error] if error else []

    return save


async def _serve(config: BridgeConfig, tally: Tally) -> str:
    master = _master(config)
    loop = asyncio.get_running_loop()
    started_at = time.time()
    ready = asyncio.Event()
    reason: list[str] = []

    def header(state: str, ended: str | None = None) -> dict[str, Any]:
        return {
            "listener": config.listen,
            "target": config.to,
            "engine": "http",
            "mode": "http",
            "started_at": iso(started_at),
            "pid": os.getpid(),
            "state": state,
            "ended": ended,
        }

    async def drain_then_stop() -> None:
        # Stop accepting first; in-flight requests get up to --drain-timeout; a second signal stops
        # at once.
        proxyserver = master.addons.get("proxyserver")
        if proxyserver is not None:
            await proxyserver.servers.update([])
        await loop.run_in_executor(None, save, header("stopping", reason[0]))
        deadline = time.monotonic() + config.drain_timeout_s
        while tally.active > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - set by mitmproxy hooks
            await asyncio.sleep(0.05)
        master.shutdown()

    def stop(why: str) -> None:
        if reason:
            master.shutdown()
            return
        reason.append(why)
        aio.spawn(drain_then_stop(), name="opskit-http-drain")

    save = _saver(config, tally)
    master.addons.add(Counter(tally, on_ready=ready.set))
    for sig, why in ((signal.SIGTERM, "sigterm"), (signal.SIGINT, "sigint")):
        loop.add_signal_handler(sig, stop, why)

    async def writer() -> None:
        await ready.wait()
        last = 0.0
        while True:
            if tally.dirty or time.monotonic() - last >= HEARTBEAT_S:
                state = header("stopping", reason[0]) if reason else header("running")
                await loop.run_in_executor(None, save, state)
                last = time.monotonic()
            await asyncio.sleep(max(0.05, config.stats_interval_s))

    task = aio.spawn(writer(), name="opskit-http-stats")
    try:
        await master.run()
    except SystemExit:  # mitmproxy's errorcheck exits when startup logged an error (port in use)
        check = master.addons.get("errorcheck")
        words = "; ".join(r.getMessage() for r in check.logger.has_errored) if check else ""
        raise Blocked(
            f"HTTP bridge on {config.listen} did not start: {words or 'see the log'}"
        ) from None
    finally:
        task.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if not ready.is_set():
        raise Blocked(f"HTTP bridge on {config.listen} did not start (is the port in use?)")
    ended = reason[0] if reason else "error: mitmproxy stopped"
    tally.end_watch(time.time())
    save(header("stopped", ended))
    return ended


def run(config: BridgeConfig) -> BridgeStats:
    """Run the HTTP bridge in the foreground until SIGTERM or Ctrl-C; the final stats."""
    tally = Tally(carries=("tcp",))
    tally.restore(config.stats_file)
    tally.begin_watch(os.getpid(), "http", time.time())
    quiet = _QuietShutdown()
    for name in ("mitmproxy", "asyncio"):
        logging.getLogger(name).addFilter(quiet)
    if config.pid_file:
        config.pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        config.pid_file.write_text(f"{os.getpid()}\n")
    try:
        asyncio.run(_serve(config, tally))
    finally:
        for name in ("mitmproxy", "asyncio"):
            logging.getLogger(name).removeFilter(quiet)
        if config.pid_file:
            config.pid_file.unlink(missing_ok=True)
    return load(config.stats_file)


def spawn(config: BridgeConfig, *, python: str = sys.executable) -> int:
    """Start the HTTP bridge detached (its own session); its pid once it runs."""
    return spawn_module("opskit.proxy.http_mode", config, python=python)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], run))
