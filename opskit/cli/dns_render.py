"""How `opskit dns ...` results look to a person: tables, one verdict line, reasons with their fixes."""

# rich loads only when a live table is drawn on a terminal:
# ruff: noqa: PLC0415

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opskit.cli import output

if TYPE_CHECKING:
    from opskit.dns.plan import SwitchPlan
    from opskit.dns.report import CheckReport, ResolverAnswer
    from opskit.dns.update import UpdateResult
    from opskit.dns.wait import ServerState, WaitResult


def _now() -> datetime:
    return datetime.now(UTC)


def check(report: CheckReport) -> None:
    for rec in report.records:
        ttl = f"{rec.ttl} s" if rec.ttl is not None else "unknown (no usable answer)"
        title = f"{rec.name.rstrip('.')} {rec.type}: effective TTL {ttl}"
        output.line(title)
        for link in rec.chain:
            data = ", ".join(link.answers) if link.answers else link.rcode
            source = f" (synthesized from {link.wildcard})" if link.wildcard else ""
            output.line(f"  {link.name} {link.ttl} {link.type} {data}{source}")
        output.table(
            ["nameserver", "answers", "ttl", "serial", "error"],
            [
                [ns.server, ", ".join(ns.answers) or "-", ns.ttl, ns.serial, ns.error or ""]
                for ns in rec.nameservers
            ],
        )
        if rec.resolvers:
            output.table(
                ["resolver", "answers", "ttl left", "note", "error"],
                [
                    [
                        r.server,
                        ", ".join(r.answers)
                        or ("-" if r.error or r.cached else "not cached")
                        + (f" ({r.rcode})" if r.rcode and r.rcode != "NOERROR" else ""),
                        r.ttl_remaining,
                        _resolver_note(r),
                        r.error or "",
                    ]
                    for r in rec.resolvers
                ],
            )
        for problem in rec.problems:
            output.line(f"  ✗ {problem}")
        for note in rec.notes:
            output.line(f"  · {note}")
        output.line()
    output.line(report.verdict)


def _resolver_note(r: ResolverAnswer) -> str:
    """The resolver's label in a few words for the table; the notes below it say the rest."""
    words = []
    if r.label:
        words.append("clamps TTLs or serves stale")
    if r.primed:
        words.append("cache view unknown")
    return "; ".join(words)


def plan(result: SwitchPlan) -> None:
    """The timeline as a table, then PLAN OK / PLAN OK if ... / PLAN NOT FEASIBLE."""
    output.line(
        f"{result.name.rstrip('.')} {result.type}: TTL {result.current_ttl} s now, target {result.target_ttl} s"
    )
    output.table(
        ["when (UTC)", "what"],
        [[f"{s.at:%Y-%m-%d %H:%M:%S}" if s.at else "-", s.what] for s in result.steps],
    )
    for problem in result.problems:
        output.line(f"✗ {problem}")
    if not result.feasible:
        output.line("PLAN NOT FEASIBLE")
    elif result.caveats:
        output.line(f"PLAN OK if {'; and '.join(result.caveats)}")
    else:
        output.line("PLAN OK")


def update(result: UpdateResult, journal: Path, notes: Sequence[str] = ()) -> None:
    """Before -> after, the journaled lowering, what else still points at the old host, VERIFIED."""
    before = (
        f"{', '.join(result.before.values)} ttl {result.before.ttl}" if result.before else "nothing"
    )
    after = (
        f"{', '.join(result.after.values)} ttl {result.after.ttl}" if result.after else "nothing"
    )
    output.line(f"{result.name.rstrip('.')} {result.type} on {result.server}: {before} -> {after}")
    if result.ttl_lowered and result.ttl_lowered.get("pending") and result.before:
        output.line(
            f"TTL lowered from {result.before.ttl} s, but not every authoritative server serves it: "
            f"the switch is safe {result.before.ttl} s after the last one does (recorded in {journal})"
        )
    elif result.ttl_lowered and result.before:
        from opskit.dns.timefmt import when

        lowered = datetime.fromisoformat(str(result.ttl_lowered["lowered_at"]))
        safe = lowered + timedelta(seconds=result.before.ttl)
        output.line(
            f"TTL lowered from {result.before.ttl} s: the switch is safe from {when(safe, _now())} "
            f"if every authoritative server serves the new TTL now (`opskit dns check` tells; "
            f"recorded in {journal})"
        )
    for note in notes:
        output.line(f"! {note}")
    output.line(
        "VERIFIED"
        if result.verified
        else "NOT VERIFIED: not every authoritative server shows the new records"
    )


