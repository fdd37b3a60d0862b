"""`uses: tcp.check`: does host:port accept TCP connections (a probe: it runs in a dry-run too).

With `on: HOST` the connection is made from that host (bash /dev/tcp over its transport), so a
firewall between the new server and the database shows up before the cutover, not during it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Self

from opskit.actions.base import ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params
from opskit.net import tcp


@dataclass(frozen=True)
class TcpCheck(BaseAction):
    """with: host, port, timeout (default 3s)."""

    kind: ClassVar[ActionKind] = ActionKind.PROBE
    host: str
    port: int
    timeout_s: float = 3.0

    @classmethod
    def from_params(cls, params: Params) -> Self:
        port = params.integer("port")
        # 0 is what Params returns while the port is a template only the run fills in.
        if not 0 <= port <= 65535:
            raise ParamError("port", f"expected a port number 1-65535, got {port}")
        action = cls(host=params.text("host"), port=port, timeout_s=params.seconds("timeout", 3.0))
        params.finish()
        if action.host and not params.is_deferred("host") and not tcp.is_host_name(action.host):
            raise ParamError("host", f"expected a host name or an address, got {action.host!r}")
        return action

    def describe(self) -> str:
        return f"check that {self.host}:{self.port} accepts TCP connections"

    def probe(self, ctx: ActionContext) -> tcp.TcpResult:
        """The connection attempt, from the step's host when it has one."""
        if ctx.host is None:
            return tcp.tcp_accepts(self.host, self.port, self.timeout_s)
        command = tcp.remote_command(self.host, self.port, self.timeout_s)
        res = ctx.transport().run(command, timeout_s=self.timeout_s + 10)
        return tcp.from_remote(self.host, self.port, self.timeout_s, res)

    def run(self, ctx: ActionContext) -> ActionResult:
        result = self.probe(ctx)
        origin = "" if ctx.host is None else f" (from {ctx.host})"
        return ActionResult(
            ok=result.accepts, summary=result.describe() + origin, values=asdict(result)
        )
