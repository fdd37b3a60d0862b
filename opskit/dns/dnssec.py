"""Signatures are cached too: a validator keeps an RRset no longer than its RRSIG allows (RFC 4035 5.3.3).

A signed zone is READY only when the DS at its parent matches one of its DNSKEYs (otherwise every
validating resolver answers SERVFAIL for every name in it, RFC 4035 5.2) and no RRSIG on the path (each
link of the chain, and the zone's DNSKEY RRset) expires before the switch + the old TTL + a margin for
the signer to refresh it: signatures made on a host being retired stop being refreshed when it goes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import dns.dnssec
import dns.exception
import dns.message
import dns.name
import dns.rdatatype

from opskit.dns.query import find
from opskit.dns.report import Dnssec, RecordReport, ZoneKeys
from opskit.dns.timefmt import by, when

# time for an online signer to refresh a signature before caches would hold it past its expiry
MARGIN_S = 3600


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
    """A problem when the signature runs out before the switch + the TTL + MARGIN_S (pure)."""
    switch = safe_after if safe_after is not None and safe_after > now else now
    needed = switch + timedelta(seconds=ttl_s + MARGIN_S)
    expires = by(sig.rrsig_expires, now)
    if sig.rrsig_expires <= now:
        return f"the RRSIG over {what} expired at {expires}: validators reject it; re-sign the zone now"
    if sig.rrsig_expires <= needed:
        return (
            f"the RRSIG over {what} expires at {expires}, before the switch + its {ttl_s} s TTL + "
            f"{MARGIN_S} s margin ({when(needed, now)}): validators would reject it while caches "
            "still hold it; re-sign with a longer validity, and keep the zone's signer running and "
            "re-signing until after the switch"
        )
    return None


def signed_path(
    report: RecordReport, safe_after: datetime | None, now: datetime
) -> tuple[list[str], list[str]]:
    """Problems and notes about the signatures and the DS of a record's path (pure)."""
    problems: list[str] = []
    notes: list[str] = []
    old_ttl = report.ttl
    for lk in report.chain:
        if lk.dnssec is None or lk.ttl is None:
            continue
        what = f"{lk.name.rstrip('.')} {lk.type}"
        problem = expiry_problem(what, lk.dnssec, safe_after, now, old_ttl or lk.ttl)
        if problem:
            problems.append(problem)
        key = f", DNSKEY TTL {lk.dnssec.dnskey_ttl} s" if lk.dnssec.dnskey_ttl is not None else ""
        notes.append(
            f"{what} is signed: RRSIG TTL {lk.dnssec.rrsig_ttl} s{key}, signature valid until "
            f"{by(lk.dnssec.rrsig_expires, now)} (validators cache these too)"
        )
    if report.keys is not None:
        more, said = _keys(report.keys, safe_after, now, old_ttl or 0)
        problems += more
        notes += said
    return problems, notes


def _keys(
    keys: ZoneKeys, safe_after: datetime | None, now: datetime, ttl_s: int
) -> tuple[list[str], list[str]]:
    zone = keys.zone.rstrip(".")
    problems: list[str] = []
    notes: list[str] = []
    if keys.ds and not keys.ds_matching:
        problems.append(
            f"the DS at the parent ({'; '.join(keys.ds)}) matches no DNSKEY of {zone} "
            f"({', '.join(keys.dnskeys) or 'none published'}): validating resolvers answer SERVFAIL "
            "for every name in the zone; publish the DS of the zone's current key at the parent "
            "(or bring back the key the DS names) before the switch"
        )
    elif keys.ds_matching:
        notes.append(f"the DS at the parent matches DNSKEY {', '.join(keys.ds_matching)} of {zone}")
    elif keys.ds == ():
        notes.append(f"no DS for {zone} at the parent: validators treat the zone as unsigned")
    else:
        notes.append(f"the DS of {zone} at the parent was not checked ({keys.parent_error})")
    if keys.dnskey_signature is not None:
        problem = expiry_problem(f"{zone} DNSKEY", keys.dnskey_signature, safe_after, now, ttl_s)
        if problem:
            problems.append(problem)
    return problems, notes


def describe_keys(dnskeys: Iterable[Any]) -> tuple[str, ...]:
    """DNSKEYs as an operator names them: "tag 10155 (KSK)"."""
    return tuple(f"tag {dns.dnssec.key_id(k)} ({'KSK' if k.flags & 1 else 'ZSK'})" for k in dnskeys)


def ds_matching(apex: str, dnskeys: Iterable[Any], ds_records: Iterable[Any]) -> tuple[str, ...]:
    """The DS records (as text) that are the digest of one of the DNSKEYs."""
    keys = list(dnskeys)
    matching = []
    for ds in ds_records:
        for key in keys:
            try:
                digest = dns.dnssec.make_ds(apex, key, ds.digest_type)
            except (dns.exception.DNSException, ValueError):  # a digest type dnspython lacks
                continue
            if digest == ds:
                matching.append(f"tag {ds.key_tag}")
                break
    return tuple(matching)
