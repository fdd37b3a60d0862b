"""`opskit dns ...`: the TTL gate before a switch, the switch itself, and the propagation watch after it."""

# dnspython and rich load inside each command, so `opskit --help` stays fast:
# ruff: noqa: PLC0415

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from opskit.cli import dns_render, output
from opskit.cli.options import parse_duration, parse_time_said
from opskit.errors import Blocked, ExitCode, UsageError

if TYPE_CHECKING:
    from opskit.dns.check import CheckOptions
    from opskit.dns.query import QueryOptions
    from opskit.dns.servers import Server, ServerChoice

TYPES = click.Choice(["A", "AAAA", "CNAME", "MX", "TXT", "SRV"], case_sensitive=False)


def _now() -> datetime:
    return datetime.now(UTC)


def _time(option: str, text: str | None) -> datetime | None:
    """A time option in UTC, read by the CLI's one time parser (its reading said on stderr)."""
    moment = parse_time_said(option, text)
    return moment.astimezone(UTC) if moment else None


def server_options(func: Any) -> Any:
    """--nameserver, --resolver, --auth-port, --query-timeout, --retries: shared by every dns command."""
    for option in reversed(
        [
            click.option(
                "--nameserver",
                "nameservers",
                multiple=True,
                metavar="HOST[:PORT]|NAME=ADDR:PORT",
                help="Ask this authoritative server and start the walk there: the zone's NS set and the "
                "parent's delegation are asked too (repeatable); NAME=ADDR:PORT pins an NS name.",
            ),
            click.option(
                "--resolver",
                "resolvers",
                multiple=True,
                metavar="HOST[:PORT]",
                help="Also look into this resolver's cache (repeatable).",
            ),
            click.option(
                "--auth-port",
                type=click.IntRange(1, 65535),
                help="Port of nameservers found through NS records, which carry no port "
                "(default: the port of the --nameserver servers, else 53).",
            ),
            click.option(
                "--query-timeout",
                default="2s",
                show_default=True,
                metavar="DURATION",
                help="Time per query attempt.",
            ),
            click.option(
                "--retries",
                type=click.IntRange(0, 10),
                default=2,
                show_default=True,
                help="Extra attempts after a timeout.",
            ),
            click.option(
                "-4", "ipv4", is_flag=True, help="Ask only the IPv4 addresses of nameservers."
            ),
            click.option(
                "-6", "ipv6", is_flag=True, help="Ask only the IPv6 addresses of nameservers."
            ),
        ]
    ):
        func = option(func)
    return func


def state_dir_option(func: Any) -> Any:
    """--state-dir: where the one record of DNS changes lives, as for `opskit run` (its runs too)."""
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="OPSKIT_STATE_DIR",
        default=None,
        help="Where the record of DNS changes lives (env OPSKIT_STATE_DIR; default "
        "$XDG_STATE_HOME/opskit, ~/.local/state/opskit), as for `opskit run --state-dir`.",
    )(func)


def _check_options(
    *,
    nameservers: tuple[str, ...],
    resolvers: tuple[str, ...],
    auth_port: int | None,
    query_timeout: str,
    retries: int,
    ipv4: bool = False,
    ipv6: bool = False,
    types: tuple[str, ...] = (),
    max_ttl: str = "600s",
    changes: str | None = None,
    lowered_at: str | None = None,
    previous_ttl: str | None = None,
    state_dir: Path | None = None,
) -> CheckOptions:
    from opskit.dns import history
    from opskit.dns.check import DEFAULT_TYPES, CheckOptions
    from opskit.dns.verdict import Lowering, Policy

    at = _time("--lowered-at", lowered_at)
    if at is not None and at > _now():
        raise UsageError(
            f"--lowered-at {lowered_at}: in the future (expected when the TTL was lowered)"
        )
    previous = parse_duration("--previous-ttl", previous_ttl)
    if (at is None) != (previous is None):
        raise UsageError("--lowered-at and --previous-ttl go together")
    lowering = Lowering(at, int(previous)) if at is not None and previous is not None else None
    max_ttl_s = parse_duration("--max-ttl", max_ttl) or 0.0
    auth, caches, query = _servers(
        nameservers, resolvers, auth_port, query_timeout, retries, ipv4=ipv4, ipv6=ipv6
    )
    return CheckOptions(
        types=tuple(t.upper() for t in types) or DEFAULT_TYPES,
        policy=Policy.for_max(int(max_ttl_s), changes),
        nameservers=auth,
        resolvers=caches,
        query=query,
        lowering=lowering,
        lowerings=tuple(history.lowerings(history.read(state_dir))),
    )


