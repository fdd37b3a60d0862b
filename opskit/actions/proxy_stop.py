"""`uses: proxy.stop`: stop a bridge (here, or on the step's host) and report its final counters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from opskit.actions.base import ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params
from opskit.errors import Blocked, OpskitError


def _final(stats: Any, where: str) -> ActionResult:
    if stats is None:
        return ActionResult(ok=True, summary=f"bridge stopped{where}")
    return ActionResult(
        ok=True,
        summary=(
            f"bridge {stats.listener} -> {stats.target} stopped{where} ({stats.ended or stats.state}): "
            f"{stats.total} connections from {len(stats.clients)} clients, {stats.active} cut"
        ),
        values={
            "total": stats.total,
            "clients": len(stats.clients),
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "ended": stats.ended,
        },
    )


def stop_bridge(
    ctx: ActionContext,
    *,
    host: str | None,
    stats_file: str,
    pid_file: str | None = None,
    pid: int | None = None,
    timeout_s: float = 30.0,
    haproxy_socket: str | None = None,
) -> ActionResult:
    """Stop the bridge whose files these are; a bridge that is already gone is not a failure.

    `haproxy_socket` marks HAProxy started on a host by proxy.start: it is soft-stopped (SIGUSR1)
    and its last live reading is the final report.
    """
    try:
        if host is None:
            from opskit.proxy import bridge  # noqa: PLC0415

            try:
                stats = bridge.stop(
                    stats_file=Path(stats_file),
                    pid_file=Path(pid_file) if pid_file and Path(pid_file).exists() else None,
                    timeout_s=timeout_s,
                )
            except Blocked as exc:
                return ActionResult(ok=True, summary=f"nothing to stop: {exc}")
            return _final(stats, "")
        from opskit.proxy import remote  # noqa: PLC0415

        if haproxy_socket is not None and pid_file is not None:
            transport = ctx.transport(host)
            try:
                last = remote.read_haproxy(transport, haproxy_socket)
                last = dataclasses.replace(last, state="stopped", ended="soft stop (SIGUSR1)")
            except Blocked:
                last = None
            if not remote.stop_haproxy(transport, pid_file=pid_file, pid=pid, timeout_s=timeout_s):
                return ActionResult(ok=True, summary=f"nothing to stop: haproxy on {host} is gone")
            return _final(last, f" on {host}")
        stats = remote.stop(
            ctx.transport(host),
            stats_file=stats_file,
            pid_file=pid_file,
            pid=pid,
            timeout_s=timeout_s,
        )
        return _final(stats, f" on {host}")
    except OpskitError as exc:
        return ActionResult(ok=False, summary=str(exc))


@dataclass(frozen=True)
class ProxyStop(BaseAction):
    """with: stats_file, pid_file, timeout, haproxy_socket (HAProxy on a host: with pid_file)."""

    kind: ClassVar[ActionKind] = ActionKind.MUTATE
    stats_file: str
    pid_file: str | None = None
    timeout_s: float = 30.0
    haproxy_socket: str | None = None

    @classmethod
    def from_params(cls, params: Params) -> Self:
        action = cls(
            stats_file=params.text("stats_file"),
            pid_file=params.text("pid_file", None),
            timeout_s=params.seconds("timeout", 30.0),
            haproxy_socket=params.text("haproxy_socket", None),
        )
        params.finish()
        if action.haproxy_socket is not None and action.pid_file is None:
            raise ParamError("pid_file", "is needed with haproxy_socket (HAProxy's own pid file)")
        return action

    def describe(self) -> str:
        return f"stop the bridge of {self.stats_file}"

    def run(self, ctx: ActionContext) -> ActionResult:
        return stop_bridge(
            ctx,
            host=ctx.host,
            stats_file=self.stats_file,
            pid_file=self.pid_file,
            timeout_s=self.timeout_s,
            haproxy_socket=self.haproxy_socket,
        )

    def rehearse(self, ctx: ActionContext) -> ActionResult:
        from opskit.traffic.source import FileSource, RemoteFileSource  # noqa: PLC0415

        source = (
            FileSource(Path(self.stats_file))
            if ctx.host is None
            else RemoteFileSource(ctx.transport(), self.stats_file)
        )
        try:
            stats = source.read()
        except OpskitError as exc:
            return ActionResult(ok=True, summary=f"would stop the bridge; now: {exc}")
        return ActionResult(
            ok=True,
            summary=(
                f"would stop the bridge {stats.listener} -> {stats.target}: "
                f"{stats.active} active connections would be cut"
            ),
        )
