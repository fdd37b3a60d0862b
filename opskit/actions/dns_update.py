"""`uses: dns.update`: an RFC 2136 update with TSIG; its undo puts back the records read before it.

TSIG comes from `tsig_key_file` (BIND format) or from a runbook secret (`tsig_secret: "{{ tsig }}"` with
`tsig_name` and `tsig_algorithm`); the secret is registered with the masker before anything is logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from opskit.actions.base import ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params
from opskit.dns.servers import Server, parse_servers, split_host_port
from opskit.dns.tsigkey import wire_algorithm
from opskit.errors import OpskitError

if TYPE_CHECKING:
    from opskit.dns.update import UpdateResult


@dataclass(frozen=True)
class DnsUpdate(BaseAction):
    """with: server, zone, name, type, set, ttl, tsig_key_file | tsig_secret + tsig_name + tsig_algorithm."""

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
        from opskit.dns.update import read_rrset  # noqa: PLC0415

        self._key(ctx)  # a missing key file must fail the dry-run, not the night
        before = read_rrset(self._target(), self.name, self.type)
        new_ttl = int(self.ttl_s) if self.ttl_s is not None else (before.ttl if before else 300)
        now = f"{', '.join(before.values)} ttl {before.ttl}" if before else "nothing"
        summary = f"would change {self.name} {self.type} on {self.server} from {now} to {', '.join(self.values)} ttl {new_ttl}"
        if before is not None and new_ttl < before.ttl:
            summary += f" (lowers the TTL from {before.ttl} s: the switch is safe {before.ttl} s after this step)"
        return ActionResult(
            ok=True,
            summary=summary,
            values={
                "before": {"values": list(before.values), "ttl": before.ttl} if before else None
            },
        )

    def run(self, ctx: ActionContext) -> ActionResult:
        from opskit.dns.update import replace_rrset  # noqa: PLC0415

        key = self._key(ctx)
        ttl = int(self.ttl_s) if self.ttl_s is not None else None
        wildcard = _synthesized_from(self._target(), self.zone, self.name, self.type)
        result = replace_rrset(
            self._target(),
            self.zone,
            self.name,
            self.type,
            self.values,
            ttl_s=ttl,
            key=key,
            now=ctx.now(),
        )
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
                f"{result.name} {result.type} on {result.server} now {after}"
                + ("" if result.verified else " (NOT verified: the server does not show it)")
            ),
            values={
                "before": before,
                "after": {"values": list(result.after.values), "ttl": result.after.ttl}
                if result.after
                else None,
                # no explicit record existed: the name was covered by this wildcard (issue #12.6)
                **({"synthesized_from": wildcard} if wildcard else {}),
            },
            facts=_facts(result),
            undo={
                "server": self.server,
                "zone": result.zone,
                "name": result.name,
                "type": result.type,
                "before": before,
                **({"synthesized_from": wildcard} if wildcard else {}),
            },
        )

    def undo(self, ctx: ActionContext, data: Mapping[str, Any]) -> ActionResult | None:
        from opskit.dns.update import RRsetData, restore  # noqa: PLC0415

        raw = data.get("before")
        before = RRsetData(tuple(raw["values"]), int(raw["ttl"])) if raw else None
        server = parse_servers("server", [str(data.get("server", self.server))])[0]
        result = restore(
            server,
            str(data.get("zone", self.zone)),
            str(data.get("name", self.name)),
            str(data.get("type", self.type)),
            before,
            key=self._key(ctx),
            now=ctx.now(),
        )
        shown = f"{', '.join(before.values)} ttl {before.ttl}" if before else "nothing (deleted)"
        ok = result.verified
        wildcard = data.get("synthesized_from")
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


def _synthesized_from(server: Server, zone: str, name: str, rtype: str) -> str | None:
    """The `*.` owner when NAME TYPE has no record of its own on the server, only a wildcard's."""
    from opskit.dns.update import read_rrset  # noqa: PLC0415
    from opskit.dns.wildcard import wildcard_owner_sync  # noqa: PLC0415

    now = read_rrset(server, name, rtype)
    if now is None:
        return None
    return wildcard_owner_sync(server, name, rtype, now.values, zone=zone)


def _facts(result: UpdateResult) -> dict[str, Any]:
    """What later steps read back: a lowered TTL (for dns.check) and a switch (for traffic.drained)."""
    facts: dict[str, Any] = {}
    if result.ttl_lowered:
        facts["dns.ttl_lowered"] = result.ttl_lowered
    before_values = sorted(result.before.values) if result.before else []
    after_values = sorted(result.after.values) if result.after else []
    if before_values != after_values:
        # Caches that fetched the old answer keep it for the TTL it had before this change.
        facts["dns.switched"] = {
            "name": result.name,
            "type": result.type,
            "switched_at": result.changed_at.isoformat(),
            "old_ttl": result.before.ttl if result.before else None,
            "old_values": before_values,
            "new_values": after_values,
        }
    return facts