def _servers(
    nameservers: tuple[str, ...],
    resolvers: tuple[str, ...],
    auth_port: int | None,
    query_timeout: str,
    retries: int,
    *,
    ipv4: bool = False,
    ipv6: bool = False,
) -> tuple[ServerChoice, tuple[Server, ...], QueryOptions]:
    """The options of `server_options`: who to ask and how hard."""
    from opskit.dns.query import QueryOptions
    from opskit.dns.servers import parse_nameservers, parse_servers

    if ipv4 and ipv6:
        raise UsageError("-4 and -6: give one of them (neither asks both families)")
    return (
        parse_nameservers(nameservers, auth_port, 4 if ipv4 else 6 if ipv6 else None),
        tuple(parse_servers("--resolver", resolvers)),
        QueryOptions(
            timeout_s=parse_duration("--query-timeout", query_timeout) or 2.0, retries=retries
        ),
    )


@click.group()
def dns() -> None:
    """DNS readiness: the TTL gate before the switch, the switch, the propagation watch.

    \b
    Example:
      opskit dns check dispatch.example.net --max-ttl 10m
      opskit dns wait dispatch.example.net --expect 203.0.113.10 --resolver 1.1.1.1
    """


@dns.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=TYPES,
    help="Record type (repeatable; default A and AAAA).",
)
@click.option(
    "--max-ttl",
    default="600s",
    show_default=True,
    metavar="DURATION",
    help="Largest effective TTL allowed at switch time.",
)
@click.option(
    "--changes", metavar="NAME", help="The CNAME-chain link the switch changes (gate on its TTL)."
)
@click.option(
    "--lowered-at",
    metavar="TIME",
    help="When the TTL was lowered (ISO 8601 or HH:MM; local time unless a zone is given).",
)
@click.option("--previous-ttl", metavar="DURATION", help="The TTL before it was lowered.")
@state_dir_option
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check(names: tuple[str, ...], as_json: bool, **kw: Any) -> ExitCode:
    """Say whether NAME can be switched now: every authoritative server, every CNAME link, every cache.

    READY when every authoritative server answers, all agree (answers, TTLs, SOA serials) and the
    effective TTL is at most --max-ttl; otherwise NOT READY with each reason and its fix.
    Exit 0 ready, 1 not ready, 2 usage error, 3 no usable answer.

    \b
    Example:
      opskit dns check dispatch.example.net --max-ttl 10m
      opskit dns check www.example.test --auth-port 53531 \\
          --nameserver ns1.example.test=127.0.0.2:53531 --resolver 127.0.0.1:53535 --json
    """
    from opskit.dns.check import check as run_check
    from opskit.dns.report import public

    options = _check_options(**kw)
    report = run_check(list(names), options, now=_now())
    if as_json:
        output.emit_json(public(report))
    else:
        dns_render.check(report)
    if report.blocked:
        return ExitCode.BLOCKED
    return ExitCode.OK if report.ready else ExitCode.NEGATIVE


