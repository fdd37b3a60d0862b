"""`uses: http.check`: does a URL answer with the expected status (a probe: it runs in a dry-run too).

With `on: HOST` the request is made from that host with curl over its transport; the URL and
headers reach curl on stdin (`curl -K -`), so a token in them never shows in `ps` there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Self

from opskit.actions.base import ActionContext, ActionKind, ActionResult, BaseAction
from opskit.actions.params import ParamError, Params
from opskit.net import httpcheck


@dataclass(frozen=True)
class HttpCheck(BaseAction):
    """with: url, expect_status (default 200), contains, timeout (default 5s), headers."""

    kind: ClassVar[ActionKind] = ActionKind.PROBE
    url: str
    expect_status: int = 200
    contains: str | None = None
    timeout_s: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Params) -> Self:
        url = params.text("url")
        if url:  # empty while the URL still depends on a value a real run captures
            try:
                httpcheck.parse_url(url)
            except httpcheck.BadUrl as exc:
                raise ParamError("url", str(exc)) from None
        expect = params.integer("expect_status", 200)
        if not 100 <= expect <= 599:
            raise ParamError("expect_status", f"expected an HTTP status 100-599, got {expect}")
        headers = params.mapping("headers", {})
        for name, value in headers.items():
            if any(ord(c) < 0x20 for c in f"{name}{value}"):
                raise ParamError("headers", f"control characters in header {name!r}")
        action = cls(
            url=url,
            expect_status=expect,
            contains=params.text("contains", None),
            timeout_s=params.seconds("timeout", 5.0),
            headers={str(k): str(v) for k, v in headers.items()},
        )
        params.finish()
        return action

    def describe(self) -> str:
        return f"check that {self.url} answers {self.expect_status}"

    def probe(self, ctx: ActionContext) -> httpcheck.HttpResult:
        """The request, from the step's host when it has one."""
        if ctx.host is None:
            return httpcheck.http_check(
                self.url, self.expect_status, self.timeout_s, self.contains, self.headers
            )
        config = httpcheck.curl_config(
            self.url, self.timeout_s, self.contains is not None, self.headers
        )
        res = ctx.transport().run(
            httpcheck.REMOTE_COMMAND, stdin=config, timeout_s=self.timeout_s + 10
        )
        return httpcheck.from_curl(self.url, self.expect_status, self.contains, res)

    def run(self, ctx: ActionContext) -> ActionResult:
        result = self.probe(ctx)
        origin = "" if ctx.host is None else f" (from {ctx.host})"
        return ActionResult(ok=result.ok, summary=result.describe() + origin, values=asdict(result))
