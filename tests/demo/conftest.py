"""Demo pieces started on a private loop thread for each test, and stopped in finally."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from opskit.demo.loop import BackgroundLoop


@pytest.fixture
def bg_loop() -> Iterator[BackgroundLoop]:
    """A background asyncio loop; the test fails if it leaves a thread behind."""
    before = {t.ident for t in threading.enumerate()}
    loop = BackgroundLoop().start()
    try:
        yield loop
    finally:
        loop.stop()
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"
