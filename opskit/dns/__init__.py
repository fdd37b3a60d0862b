"""DNS readiness: the TTL gate before a switch, the RFC 2136 switch, and the propagation watch after it.

Modules are imported by name (`from opskit.dns.check import check`); this package imports nothing heavy.
"""