@dns.command()
@click.argument("name")
@click.option(
    "--switch-at",
    required=True,
    metavar="TIME",
    help="When the switch is planned (ISO 8601 or HH:MM; local time unless a zone is given).",
)
@click.option(
    "--target-ttl",
    default="300s",
    show_default=True,
    metavar="DURATION",
    help="The TTL to lower to before the switch.",
)
@click.option(
    "--type", "types", multiple=True, type=TYPES, help="Record type (default A and AAAA)."
)
@click.option("--changes", metavar="NAME", help="The CNAME-chain link the switch changes.")
@click.option(
    "--lowered-at",
    metavar="TIME",
    help="When the TTL was lowered (ISO 8601 or HH:MM; local time unless a zone is given).",
)
@click.option("--previous-ttl", metavar="DURATION", help="The TTL before it was lowered.")
@state_dir_option
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(name: str, switch_at: str, target_ttl: str, as_json: bool, **kw: Any) -> ExitCode:
    """Lay out the timeline of a planned switch: lower the TTL by, safe from, last old answer.

    The TTL to lower is the one that gates the switch (the longest CNAME link, or --changes).
    Exit 0 when the plan works (PLAN OK, possibly "if" a condition opskit cannot see), 1 when it is
    too late to lower the TTL in time, 2 for bad input (a --switch-at in the past), 3 when no server
    answered.

    \b
    Example:
      opskit dns plan dispatch.example.net --switch-at 2026-11-24T02:00:00Z --target-ttl 5m
    """
    from opskit.dns.plan import plan as make

    at = _time("--switch-at", switch_at) or _now()
    target = int(parse_duration("--target-ttl", target_ttl) or 0)
    result = make(name, _check_options(**kw), switch_at=at, target_ttl=target, now=_now())
    if as_json:
        output.emit_json(result)
    else:
        dns_render.plan(result)
    return ExitCode.OK if result.feasible else ExitCode.NEGATIVE


@dns.command()
@click.argument("name")
@click.option(
    "--expect",
    "expected",
    multiple=True,
    required=True,
    metavar="ADDR",
    help="The answer every server must return (repeatable: the exact set).",
)
@click.option(
    "--type", "types", multiple=True, type=TYPES, help="Record type (default: from the addresses)."
)
@click.option(
    "--timeout",
    default="10m",
    show_default=True,
    metavar="DURATION",
    help="Give up after this long.",
)
@click.option(
    "--interval", default="2s", show_default=True, metavar="DURATION", help="Time between rounds."
)
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the final state as JSON.")
def wait(
    *,
    name: str,
    expected: tuple[str, ...],
    types: tuple[str, ...],
    timeout: str,
    interval: str,
    as_json: bool,
    **kw: Any,
) -> ExitCode:
    """Watch NAME until every authoritative server and resolver returns exactly the --expect set.

    A live table shows each server, what it returns and when it should flip (from its remaining TTL;
    resolvers that clamp TTLs or serve stale answers get one extra stale period).
    Exit 0 when all flipped, 1 on timeout, 3 when no server answers at all.

    \b
    Example:
      opskit dns wait dispatch.example.net --expect 203.0.113.10 --resolver 127.0.0.1:5354 --timeout 15m
    """
    from opskit.dns.wait import WaitOptions
    from opskit.dns.wait import wait as run_wait

    auth, caches, query = _servers(**kw)
    options = WaitOptions(
        nameservers=auth,
        resolvers=caches,
        types=tuple(t.upper() for t in types),
        query=query,
        timeout_s=parse_duration("--timeout", timeout) or 0.0,
        interval_s=parse_duration("--interval", interval) or 1.0,
    )
    live = dns_render.Live(
        enabled=not as_json and output.is_terminal(),
        quiet=as_json,
        title=f"{name}: waiting for {', '.join(expected)}",
    )
    try:
        result = run_wait(name, expected, options, on_round=live.update, clock=_now)
    finally:
        live.stop()
    if as_json:
        output.emit_json(result)
    if result.blocked:
        why = "; ".join(f"{s.server} {s.error}" for s in result.servers)
        raise Blocked(f"no server answered for {name}: {why}")
    if not as_json:
        dns_render.wait_end(result)
    return ExitCode.OK if result.done else ExitCode.NEGATIVE


