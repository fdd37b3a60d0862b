"""`opskit proxy`: the bridge that forwards the old host to the new one, and its counters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from opskit.cli.options import parse_duration, parse_time_said
from opskit.cli.output import emit_json, line, table
from opskit.durations import DurationError, parse_seconds
from opskit.errors import ExitCode, UsageError
from opskit.proxy.config import BridgeConfig, default_stats_file, nudge_start, split_host_port
from opskit.proxy.stats import BridgeStats


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_seconds(value)
    except DurationError as exc:
        raise click.BadParameter(str(exc)) from None


def _host_port(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        split_host_port(value)
    except ValueError:
        raise click.BadParameter(
            f"expected HOST:PORT (127.0.0.1:8080, [::1]:443), got {value!r}"
        ) from None
    return value.strip()


@click.group()
def proxy() -> None:
    """The bridge: forward the old host to the new one, with honest per-client counters.

    Start it on the old host after the DNS switch, watch who still arrives (`opskit traffic watch`),
    and stop it once `opskit traffic wait` says it is safe. From a runbook, `uses: proxy.start` with
    `on: HOST` starts it on the old host over SSH (the single-file forwarder, or `engine: haproxy`
    when that host has HAProxy).

    \b
    Example:
      opskit proxy start --listen 0.0.0.0:443 --to 203.0.113.20:443 --stats-file bridge.json --detach
      opskit proxy status --stats-file bridge.json
      opskit proxy restart --stats-file bridge.json
      opskit proxy stop --stats-file bridge.json
    """


@proxy.command()
@click.option(
    "--listen",
    required=True,
    callback=_host_port,
    metavar="HOST:PORT",
    help="HOST:PORT to accept clients on (the old address).",
)
@click.option(
    "--to",
    "to",
    required=True,
    callback=_host_port,
    metavar="HOST:PORT",
    help="HOST:PORT of the new host.",
)
@click.option(
    "--mode",
    type=click.Choice(["tcp", "http"]),
    default="tcp",
    show_default=True,
    help="tcp passes bytes untouched (the only mode for TLS); http counts requests, for low rates.",
)
@click.option(
    "--engine",
    type=click.Choice(["builtin", "haproxy"]),
    default="builtin",
    show_default=True,
    help="haproxy beyond ~10k req/s, 500 MiB/s or 20k connections, or to outlive the terminal.",
)
@click.option(
    "--stats-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON counters (default $OPSKIT_STATE_DIR/bridge/bridge-PORT.json).",
)
@click.option(
    "--pid-file", type=click.Path(dir_okay=False, path_type=Path), help="Write the pid here."
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Refuse clients beyond this many open connections (built-in: never beyond what the "
    "open-file limit fits, two descriptors each; the log says so and counts refused_fd_limit).",
)
@click.option(
    "--max-per-client",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Refuse one client address beyond this many open connections (0: no limit). "
    "Mind clients behind one NAT address.",
)
@click.option(
    "--handshake-timeout",
    callback=_duration,
    metavar="DURATION",
    default="30s",
    show_default=True,
    help="Cut connections that sent under 64 bytes in this long while the new host sent nothing "
    "(slowloris, scans; 0s: off). Server-first protocols (SSH, SMTP) are never cut by it.",
)
@click.option(
    "--idle-timeout",
    callback=_duration,
    metavar="DURATION",
    help="Close bridged connections idle this long (off).",
)
@click.option(
    "--connect-timeout",
    callback=_duration,
    metavar="DURATION",
    default="5s",
    show_default=True,
    help="Give up on the new host after this long; the client is closed and counted as an error.",
)
@click.option(
    "--half-close-timeout",
    callback=_duration,
    metavar="DURATION",
    default="30s",
    show_default=True,
    help="How long a half-closed connection may stay idle before it is reaped.",
)
@click.option(
    "--drain-timeout",
    callback=_duration,
    metavar="DURATION",
    default="10s",
    show_default=True,
    help="After SIGTERM/Ctrl-C, how long bridged connections may still finish.",
)
@click.option(
    "--proxy-protocol",
    type=click.Choice(["v1", "v2"]),
    help="Send a PROXY header so the new host sees the real client address (use a proxy_protocol port).",
)
@click.option(
    "--nudge-after",
    callback=_duration,
    metavar="DURATION",
    help="Once caches can have forgotten the old address (--switched-at + --old-ttl + --margin), "
    "close bridged connections idle this long, so clients reconnect and re-resolve (off).",
)
@click.option(
    "--switched-at",
    metavar="TIME",
    help="For --nudge-after: when DNS started pointing at the new host (ISO 8601 or HH:MM; "
    "local time unless a zone is given).",
)
@click.option(
    "--old-ttl",
    metavar="DURATION",
    help="For --nudge-after: the TTL the old record had at the switch.",
)
@click.option(
    "--margin",
    metavar="DURATION",
    default="0s",
    show_default=True,
    help="For --nudge-after: added after switch + TTL (an early nudge only costs a reconnect).",
)
@click.option(
    "--nudge-not-before",
    metavar="ISO-TIME",
    help="For --nudge-after: the moment to start nudging, instead of --switched-at + --old-ttl.",
)
@click.option(
    "--udp",
    is_flag=True,
    help="Built-in engine: also carry UDP on the same port (one flow per client address and port, "
    "ended after 30 s without a datagram), counted like TCP.",
)
@click.option(
    "--detach", is_flag=True, help="Run in the background; stop it with `opskit proxy stop`."
)
def start(  # noqa: PLR0917 - click passes every option as an argument
    listen: str,
    to: str,
    mode: str,
    engine: str,
    stats_file: Path | None,
    pid_file: Path | None,
    max_connections: int,
    max_per_client: int,
    handshake_timeout: float,
    idle_timeout: float | None,
    connect_timeout: float,
    half_close_timeout: float,
    drain_timeout: float,
    proxy_protocol: str | None,
    nudge_after: float | None,
    switched_at: str | None,
    old_ttl: str | None,
    margin: str,
    nudge_not_before: str | None,
    udp: bool,
    detach: bool,
) -> ExitCode:
    """Forward LISTEN to the new host until SIGTERM or Ctrl-C, counting every client.

    The built-in engine (tcp) passes bytes through untouched, so HTTPS clients see the new host's own
    certificate. It handles half-close, applies backpressure, and raises the open-file limit at start.
    On SIGTERM or Ctrl-C it stops accepting, lets bridged connections finish for --drain-timeout, writes
    the final stats file and prints the final table.

    Choose --engine haproxy beyond about 10k requests/s, 500 MiB/s or 20k connections (more than one
    Python core), or for a bridge that must outlive the terminal for days. --mode http (mitmproxy,
    about 700 requests/s per core) counts requests by method, host and path: use it only for low
    residual rates of plain HTTP.

    --nudge-after closes idle bridged connections, but only once every honest DNS cache can have
    forgotten the old address (--switched-at + --old-ttl + --margin): before that a nudged client
    would only come back here. Built-in engine and --engine haproxy.

    opskit's own probes (`opskit proxy status`, readiness checks) are not counted as clients.

    What the bridge does not carry: it forwards TCP only. UDP to the same port (DNS, SIP/RTP and
    other VoIP, QUIC/HTTP3, games) is neither forwarded nor counted, so such clients stay unseen on
    the old host, unless --udp (built-in engine) carries it too; ICMP and SCTP are never carried. A `[::]` listener is dual-stack (IPv4 clients are carried and
    shown as plain IPv4). A client or new-host reset is passed on as a reset and counted
    (aborts_client, aborts_upstream).

    \b
    Example:
      opskit proxy start --listen 0.0.0.0:443 --to 203.0.113.20:443 --stats-file bridge.json
      opskit proxy start --listen 0.0.0.0:8080 --to 203.0.113.20:8081 --proxy-protocol v2 --detach
      opskit proxy start --listen 0.0.0.0:443 --to 203.0.113.20:443 --nudge-after 10m \\
          --switched-at 2026-11-24T02:11Z --old-ttl 5m --detach
    """
    from opskit.proxy import bridge  # noqa: PLC0415 - keep `opskit --help` fast

    if nudge_after is not None and nudge_not_before is None:
        when = parse_time_said("--switched-at", switched_at)
        ttl_s = parse_duration("--old-ttl", old_ttl)
        if when is None or ttl_s is None:
            raise UsageError(
                "--nudge-after starts only once caches can have forgotten the old address: "
                "give --switched-at and --old-ttl (or --nudge-not-before TIME)"
            )
        nudge_not_before = nudge_start(when, ttl_s, parse_duration("--margin", margin) or 0.0)
    elif nudge_not_before is not None:
        moment = parse_time_said("--nudge-not-before", nudge_not_before)
        nudge_not_before = moment.isoformat() if moment else None

    config = BridgeConfig(
        listen=listen,
        to=to,
        stats_file=stats_file or default_stats_file(listen),
        mode=mode,  # type: ignore[arg-type]  # click.Choice checked it
        engine=engine,  # type: ignore[arg-type]
        pid_file=pid_file,
        max_connections=max_connections,
        max_per_client=max_per_client,
        handshake_timeout_s=handshake_timeout,
        idle_timeout_s=idle_timeout,
        connect_timeout_s=connect_timeout,
        half_close_timeout_s=half_close_timeout,
        drain_timeout_s=drain_timeout,
        proxy_protocol=proxy_protocol,  # type: ignore[arg-type]
        nudge_after_s=nudge_after,
        nudge_not_before=nudge_not_before,
        udp=udp,
    )
    if udp and (engine != "builtin" or mode != "tcp"):
        raise UsageError("--udp is carried by the built-in engine in --mode tcp only")
    if max_per_client and (engine != "builtin" or mode != "tcp"):
        raise UsageError("--max-per-client is enforced by the built-in engine in --mode tcp only")
    problem = bridge.target_problem(config)
    if problem:
        line(f"opskit: warning: {problem}; clients will be cut until it answers", err=True)
    if detach:
        pid = bridge.spawn(config)
        line(f"bridge {listen} -> {to} running in the background (pid {pid})")
        line(f"stats: {config.stats_file}")
        line(f"stop it with: opskit proxy stop --stats-file {config.stats_file}")
        return ExitCode.OK
    final = bridge.run(config)
    if final is not None:
        render(final)
        if final.ended == "sigint":
            return ExitCode.INTERRUPTED
    return ExitCode.OK


@proxy.command()
@click.option("--stats-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pid-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--timeout",
    callback=_duration,
    metavar="DURATION",
    default="30s",
    show_default=True,
    help="Wait this long for the bridge to drain and exit; then close what is left.",
)
def stop(stats_file: Path | None, pid_file: Path | None, timeout: float) -> ExitCode:
    """Stop a running bridge (SIGTERM) and print its final table.

    Exit 0 when it stopped, 1 when it did not exit in time, 3 when it was not running.

    \b
    Example:
      opskit proxy stop --stats-file bridge.json
      opskit proxy stop --pid-file /run/opskit-bridge.pid
    """
    from opskit.proxy import bridge  # noqa: PLC0415 - keep `opskit --help` fast

    if stats_file is None and pid_file is None:
        raise click.UsageError("give --stats-file or --pid-file")
    final = bridge.stop(stats_file=stats_file, pid_file=pid_file, timeout_s=timeout)
    if final is None:
        line("bridge stopped")
    else:
        render(final)
    return ExitCode.OK


@proxy.command()
@click.option("--stats-file", type=click.Path(dir_okay=False, path_type=Path), required=True)
def restart(stats_file: Path) -> ExitCode:
    """Restart a detached built-in bridge without cutting a client (hot restart, like HAProxy -sf).

    A new bridge process takes over the listening socket, so new clients are accepted throughout;
    the old process keeps its bridged connections until they end and reports them to the new one,
    so the client table and the active count stay whole. Only the new process writes the stats file.
    UDP flows (--udp) are not handed over: each UDP client's next datagram opens a new flow toward
    the new host, and the output says for how many clients.

    Exit 0 when the new bridge runs, 3 when there is no detached built-in bridge to restart.

    \b
    Example:
      opskit proxy restart --stats-file bridge.json
    """
    from opskit.proxy import bridge  # noqa: PLC0415 - keep `opskit --help` fast

    done = bridge.restart(stats_file)
    line(
        f"bridge restarted: pid {done.new_pid} accepts now; "
        f"pid {done.old_pid} drains its bridged connections"
    )
    if done.udp_flows_restarted is not None:
        n = done.udp_flows_restarted
        whose = "client's" if n == 1 else "clients'"
        line(f"UDP flows restart: {n} {whose} next datagram opens a new flow toward the new host")
    return ExitCode.OK


@proxy.command()
@click.option("--stats-file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="The stats file's content, for scripts.")
def status(stats_file: Path, as_json: bool) -> ExitCode:
    """Show a bridge's counters: connections, bytes and the clients that still arrive, newest first.

    Exit 0 when the stats file is readable, 3 when there is none (the bridge never ran here), its
    process is gone (the counters are the last it wrote), or it runs but has stopped rewriting the
    file (a full disk, a read-only directory: the reason is shown).

    \b
    Example:
      opskit proxy status --stats-file bridge.json
      opskit proxy status --stats-file bridge.json --json
    """
    from opskit.proxy import bridge  # noqa: PLC0415 - keep `opskit --help` fast

    current = bridge.status(stats_file)
    if as_json:
        emit_json(current)
    else:
        render(current)
    if bridge.is_dead(current):
        line(
            f"opskit: the bridge (pid {current.pid}) is not running any more: these counters are "
            f"from {current.updated_at}; start it again with opskit proxy start",
            err=True,
        )
        return ExitCode.BLOCKED
    return _write_health(stats_file, current)


def _write_health(stats_file: Path, current: BridgeStats) -> ExitCode:
    """Say when the bridge cannot write its stats file (marker, counters, a stale file): exit 3."""
    from opskit.proxy.stats import BridgeState, read_write_error  # noqa: PLC0415

    marker = read_write_error(stats_file)
    if current.write_errors or marker:
        line(
            f"opskit: warning: the bridge failed to write {stats_file} {current.write_errors} "
            f"times; last: {marker or current.last_write_error}",
            err=True,
        )
    age_s = (datetime.now(UTC) - current.updated).total_seconds()
    if current.status is not BridgeState.STOPPED and age_s > current.stale_after_s:
        line(
            f"opskit: cannot tell: the bridge (pid {current.pid}) runs but has not rewritten "
            f"{stats_file} for {age_s:.0f} s; these counters are old",
            err=True,
        )
        return ExitCode.BLOCKED
    return ExitCode.OK


def render(s: BridgeStats) -> None:
    """The bridge summary line and its client table, newest client first."""
    how = f" ({s.ended})" if s.ended else ""
    if s.cut:
        how += f", {s.cut} bridged connection{'s' if s.cut != 1 else ''} cut at the drain timeout"
    line(f"bridge {s.listener} -> {s.target} [{s.engine}/{s.mode}]: {s.state}{how}")
    line(
        f"active {s.active}, connections {s.total}, errors {s.errors}, bytes in {s.bytes_in}, "
        f"bytes out {s.bytes_out}, last activity {s.last_activity or 'never'}"
    )
    if not s.clients:
        line("no clients")
        return
    rows = sorted(s.clients, key=lambda c: c.last_seen, reverse=True)
    table(
        ["client", "active", "total", "bytes in", "bytes out", "errors", "first seen", "last seen"],
        [
            [
                c.address,
                c.active,
                c.total,
                c.bytes_in,
                c.bytes_out,
                c.errors,
                c.first_seen,
                c.last_seen,
            ]
            for c in rows
        ],
    )
