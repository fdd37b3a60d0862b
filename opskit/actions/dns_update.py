"""`uses: dns.update`: an RFC 2136 update with TSIG; its undo puts back the records read before it.

TSIG comes from `tsig_key_file` (BIND format) or from a runbook secret (`tsig_secret: "{{ tsig }}"` with
`tsig_name` and `tsig_algorithm`); the secret is registered with the masker before anything is logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from opskit.actions._dns_params import ServerParams
from opskit.actions.base import ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params
from opskit.dns.servers import Server, parse_servers, split_host_port
from opskit.dns.tsigkey import wire_algorithm
from opskit.errors import OpskitError

if TYPE_CHECKING:
    from opskit.dns.update import RRsetData, UpdateResult


@dataclass(frozen=True)
class DnsUpdate(BaseAction):
    """with: server, zone, name, type, set, ttl, tsig_key_file | tsig_secret + tsig_name + tsig_algorithm.

    The change is verified on every authoritative server (nameservers, auth_port, family as for
    dns.check), each given up to `propagation_timeout` (default 2m) to serve it.
    """

    kind: ClassVar[ActionKind] = ActionKind.MUTATE
    server: str
    zone: str
    name: str
    type: str
    values: tuple[str, ...]
    ttl_s: float | None = None
    tsig_key_file: str | None = None
    tsig_secret: str | None = field(default=None, repr=False)  # never in a traceback or a log line
    tsig_name: str | None = None
    tsig_algorithm: str = "hmac-sha256"
    propagation_timeout_s: float = 120.0
    servers: ServerParams = field(default_factory=ServerParams)

    @classmethod
    def from_params(cls, params: Params) -> Self:
        action = cls(
            server=params.text("server"),
            zone=params.text("zone"),
            name=params.text("name"),
            type=params.choice("type", ("A", "AAAA", "CNAME", "MX", "TXT", "SRV"), "A"),
            values=tuple(params.text_list("set")),
            ttl_s=params.seconds("ttl", None),
            tsig_key_file=params.text("tsig_key_file", None),
            tsig_secret=params.text("tsig_secret", None),
            tsig_name=params.text("tsig_name", None),
            tsig_algorithm=params.text("tsig_algorithm", "hmac-sha256"),
            propagation_timeout_s=params.seconds("propagation_timeout", 120.0),
            servers=ServerParams.read(params),
        )
        params.finish()
        if action.server and "{{" not in action.server:
            try:
                split_host_port("server", action.server, 53)
            except OpskitError as exc:
                raise ParamError("server", str(exc)) from None
        if wire_algorithm(action.tsig_algorithm) is None:
            raise ParamError(
                "tsig_algorithm",
                f"unknown TSIG algorithm {action.tsig_algorithm!r} (hmac-md5, hmac-sha1, "
                "hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512)",
            )
        if action.tsig_key_file and action.tsig_secret:
            raise ParamError("tsig_secret", "give tsig_key_file or tsig_secret, not both")
        if action.tsig_secret and not action.tsig_name:
            raise ParamError(
                "tsig_name", "tsig_secret needs tsig_name (the key's name on the server)"
            )
        return action

    def describe(self) -> str:
        ttl = f" ttl {self.ttl_s:g}" if self.ttl_s is not None else ""
        return f"set {self.name} {self.type} to {', '.join(self.values)}{ttl} on {self.server}"

    def _key(self, ctx: ActionContext) -> Any:
        from opskit.dns.tsigkey import TsigKey, load_key_file  # noqa: PLC0415

        if self.tsig_key_file:
            key = load_key_file(self.tsig_key_file)
        elif self.tsig_secret:
            key = TsigKey(self.tsig_name or "", self.tsig_algorithm, self.tsig_secret)
        else:
            return None
        ctx.masker.add(key.secret)
        return key

    def _target(self) -> Server:
        return parse_servers("server", [self.server])[0]

    def rehearse(self, ctx: ActionContext) -> ActionResult:
        """Say what would change; a change an earlier step of this rehearsal would make counts as made."""
        from opskit.dns import history  # noqa: PLC0415
        from opskit.dns.update import read_rrset  # noqa: PLC0415

        self._key(ctx)  # a missing key file must fail the dry-run, not the night
        before = _simulated(ctx, self.name, self.type)
        if before is None:
            found = read_rrset(self._target(), self.name, self.type)
            before = (found.values, found.ttl) if found else None
        new_ttl = int(self.ttl_s) if self.ttl_s is not None else (before[1] if before else 300)
        now = f"{', '.join(before[0])} ttl {before[1]}" if before else "nothing"
        summary = f"would change {self.name} {self.type} on {self.server} from {now} to {', '.join(self.values)} ttl {new_ttl}"
        if before is not None and new_ttl < before[1]:
            summary += f" (lowers the TTL from {before[1]} s: the switch is safe {before[1]} s after this step)"
        facts = history.change_facts(
            name=_absolute(self.name),
            rtype=self.type,
            zone=_absolute(self.zone),
            server=self.server,
            before=before,
            after=(tuple(self.values), new_ttl) if self.values else None,
            at=ctx.now(),
            simulated=True,
        )
        return ActionResult(
            ok=True,
            summary=summary,
            values={"before": {"values": list(before[0]), "ttl": before[1]} if before else None},
            facts=facts,
        )

    def run(self, ctx: ActionContext) -> ActionResult:
        from opskit.dns import history  # noqa: PLC0415
        from opskit.dns.update import replace_rrset  # noqa: PLC0415

        key = self._key(ctx)
        ttl = int(self.ttl_s) if self.ttl_s is not None else None
        wildcard = _synthesized_from(self._target(), self.zone, self.name, self.type)

        def journal_before(found: RRsetData | None) -> None:
            # Fsynced before the update goes out: cut off during the propagation wait, the step is
            # rolled back to these records, not to its own change that a resume would read.
            ctx.record_undo(self._undo_data(_absolute(self.zone), _absolute(self.name), self.type,
                                            found, wildcard))  # fmt: skip

        result = replace_rrset(
            self._target(),
            self.zone,
            self.name,
            self.type,
            self.values,
            ttl_s=ttl,
            key=key,
            now=ctx.now(),
            nameservers=self.servers.choice(),
            resolvers=self.servers.resolver_servers(),
            query=self.servers.query_options(),
            propagation_timeout_s=self.propagation_timeout_s,
            before_send=journal_before,
        )
        facts = history.settle(
            result.facts(),
            [*ctx.facts(history.FACT), *history.read(ctx.state_dir)],
            name=result.name,
            rtype=result.type,
            served_at=result.served_at,
        )
        # the one record of DNS changes: `dns check` and `dns plan` outside this run read it too
        history.record_facts(facts, ctx.state_dir, run=ctx.run_id, step=ctx.step_id)
        before = (
            {"values": list(result.before.values), "ttl": result.before.ttl}
            if result.before and wildcard is None  # a synthesized answer is no record to restore
            else None
        )
        after = (
            f"{', '.join(result.after.values)} ttl {result.after.ttl}"
            if result.after
            else "nothing"
        )
        from opskit.dns.family import after_switch  # noqa: PLC0415

        changed = (result.before.values if result.before else ()) != (
            result.after.values if result.after else ()
        )
        still = after_switch(self._target(), result.name, result.type, changed=changed)
        return ActionResult(
            ok=result.verified,
            detail=still or "",
            summary=(
                f"{result.name} {result.type} on {result.server} now {after}" + _propagation(result)
            ),
            values={
                "before": before,
                "after": {"values": list(result.after.values), "ttl": result.after.ttl}
                if result.after
                else None,
                # no explicit record existed: the name was covered by this wildcard (issue #12.6)
                **({"synthesized_from": wildcard} if wildcard else {}),
            },
            facts=facts,
            undo=self._undo_data(result.zone, result.name, result.type, result.before, wildcard),
        )

    def _undo_data(
        self, zone: str, name: str, rtype: str, before: RRsetData | None, wildcard: str | None
    ) -> dict[str, Any]:
        """What `undo()` needs: the records read before the change (none when a wildcard answered)."""
        return {
            "server": self.server,
            "zone": zone,
            "name": name,
            "type": rtype,
            "before": {"values": list(before.values), "ttl": before.ttl}
            if before and wildcard is None  # a synthesized answer is no record to restore
            else None,
            **({"synthesized_from": wildcard} if wildcard else {}),
        }

    def undo(self, ctx: ActionContext, data: Mapping[str, Any]) -> ActionResult | None:
        from opskit.dns.update import RRsetData, restore  # noqa: PLC0415

        raw = data.get("before")
        before = RRsetData(tuple(raw["values"]), int(raw["ttl"])) if raw else None
        server = parse_servers("server", [str(data.get("server", self.server))])[0]
        wildcard = data.get("synthesized_from")
        name, rtype = str(data.get("name", self.name)), str(data.get("type", self.type))
        if not wildcard and _serves(server, name, rtype, before):
            # The undo data is journaled before the update is sent: an update the server refused (or
            # one cut off before it went out) changed nothing, and there is nothing to put back.
            shown = f"{', '.join(before.values)} ttl {before.ttl}" if before else "nothing"
            return ActionResult(
                ok=True,
                summary=f"nothing to restore: {name} {rtype} on {server} still {shown}",
            )
        result = restore(
            server,
            str(data.get("zone", self.zone)),
            str(data.get("name", self.name)),
            str(data.get("type", self.type)),
            before,
            key=self._key(ctx),
            now=ctx.now(),
            nameservers=self.servers.choice(),
            propagation_timeout_s=self.propagation_timeout_s,
            # the name answers from its wildcard again once the record is gone: wait for that
            answers_after_delete=_wildcard_answer(
                server, str(wildcard), str(data.get("type", self.type))
            )
            if before is None and wildcard
            else None,
        )
        shown = f"{', '.join(before.values)} ttl {before.ttl}" if before else "nothing (deleted)"
        ok = result.verified
        if not ok and before is None and wildcard:
            # deleted: the name answers from its wildcard again, which is the state before the step
            owner = _synthesized_from(
                server, str(data.get("zone", self.zone)), result.name, result.type
            )
            ok = owner == wildcard
            shown = f"nothing of its own (answers from {wildcard} again)"
        return ActionResult(
            ok=ok,
            summary=f"restored {result.name} {result.type} on {result.server} to {shown}",
        )


def _serves(server: Server, name: str, rtype: str, before: RRsetData | None) -> bool:
    """Whether the primary serves exactly the records from before the step (values and TTL)."""
    from opskit.dns.update import read_rrset  # noqa: PLC0415

    now = read_rrset(server, name, rtype)
    if now is None or before is None:
        return now is None and before is None
    return sorted(now.values) == sorted(before.values) and now.ttl == before.ttl


def _wildcard_answer(server: Server, owner: str, rtype: str) -> tuple[tuple[str, ...], int] | None:
    """What the wildcard owner publishes (values, TTL): a covered name answers it after a delete."""
    from opskit.dns.update import read_rrset  # noqa: PLC0415

    data = read_rrset(server, owner, rtype)
    return (tuple(sorted(data.values)), data.ttl) if data else None


def _synthesized_from(server: Server, zone: str, name: str, rtype: str) -> str | None:
    """The `*.` owner when NAME TYPE has no record of its own on the server, only a wildcard's."""
    from opskit.dns.update import read_rrset  # noqa: PLC0415
    from opskit.dns.wildcard import wildcard_owner_sync  # noqa: PLC0415

    now = read_rrset(server, name, rtype)
    if now is None:
        return None
    return wildcard_owner_sync(server, name, rtype, now.values, zone=zone)


