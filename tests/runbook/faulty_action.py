"""A test-only action whose undo trips over its own journaled data (registered by the tests that use it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from opskit.actions import ActionContext, ActionResult, BaseAction, Params


class FaultyUndo(BaseAction):
    """Succeeds, journals undo data, then fails to read it back the way a buggy action would."""

    @classmethod
    def from_params(cls, params: Params) -> Self:
        params.finish()
        return cls()

    def run(self, ctx: ActionContext) -> ActionResult:
        return ActionResult(ok=True, summary="changed", undo={"before": "x"})

    def undo(self, ctx: ActionContext, data: Mapping[str, Any]) -> ActionResult | None:
        return ActionResult(ok=True, summary=str(data["records"]))
