"""An asyncio loop in a background thread, so synchronous code (the runbook engine) can drive the demo."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """Runs coroutines on a private loop thread; `stop()` cancels what is left and joins the thread."""

    def __init__(self, name: str = "opskit-demo-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started = threading.Event()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        self._loop.run_forever()

    def start(self) -> BackgroundLoop:
        """Start the thread (returns once the loop runs)."""
        self._thread.start()
        if not self._started.wait(timeout=5):
            raise RuntimeError("the demo's event loop did not start")
        return self

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run a coroutine on the loop and wait for its result (bounded)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel every task still on the loop, close it, join the thread."""
        if not self._thread.is_alive():
            return

        async def _cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout_s / 2)
            await self._loop.shutdown_asyncgens()
            await self._loop.shutdown_default_executor()

        try:
            self.run(_cancel_all(), timeout_s=timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=timeout_s)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> BackgroundLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