def _propagation(result: UpdateResult) -> str:
    """Where the change is served: every server, or which still serve what after the timeout."""
    late = [s for s in result.servers if s.served_at is None]
    if late:
        shown = "; ".join(f"{s.who} still serves {s.serves}" for s in late)
        return f" (NOT verified on every server: {shown})"
    return f", served by all {len(result.servers)} authoritative servers" if result.servers else ""


def _absolute(name: str) -> str:
    return name.lower().rstrip(".") + "."


def _simulated(ctx: ActionContext, name: str, rtype: str) -> tuple[tuple[str, ...], int] | None:
    """The RRset an earlier step of this rehearsal would have left (None: ask the server)."""
    latest: tuple[str, tuple[tuple[str, ...], int]] | None = None
    for kind, values, ttl in (
        ("dns.switched", "new_values", "new_ttl"),
        ("dns.ttl_lowered", "values", "new_ttl"),
    ):
        for fact in ctx.facts(kind):
            if not fact.get("simulated") or _absolute(str(fact.get("name"))) != _absolute(name):
                continue
            if str(fact.get("type", "")).upper() != rtype.upper() or fact.get(ttl) is None:
                continue
            at = str(fact.get("switched_at") or fact.get("lowered_at"))
            state = (tuple(fact.get(values) or ()), int(fact[ttl]))
            if latest is None or at >= latest[0]:
                latest = (at, state)
    return latest[1] if latest else None
