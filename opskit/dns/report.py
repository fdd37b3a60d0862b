"""What `dns check` found, as frozen dataclasses whose public fields are the issue's JSON keys.

Some objects carry more than the contract (labels, notes, the chain each server gave); `public()` keeps
exactly the keys the issue names, so `--json` stays the documented shape while the human view says more.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar


@dataclass(frozen=True)
class Dnssec:
    """The signature over one RRset and the key TTL: validators cache no longer than these allow."""

    rrsig_ttl: int
    original_ttl: int
    rrsig_expires: datetime
    dnskey_ttl: int | None = None


@dataclass(frozen=True)
class ZoneKeys:
    """A signed zone's keys, the DS its parent publishes, and the signature over its DNSKEY RRset."""

    zone: str
    dnskeys: tuple[str, ...]  # "tag 10155 (KSK)"
    ds: tuple[str, ...] | None  # the DS records at the parent; None when the parent was not reached
    ds_matching: tuple[str, ...]  # those that match one of the DNSKEYs
    dnskey_signature: Dnssec | None = None
    parent_error: str | None = None


@dataclass(frozen=True)
class Link:
    """One step of a CNAME chain as an authoritative server publishes it (rcode NXDOMAIN/NODATA: negative)."""

    name: str
    type: str
    ttl: int | None
    answers: tuple[str, ...]
    rcode: str = "NOERROR"
    dnssec: Dnssec | None = None
    wildcard: str | None = None  # "*.wild.example.net." when the answer is synthesized from it

    @property
    def negative(self) -> bool:
        return self.rcode in ("NXDOMAIN", "NODATA")


@dataclass(frozen=True)
class NameserverAnswer:
    """What one authoritative address publishes for the record, and its zone's SOA serial."""

    PUBLIC: ClassVar[tuple[str, ...]] = ("server", "answers", "ttl", "serial", "error")
    server: str
    answers: tuple[str, ...]
    ttl: int | None
    serial: int | None
    error: str | None
    chain: tuple[Link, ...] = ()
    used_tcp: bool = False


@dataclass(frozen=True)
class ResolverAnswer:
    """What one resolver holds now and for how long it may keep serving it."""

    PUBLIC: ClassVar[tuple[str, ...]] = ("server", "answers", "ttl_remaining", "error")
    server: str
    answers: tuple[str, ...]
    ttl_remaining: int | None
    error: str | None
    cached: bool = True
    primed: bool = False  # the probe had to recurse, so it may have filled the cache it inspects
    primed_why: str | None = None
    serves_until: datetime | None = None
    label: str | None = None  # "clamps TTLs" / "serves stale answers"
    rcode: str | None = None


@dataclass(frozen=True)
class RecordReport:
    """One NAME TYPE: the effective TTL, every link, every server's view, and why it is not ready."""

    PUBLIC: ClassVar[tuple[str, ...]] = (
        "name",
        "type",
        "ttl",
        "answers",
        "chain",
        "nameservers",
        "resolvers",
        "problems",
    )
    name: str
    type: str
    ttl: int | None
    answers: tuple[str, ...]
    chain: tuple[Link, ...]
    nameservers: tuple[NameserverAnswer, ...]
    resolvers: tuple[ResolverAnswer, ...]
    problems: tuple[str, ...]
    ready: bool = False
    blocked: bool = False
    safe_after: datetime | None = None
    notes: tuple[str, ...] = ()
    zone: str | None = None
    blockers: tuple[str, ...] = ()  # the problems that waiting does not fix (plan refuses on them)
    keys: ZoneKeys | None = None  # DNSSEC: keys, DS at the parent (signed zones only)


@dataclass(frozen=True)
class CheckReport:
    """The answer of `dns check`: READY or NOT READY, per record, and when the switch is safe."""

    PUBLIC: ClassVar[tuple[str, ...]] = ("ready", "records", "safe_after")
    ready: bool
    records: tuple[RecordReport, ...]
    safe_after: datetime | None
    blocked: bool = False
    verdict: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


def public(value: Any) -> Any:
    """The contract view: dataclasses with a PUBLIC tuple keep only those keys; others keep all fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        keys = getattr(value, "PUBLIC", None) or [f.name for f in dataclasses.fields(value)]
        return {k: public(getattr(value, k)) for k in keys}
    if isinstance(value, list | tuple):
        return [public(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
