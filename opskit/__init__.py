"""opskit: the night a service moves from one server to another.

Runbooks with a crash-safe journal, DNS readiness, a bridge proxy from the old host to the new one, and a
verdict on when the old host can be shut down. Nothing heavy is imported here: `opskit --help` stays fast.
"""

__version__ = "0.1.0"