@dns.command()
@click.option(
    "--server", required=True, metavar="HOST[:PORT]", help="The primary that accepts updates."
)
@click.option("--zone", required=True, help="The zone to update.")
@click.option("--name", "record_name", required=True, help="The record's name.")
@click.option(
    "--type", "rtype", default="A", show_default=True, type=TYPES, help="The record type."
)
@click.option(
    "--set",
    "values",
    multiple=True,
    required=True,
    metavar="ADDR",
    help="The new values (repeatable: the whole RRset).",
)
@click.option("--ttl", metavar="DURATION", help="The new TTL (default: keep the current one).")
@click.option(
    "--tsig-key-file",
    type=click.Path(dir_okay=False),
    help="TSIG key (BIND format, as tsig-keygen writes).",
)
@click.option(
    "--propagation-timeout",
    default="2m",
    show_default=True,
    metavar="DURATION",
    help="How long each secondary may take to serve the change.",
)
@state_dir_option
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def update(
    *,
    server: str,
    zone: str,
    record_name: str,
    rtype: str,
    values: tuple[str, ...],
    ttl: str | None,
    tsig_key_file: str | None,
    propagation_timeout: str,
    as_json: bool,
    state_dir: Path | None,
    **kw: Any,
) -> ExitCode:
    """Switch (or lower the TTL of) a record with an RFC 2136 dynamic update, then verify it everywhere.

    The RRset is read first; the change is sent to --server, then verified on every authoritative
    server of the zone (its NS set and the parent's delegation, found as `dns check` finds them),
    each given --propagation-timeout to serve it. A lowered TTL is journaled with the previous TTL and
    the time the LAST server served it, so a later `dns check` knows when the switch is safe.
    Without --nameserver or --resolver the other servers are learnt from the primary alone (the
    parent's delegation then goes unchecked, and the output says so).
    Exit 0 when every server serves the new records, 1 when one does not (named), 3 when the
    server cannot be reached (nothing changed).

    \b
    Example:
      opskit dns update --server 127.0.0.3:53531 --zone example.test --name dispatch.example.test \\
          --type A --set 192.0.2.50 --ttl 5m --tsig-key-file lab.key
    """
    from opskit.dns import history
    from opskit.dns.servers import parse_servers
    from opskit.dns.tsigkey import load_key_file
    from opskit.dns.update import replace_rrset

    target = parse_servers("--server", [server])[0]
    key = load_key_file(tsig_key_file) if tsig_key_file else None
    ttl_s = parse_duration("--ttl", ttl)
    wait_s = parse_duration("--propagation-timeout", propagation_timeout) or 0.0
    choice, resolvers, query = _servers(**kw)
    result = replace_rrset(
        target,
        zone,
        record_name,
        rtype,
        values,
        ttl_s=int(ttl_s) if ttl_s is not None else None,
        key=key,
        now=_now(),
        nameservers=choice,
        resolvers=resolvers,
        query=query,
        propagation_timeout_s=wait_s,
    )
    facts = history.settle(
        result.facts(),
        history.read(state_dir),
        name=result.name,
        rtype=result.type,
        served_at=result.served_at,
    )
    history.record_facts(facts, state_dir)
    from opskit.dns.family import after_switch

    changed = (result.before.values if result.before else ()) != (
        result.after.values if result.after else ()
    )
    note = after_switch(target, result.name, result.type, changed=changed)
    if as_json:
        output.emit_json(result)
    else:
        dns_render.update(result, history.changes_file(state_dir), [note] if note else [])
        _propagation(result, wait_s)
        settled = facts.get(history.FACT, {})
        if "settles" in settled:
            output.line(
                f"  · every server serves it now: the lowering left pending at {settled['settles']} "
                f"counts from now, with the previous TTL {settled['previous_ttl']} s"
            )
    return ExitCode.OK if result.verified else ExitCode.NEGATIVE


def _propagation(result: Any, wait_s: float) -> None:
    """One line per authoritative server: when it served the change, or what it still serves."""
    times = [s.served_at for s in result.servers if s.served_at is not None]
    for state in result.servers:
        if state.served_at is None:
            output.line(
                f"  ✗ {state.who} still serves {state.serves} after {wait_s:g} s: make it serve "
                "the zone (NOTIFY, transfer, reload), or take it out of the NS set and the delegation"
            )
            continue
        lag = (state.served_at - min(times)).total_seconds()
        after = f", {lag:.1f} s after the first" if lag >= 0.05 else ""
        output.line(f"  ✓ {state.who} serves {state.serves}{after}")
    for note in result.notes:
        output.line(f"  · {note}")
