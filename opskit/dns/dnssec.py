"""Signatures are cached too: a validator keeps an RRset no longer than its RRSIG allows (RFC 4035 5.3.3).

A switch planned after the covering RRSIG expires serves bogus data from caches unless the zone is
re-signed in time; the RRSIG and DNSKEY TTLs bound how long validators keep the old signature and key.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dns.message
import dns.name
import dns.rdatatype

from opskit.dns.query import find
from opskit.dns.report import Dnssec


def signature(
    response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> Dnssec | None:
    """The RRSIG covering NAME TYPE in the answer, if the zone is signed (earliest expiry when several)."""
    rrset = find(response, name, dns.rdatatype.RRSIG, covers=rdtype)
    if rrset is None or not len(rrset):
        return None
    sig = min(rrset, key=lambda r: r.expiration)
    return Dnssec(
        rrsig_ttl=int(rrset.ttl),
        original_ttl=int(sig.original_ttl),
        rrsig_expires=datetime.fromtimestamp(sig.expiration, tz=UTC),
    )


def expiry_problem(
    what: str, sig: Dnssec, safe_after: datetime | None, now: datetime, ttl_s: int
) -> str | None:
    """A problem when the signature runs out before the switch is safe or while caches hold the RRset."""
    horizon = safe_after if safe_after is not None and safe_after > now else now
    if sig.rrsig_expires <= horizon:
        return (
            f"the RRSIG over {what} expires at {sig.rrsig_expires:%Y-%m-%d %H:%M} UTC, before the "
            f"switch is safe: re-sign the zone (is the signer running?)"
        )
    if (sig.rrsig_expires - horizon).total_seconds() < ttl_s:
        return (
            f"the RRSIG over {what} expires at {sig.rrsig_expires:%Y-%m-%d %H:%M} UTC, sooner than the "
            f"{ttl_s} s TTL: caches would hold data whose signature has expired; re-sign the zone"
        )
    return None
