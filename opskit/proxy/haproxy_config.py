"""haproxy.cfg for one bridge, and how many connections HAProxy can hold with this fd limit.

Used by the local engine (opskit/proxy/haproxy.py) and by the HAProxy started on an old host over SSH
(opskit/proxy/remote.py).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import resource
from collections.abc import Sequence
from pathlib import Path

from opskit.errors import Blocked
from opskit.proxy.config import BridgeConfig
from opskit.proxy.haproxy_stats import LOG_FORMAT

FD_RESERVE = 200  # fds HAProxy needs besides two per bridged connection (listeners, logs, socket)
RESOLVE_EVERY = "2s"  # `hold valid`: HAProxy asks DNS again this long after a good answer
LONG_TIMEOUT = "24h"  # "off" for a bridge: HAProxy warns about missing timeouts, so a very long one


def fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (HAProxy inherits it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def fitting_maxconn(wanted: int, nofile: int) -> int:
    """The largest maxconn HAProxy can honour with `nofile` descriptors, at most `wanted`.

    Two per bridged connection, plus splice pipes (maxpipes = maxconn / 4, two fds each): HAProxy
    refuses to start when it cannot raise its limit to 2.5 x maxconn + a few (measured: maxconn 9000
    asks for 22528 fds, "Cannot raise FD limit to 22528, limit is 20000").
    """
    return max(1, min(wanted, (nofile - FD_RESERVE) * 2 // 5))


DEFAULT_MAX_CONNECTIONS = next(
    f.default for f in dataclasses.fields(BridgeConfig) if f.name == "max_connections"
)


def honoured_maxconn(asked: int, nofile: int) -> tuple[int, str | None]:
    """(maxconn, a note when it is lower than asked); Blocked for an explicit ask that does not fit.

    Never lowered silently (issue #9): an explicit --max-connections HAProxy cannot hold is refused with
    the number that fits; the default is lowered to fit and the bridge says so.
    """
    fits = fitting_maxconn(asked, nofile)
    if fits >= asked:
        return asked, None
    why = f"HAProxy can hold {fits} connections with this fd limit ({nofile}, ulimit -Hn)"
    if asked != DEFAULT_MAX_CONNECTIONS:
        raise Blocked(
            f"--max-connections {asked}: {why}; give --max-connections {fits} or raise the limit"
        )
    return fits, f"--max-connections lowered from the default {asked} to {fits}: {why}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return LONG_TIMEOUT
    return f"{max(1, round(seconds * 1000))}ms"


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolvers(nameservers: Sequence[str] | None) -> str:
    """A `resolvers` section: the system's resolv.conf, or the given nameservers (HOST:PORT, [V6]:PORT)."""
    if nameservers is None:
        servers = "    parse-resolv-conf\n"
    else:
        servers = "".join(f"    nameserver ns{i} {ns}\n" for i, ns in enumerate(nameservers, 1))
    # Re-resolve as the built-in engine does, so a changed record reaches new connections within
    # seconds. When DNS fails (no answer, refused, NXDOMAIN) keep the last address for a long time:
    # HAProxy would otherwise put the only server in maintenance and cut the residual clients.
    return f"""resolvers system
{servers}    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid {RESOLVE_EVERY}
    hold nx {LONG_TIMEOUT}
    hold timeout {LONG_TIMEOUT}
    hold refused {LONG_TIMEOUT}
    hold other {LONG_TIMEOUT}

"""


def render_config(
    config: BridgeConfig,
    *,
    socket_path: Path | str,
    maxconn: int,
    logs: bool = True,
    nameservers: Sequence[str] | None = None,
) -> str:
    """haproxy.cfg for one bridge: TCP passthrough, half-close bounds, stats socket, log to stdout.

    `logs=False` for a daemonised HAProxy on an old host: nobody reads its stdout there. A host name
    as target is re-resolved through `nameservers` (default: the resolv.conf of the host HAProxy runs
    on), keeping the last address when DNS does not answer.
    """
    lhost, lport = config.listen_host_port
    thost, tport = config.to_host_port
    listen, target = _addr(lhost, lport), _addr(thost, tport)
    # A socket proxy.start already holds (the old service's, or bound the moment it let go).
    bind = listen if config.listen_fd is None else f"fd@{config.listen_fd}"
    # HAProxy forbids brackets in proxy names, so IPv6 names go without them.
    fe_name, be_name = f"opskit-{lhost}:{lport}", f"to-{thost}:{tport}"
    resolvers = "" if _is_ip(thost) else _resolvers(nameservers)
    resolve = "" if _is_ip(thost) else " resolvers system init-addr last,libc,none"
    idle = _duration(config.idle_timeout_s)
    fin = _duration(config.half_close_timeout_s)
    send_proxy = {"v1": " send-proxy", "v2": " send-proxy-v2", None: ""}[config.proxy_protocol]
    log_global = "    log stdout format raw daemon\n" if logs else ""
    log_defaults = f'    log global\n    log-format "{LOG_FORMAT}"\n' if logs else ""
    # Proxy names carry the addresses, so a bare `show stat` says which bridge it is.
    # noreuseport: a second HAProxy must fail to bind beside an orphan instead of sharing its clients.
    return f"""# Written by opskit for the bridge {listen} -> {target}; regenerated on every start.
global
{log_global}    stats socket {socket_path} mode 600 level admin
    maxconn {maxconn}
    hard-stop-after {_duration(config.drain_timeout_s)}
    noreuseport

{resolvers}defaults
    mode tcp
{log_defaults}    option splice-auto
    timeout connect {_duration(config.connect_timeout_s)}
    timeout client {idle}
    timeout server {idle}
    timeout tunnel {idle}
    timeout client-fin {fin}
    timeout server-fin {fin}

frontend {fe_name}
    bind {bind}
    maxconn {maxconn}
    default_backend {be_name}

backend {be_name}
    server new {target}{send_proxy}{resolve}
"""
