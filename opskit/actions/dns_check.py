"""`uses: dns.check`: the TTL gate before a switch (a probe: it runs in a dry-run too).

Fails the step when NOT READY; blocked (exit 3) when no server answered. With `wait_until_safe: 2h`, a
check that is NOT READY only until a known safe time (a TTL lowered less than one old TTL ago) waits for
that time, with progress, and checks again, instead of failing; a dry-run predicts that wait. A TTL lowered earlier in the
run by `dns.update` (fact `dns.ttl_lowered`) or by `opskit dns update` (state dir) gives the safe time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import ClassVar, Self

from opskit.actions._dns_params import ServerParams
from opskit.actions.base import ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params
from opskit.durations import format_seconds
from opskit.errors import Blocked


@dataclass(frozen=True)
class DnsCheck(BaseAction):
    """with: names, types, max_ttl, changes, lowered_at, previous_ttl, nameservers, resolvers, auth_port."""

    kind: ClassVar[ActionKind] = ActionKind.PROBE
    names: tuple[str, ...]
    types: tuple[str, ...] = ("A", "AAAA")
    max_ttl_s: float = 600.0
    changes: str | None = None
    lowered_at: str | None = None
    previous_ttl_s: float | None = None
    wait_until_safe_s: float = 0.0
    servers: ServerParams = field(default_factory=ServerParams)

    @classmethod
    def from_params(cls, params: Params) -> Self:
        names = params.text_list("names", None) or [params.text("name", "")]
        names = [n for n in names if n] or []
        types = [t.upper() for t in params.text_list("types", ["A", "AAAA"])]
        for t in types:
            if t not in ("A", "AAAA", "CNAME", "MX", "TXT", "SRV"):
                raise ParamError("types", f"unknown type {t!r} (A, AAAA, CNAME, MX, TXT, SRV)")
        lowered_at = params.text("lowered_at", None)
        previous = params.seconds("previous_ttl", None)
        if (lowered_at is None) != (previous is None):
            raise ParamError("lowered_at", "lowered_at and previous_ttl go together")
        if lowered_at and "{{" not in lowered_at:
            try:
                datetime.fromisoformat(lowered_at.replace("Z", "+00:00"))
            except ValueError:
                raise ParamError(
                    "lowered_at", f"expected an ISO 8601 time, got {lowered_at!r}"
                ) from None
        action = cls(
            names=tuple(names),
            types=tuple(types),
            max_ttl_s=params.seconds("max_ttl", 600.0),
            changes=params.text("changes", None),
            lowered_at=lowered_at,
            previous_ttl_s=previous,
            wait_until_safe_s=params.seconds("wait_until_safe", 0.0),
            servers=ServerParams.read(params),
        )
        params.finish()
        if not action.names:
            raise ParamError("names", "give a name (name: ...) or names (names: [...])")
        return action

    def describe(self) -> str:
        return f"check DNS readiness of {', '.join(self.names)} (max TTL {self.max_ttl_s:g} s)"

    def longest_wait_s(self) -> float | None:
        return self.wait_until_safe_s or None

    def run(self, ctx: ActionContext) -> ActionResult:
        result, wait_s = self._check(ctx)
        deadline = time.monotonic() + self.wait_until_safe_s
        while wait_s is not None and time.monotonic() + wait_s <= deadline:
            if not _sleep(ctx, wait_s, self.names):
                return result
            result, wait_s = self._check(ctx)
        return result

    def rehearse(self, ctx: ActionContext) -> ActionResult:
        result, wait_s = self._check(ctx)
        if wait_s is None or wait_s > self.wait_until_safe_s:
            return result
        return replace(result, predicted_wait_s=wait_s)

    def _check(self, ctx: ActionContext) -> tuple[ActionResult, float | None]:
        """The check once, and how long until it can turn READY by itself (None: it cannot, or it is)."""
        from opskit.dns import history  # noqa: PLC0415 - dnspython loads only when a step runs
        from opskit.dns.check import CheckOptions, check  # noqa: PLC0415
        from opskit.dns.query import QueryOptions  # noqa: PLC0415
        from opskit.dns.report import public  # noqa: PLC0415
        from opskit.dns.verdict import Lowering, Policy  # noqa: PLC0415

        lowering = None
        if self.lowered_at and self.previous_ttl_s is not None:
            at = datetime.fromisoformat(self.lowered_at.replace("Z", "+00:00"))
            lowering = Lowering(at, int(self.previous_ttl_s))
        facts = [*ctx.facts(history.FACT), *history.read(ctx.state_dir)]
        options = CheckOptions(
            types=self.types,
            policy=Policy.for_max(int(self.max_ttl_s), self.changes),
            nameservers=self.servers.choice(),
            resolvers=self.servers.resolver_servers(),
            query=QueryOptions(
                timeout_s=self.servers.query_timeout_s, retries=self.servers.retries
            ),
            lowering=lowering,
            lowerings=tuple(history.lowerings(facts)),
        )
        try:
            report = check(list(self.names), options, now=ctx.now())
        except Blocked as exc:  # no zone found: no server answered at all
            return ActionResult(ok=False, summary=str(exc), blocked=True), None
        lines = []
        for rec in report.records:
            lines += [f"{rec.name} {rec.type} ttl {rec.ttl}: {p}" for p in rec.problems]
            lines += [f"{rec.name} {rec.type}: {n}" for n in rec.notes]
        result = ActionResult(
            ok=report.ready,
            summary=report.verdict,
            detail="\n".join(lines),
            blocked=report.blocked,
            values=public(report),
        )
        wait_s = None
        if not report.ready and not report.blocked and report.safe_after is not None:
            # +1 s: TTLs count in whole seconds, and a cache may still answer at the expiry second.
            wait_s = max(0.0, (report.safe_after - ctx.now()).total_seconds()) + 1.0
        return result, (wait_s if self.wait_until_safe_s > 0 else None)


def _sleep(ctx: ActionContext, wait_s: float, names: tuple[str, ...]) -> bool:
    """Wait with progress until the safe time; False when the step was cancelled meanwhile."""
    end = time.monotonic() + wait_s
    while (left := end - time.monotonic()) > 0:
        if ctx.cancelled():
            return False
        ctx.progress(
            f"waiting {format_seconds(left)} until caches can have forgotten the old TTL of {', '.join(names)}",
            1.0 - left / wait_s if wait_s else None,
        )
        time.sleep(min(1.0, left))
    return True
