"""How long a "does not exist" answer is cached: min(SOA TTL, SOA MINIMUM), RFC 2308 section 5."""

from __future__ import annotations

import dns.message
import dns.rdatatype


def negative_ttl(response: dns.message.Message) -> int | None:
    """The negative-caching TTL of an NXDOMAIN/NODATA response, from the SOA in its authority section."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return int(min(rrset.ttl, rrset[0].minimum))
    return None


def soa_serial(response: dns.message.Message) -> int | None:
    """The serial of the SOA a server answered with (answer section, else authority)."""
    for rrset in [*response.answer, *response.authority]:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return int(rrset[0].serial)
    return None
