"""`uses: dns.wait`: wait until every server returns the new answer (a long probe with progress).

In a dry-run it does not wait: one round of queries predicts how long the real wait will take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from opskit.actions._dns_params import ServerParams
from opskit.actions.base import ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params
from opskit.durations import format_seconds
from opskit.errors import Blocked


@dataclass(frozen=True)
class DnsWait(BaseAction):
    """with: name, expect, types, timeout, interval, nameservers, resolvers, auth_port."""

    kind: ClassVar[ActionKind] = ActionKind.PROBE
    name: str
    expect: tuple[str, ...]
    types: tuple[str, ...] = ()
    timeout_s: float = 600.0
    interval_s: float = 2.0
    servers: ServerParams = field(default_factory=ServerParams)

    @classmethod
    def from_params(cls, params: Params) -> Self:
        action = cls(
            name=params.text("name"),
            expect=tuple(params.text_list("expect")),
            types=tuple(t.upper() for t in params.text_list("types", [])),
            timeout_s=params.seconds("timeout", 600.0),
            interval_s=params.seconds("interval", 2.0),
            servers=ServerParams.read(params),
        )
        params.finish()
        if not action.expect and not params.is_deferred("expect") and "{{" not in action.name:
            raise ParamError("expect", "give the address(es) every server must return")
        if action.interval_s <= 0:
            raise ParamError("interval", "must be more than 0")
        return action

    def describe(self) -> str:
        return f"wait until {self.name} returns {', '.join(self.expect)} everywhere (up to {format_seconds(self.timeout_s)})"

    def longest_wait_s(self) -> float | None:
        return self.timeout_s

    def _options(self, timeout_s: float | None = None) -> Any:
        from opskit.dns.query import QueryOptions  # noqa: PLC0415 - dnspython loads only when run
        from opskit.dns.wait import WaitOptions  # noqa: PLC0415

        return WaitOptions(
            nameservers=self.servers.choice(),
            resolvers=self.servers.resolver_servers(),
            types=self.types,
            query=QueryOptions(timeout_s=min(self.servers.query_timeout_s, 2.0), retries=1),
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            interval_s=self.interval_s,
        )

    def run(self, ctx: ActionContext) -> ActionResult:
        from opskit.dns.wait import wait  # noqa: PLC0415

        def progress(states: Any) -> None:
            flipped = sum(1 for s in states if s.flipped)
            waiting = [
                f"{s.server} {','.join(s.answers) or s.error or '-'}"
                + (f" (flips ~{s.predicted_flip:%H:%M:%S})" if s.predicted_flip else "")
                for s in states
                if not s.flipped
            ]
            ctx.progress(
                f"{flipped}/{len(states)} servers return {', '.join(self.expect)}"
                + (f"; waiting for {'; '.join(waiting)}" if waiting else ""),
                flipped / len(states) if states else None,
            )

        try:
            result = wait(
                self.name,
                self.expect,
                self._options(),
                on_round=progress,
                cancelled=ctx.cancelled,
                clock=ctx.now,
            )
        except Blocked as exc:  # discovery found no server that answers
            return ActionResult(ok=False, summary=str(exc), blocked=True)
        detail = "\n".join(
            f"{s.server} ({s.role}) {', '.join(s.answers) or s.error or '-'}"
            + (f" [{s.label}]" if s.label else "")
            for s in result.servers
        )
        if result.blocked:
            summary = f"no server answered for {self.name}"
        elif result.done:
            summary = f"every server returns {', '.join(result.expected)} after {format_seconds(result.waited_s)}"
        else:
            summary = f"timed out after {format_seconds(result.waited_s)}: not every server returns {', '.join(result.expected)}"
        if result.stale:
            detail += f"\nserved the old answer while watched: {', '.join(result.stale)}"
        if result.unflipped_types:
            summary += f" (did not flip: {', '.join(result.unflipped_types)})"
        detail += "".join(f"\n{note}" for note in result.notes)
        return ActionResult(
            ok=result.done,
            summary=summary,
            detail=detail,
            blocked=result.blocked,
            values={"done": result.done, "waited_s": result.waited_s, "stale": list(result.stale)},
        )

    def rehearse(self, ctx: ActionContext) -> ActionResult:
        from opskit.dns.wait import wait, with_predictions  # noqa: PLC0415

        now = ctx.now()
        try:
            result = wait(self.name, self.expect, self._options(0.0), clock=ctx.now, max_rounds=1)
        except Blocked as exc:
            return ActionResult(ok=False, summary=str(exc), blocked=True)
        states = with_predictions(result.servers, now)
        flips = [s.predicted_flip for s in states if not s.flipped and s.predicted_flip]
        predicted = max(0.0, *((f - now).total_seconds() for f in flips)) if flips else 0.0
        unflipped_auth = [s for s in states if not s.flipped and s.role == "authoritative"]
        # before the switch, a cache that fetches just before it keeps the old answer one full TTL
        published = max((s.ttl or 0 for s in unflipped_auth), default=0)
        if unflipped_auth:
            predicted = max(predicted, published + 1.0)
        summary = f"would wait about {format_seconds(predicted)} for every cache to return {', '.join(self.expect)}"
        if unflipped_auth:
            summary += f" after the authoritative servers switch (published TTL {published} s)"
        if predicted > self.timeout_s:
            summary += f"; longer than this step's timeout of {format_seconds(self.timeout_s)}"
        return ActionResult(
            ok=not result.blocked,
            summary=summary,
            blocked=result.blocked,
            predicted_wait_s=predicted,
        )