def wait_end(result: WaitResult) -> None:
    if result.stale:
        output.line(f"served the old answer after the switch: {', '.join(result.stale)}")
    expected = ", ".join(result.expected)
    for note in result.notes:
        output.line(f"! {note}")
    if result.done:
        output.line(f"FLIPPED: every server returns {expected} ({result.waited_s:.1f} s)")
        return
    if result.unflipped_types:
        output.line(f"  did not flip: {', '.join(result.unflipped_types)}")
    for s in result.servers:
        if not s.flipped:
            what = ", ".join(s.answers) or s.error or "nothing"
            output.line(f"  {s.server} ({s.role}) still returns {what}")
    if any(s.role == "authoritative" and not s.flipped for s in result.servers):
        output.line(
            f"  the authoritative servers do not all serve {expected} yet: make the switch "
            "(opskit dns update), or check --expect"
        )
    output.line(f"TIMED OUT after {result.waited_s:.1f} s: not every server returns {expected}")


def _flip(s: ServerState) -> str:
    from opskit.dns.timefmt import ceil_second

    if s.flipped:
        return "yes"
    if s.predicted_flip is not None:
        return f"~{ceil_second(s.predicted_flip):%H:%M:%S} UTC"
    return "not switched yet" if s.role == "authoritative" and not s.error else "no"


def _rows(states: Sequence[ServerState]) -> list[list[str]]:
    return [
        [
            s.server,
            s.role,
            ", ".join(s.answers) or (s.error or "-"),
            "" if s.ttl is None else str(s.ttl),
            _flip(s),
            s.label or "",
        ]
        for s in states
    ]


HEADERS = ["server", "role", "returns", "ttl", "flipped / predicted", "note"]


PLAIN_REPEAT_ROUNDS = 10


class Live:
    """A rich Live table on a terminal; plain aligned lines otherwise (a log, a pipe, CI).

    Plain lines show a server when what it returns, its flip state or its label changed, and every
    server every PLAIN_REPEAT_ROUNDS rounds: a ten-minute wait stays readable in a log.
    """

    def __init__(self, *, enabled: bool, quiet: bool, title: str = "") -> None:
        self.enabled, self.quiet, self.title = enabled, quiet, title
        self._live: Any = None
        self._round = 0
        self._shown: dict[str, tuple[str, ...]] = {}

    def _plain(self, rows: list[list[str]]) -> None:
        stamp = f"{_now():%H:%M:%S}"
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))] if rows else []
        every = self._round % PLAIN_REPEAT_ROUNDS == 1
        for row in rows:
            # the ttl counts down every round: a change worth a line is anything else
            key = (row[2], row[4] if row[4] in ("yes", "no", "not switched yet") else "~", row[5])
            if not every and self._shown.get(row[0] + row[1]) == key:
                continue
            self._shown[row[0] + row[1]] = key
            cells = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            output.line(f"{stamp}  {cells}".rstrip())

    def update(self, states: Any) -> None:
        self._round += 1
        if self.quiet:
            return
        rows = _rows(states)
        if not self.enabled:
            self._plain(rows)
            return
        from rich.live import Live
        from rich.table import Table

        table = Table(title=f"{self.title} (round {self._round}, {_now():%H:%M:%S} UTC)")
        for h in HEADERS:
            # addresses and answers are what the operator reads: never cut them
            table.add_column(h, no_wrap=h in ("server", "returns"))
        for row in rows:
            table.add_row(*row)
        if self._live is None:
            self._live = Live(table, refresh_per_second=4)
            self._live.start()
        else:
            self._live.update(table)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
