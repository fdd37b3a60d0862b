"""The rehearsal's scaled time: a night of hours played in seconds, and said so on screen."""

from __future__ import annotations

import math
from dataclasses import dataclass

from opskit.durations import format_seconds


@dataclass(frozen=True)
class TimeScale:
    """`real_s_per_demo_s` seconds of a real night pass in one second of the rehearsal."""

    real_s_per_demo_s: float = 3600.0

    def demo_s(self, real_s: float) -> float:
        """Rehearsal seconds for a real duration (24 h -> 24 s at the default scale)."""
        return real_s / self.real_s_per_demo_s

    def ttl(self, real_s: float) -> int:
        """A DNS TTL for a real one: whole seconds, at least 1 (a TTL of 0 would disable caching)."""
        return max(1, math.ceil(self.demo_s(real_s)))

    def duration(self, real_s: float) -> str:
        """A runbook duration for a real one ("30m" of a night -> "500ms" here), at least 100 ms."""
        return f"{max(100, round(self.demo_s(real_s) * 1000))}ms"

    def real_s(self, demo_s: float) -> float:
        """The real-night duration a rehearsal duration stands for."""
        return demo_s * self.real_s_per_demo_s

    def banner(self) -> str:
        """The sentence shown on screen before anything runs."""
        return (
            f"Time is scaled: 1 s here = {format_seconds(self.real_s_per_demo_s)} on a real night "
            f"(a TTL of 24h is {format_seconds(self.demo_s(86400))} here)."
        )

    def both(self, demo_s: float) -> str:
        """A rehearsal duration with its real-night meaning: "24s (= 24h on a real night)"."""
        return f"{format_seconds(demo_s)} (= {format_seconds(self.real_s(demo_s))} on a real night)"
