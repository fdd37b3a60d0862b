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
from opskit.dns.timefmt import by, when


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
    expires = by(sig.rrsig_expires, now)
    if sig.rrsig_expires <= now:
        return f"the RRSIG over {what} expired at {expires}: validators reject it; re-sign the zone now"
    if sig.rrsig_expires <= horizon:
        # normal for an online signer with short signatures, fatal when the signer is the host being
        # retired: the signature must be refreshed between now and the switch
        return (
            f"the RRSIG over {what} expires at {expires}, before the switch is safe "
            f"({when(horizon, now)}): keep the zone's signer running and re-signing until "
            "after the switch (signatures made on the old host stop being refreshed when it goes)"
        )
    if (sig.rrsig_expires - horizon).total_seconds() < ttl_s:
        return (
            f"the RRSIG over {what} expires at {expires}, sooner than the {ttl_s} s TTL after the "
            "switch: make sure the signer refreshes it before then"
        )
    return None
