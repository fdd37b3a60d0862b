"""The authoritative logic of the demo server, free of sockets: answer a query, apply an RFC 2136 update."""

from __future__ import annotations

from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

_MAX_CHAIN = 8  # CNAME links followed inside the zone (a loop stops here)


def origin_of(zone: dns.zone.Zone) -> dns.name.Name:
    """The zone's apex (a zone read from text always has one)."""
    if zone.origin is None:
        raise ValueError("a zone without an origin")
    return zone.origin


def answer(zone: dns.zone.Zone, query: dns.message.Message) -> dns.message.Message:
    """An authoritative answer (AA, no RA), following CNAMEs inside the zone (RFC 1034 §4.3.2)."""
    response = dns.message.make_response(query)
    response.flags &= ~dns.flags.RA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    origin = origin_of(zone)
    name, rdtype = query.question[0].name, query.question[0].rdtype
    if not name.is_subdomain(origin):
        response.set_rcode(dns.rcode.REFUSED)  # not our zone: no AA, like a lame server
        return response
    response.flags |= dns.flags.AA
    for _ in range(_MAX_CHAIN):
        node = zone.get_node(name)
        wanted = node.get_rdataset(dns.rdataclass.IN, rdtype) if node else None
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME) if node else None
        if wanted is not None:
            response.answer.append(_rrset(name, wanted))
            break
        if cname is None:
            if node is None and not _has_descendants(zone, name):
                response.set_rcode(dns.rcode.NXDOMAIN)
            _add_negative_soa(zone, response)  # NXDOMAIN or NODATA
            break
        response.answer.append(_rrset(name, cname))
        name = cname[0].target
        if not name.is_subdomain(origin):
            break  # the resolver follows an out-of-zone target itself
    return response


def apply_update(server: Any, query: dns.message.Message) -> dns.message.Message:
    """Check the signature, the zone and the prerequisites, then apply the update (RFC 2136 §3)."""
    response = dns.message.make_response(query)
    if server.tsig is None or not query.had_tsig:
        server.refused_updates += 1
        response.set_rcode(dns.rcode.NOTAUTH)
        return response
    zone: dns.zone.Zone = server.zone
    zone_q = query.question[0] if len(query.question) == 1 else None
    if zone_q is None or zone_q.rdtype != dns.rdatatype.SOA or zone_q.name != origin_of(zone):
        response.set_rcode(dns.rcode.NOTAUTH)
        return response
    for rrset in [*query.answer, *query.authority]:
        if not rrset.name.is_subdomain(origin_of(zone)):
            response.set_rcode(dns.rcode.NOTZONE)
            return response
    rcode = _prerequisites(zone, query.answer)
    if rcode != dns.rcode.NOERROR:
        response.set_rcode(rcode)
        return response
    if _apply(zone, query.authority):
        bump_serial(zone)
    server.updates += 1
    return response


def _prerequisites(zone: dns.zone.Zone, prereqs: list[dns.rrset.RRset]) -> dns.rcode.Rcode:
    """RFC 2136 §3.2: the first prerequisite that fails names the rcode."""
    for rr in prereqs:
        node = zone.get_node(rr.name)
        any_type = rr.rdtype == dns.rdatatype.ANY
        if rr.deleting == dns.rdataclass.ANY:
            if any_type and node is None:
                return dns.rcode.NXDOMAIN  # name is in use
            if not any_type and zone.get_rdataset(rr.name, rr.rdtype) is None:
                return dns.rcode.NXRRSET  # RRset exists (value independent)
        elif rr.deleting == dns.rdataclass.NONE:
            if any_type and node is not None:
                return dns.rcode.YXDOMAIN  # name is not in use
            if not any_type and zone.get_rdataset(rr.name, rr.rdtype) is not None:
                return dns.rcode.YXRRSET  # RRset does not exist
        else:
            have = zone.get_rdataset(rr.name, rr.rdtype)
            if have is None or {r.to_text() for r in have} != {r.to_text() for r in rr}:
                return dns.rcode.NXRRSET  # RRset exists (value dependent)
    return dns.rcode.NOERROR


def _apply(zone: dns.zone.Zone, updates: list[dns.rrset.RRset]) -> bool:
    """Apply the update section in order (§3.4.2); True when anything changed."""
    changed = False
    for rr in updates:
        apex = rr.name == origin_of(zone) and rr.rdtype in _APEX_TYPES
        if rr.rdtype == dns.rdatatype.SOA or (apex and rr.deleting is not None):
            continue  # §3.4.2.3/§3.4.2.4: the apex SOA and NS are never deleted; serials are ours
        if rr.deleting == dns.rdataclass.ANY:
            changed |= _delete(zone, rr.name, rr.rdtype)
        elif rr.deleting == dns.rdataclass.NONE:
            changed |= _remove_records(zone, rr)
        else:
            changed |= _add_records(zone, rr)
    return changed


_APEX_TYPES = (dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.ANY)


def _delete(zone: dns.zone.Zone, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> bool:
    if rdtype == dns.rdatatype.ANY:
        if zone.get_node(name) is None:
            return False
        zone.delete_node(name)
        return True
    if zone.get_rdataset(name, rdtype) is None:
        return False
    zone.delete_rdataset(name, rdtype)
    return True


def _remove_records(zone: dns.zone.Zone, rr: dns.rrset.RRset) -> bool:
    have = zone.get_rdataset(rr.name, rr.rdtype)
    if have is None:
        return False
    keep = [rd for rd in have if rd not in rr]
    if len(keep) == len(have):
        return False
    if keep:
        zone.replace_rdataset(rr.name, dns.rdataset.from_rdata_list(have.ttl, keep))
    else:
        zone.delete_rdataset(rr.name, rr.rdtype)
    return True


def _add_records(zone: dns.zone.Zone, rr: dns.rrset.RRset) -> bool:
    have = zone.get_rdataset(rr.name, rr.rdtype)
    old = list(have) if have is not None else []
    merged = old + [rd for rd in rr if rd not in old]
    # The update's TTL becomes the RRset's TTL (BIND and knot do so; Rdataset.add would keep the minimum).
    if have is not None and have.ttl == rr.ttl and len(merged) == len(old):
        return False
    zone.replace_rdataset(rr.name, dns.rdataset.from_rdata_list(rr.ttl, merged))
    return True


def bump_serial(zone: dns.zone.Zone) -> None:
    """Add one to the SOA serial (RFC 1982 wrap), as every real server does on a change."""
    origin = origin_of(zone)
    soa = zone.find_rdataset(origin, "SOA")
    old = soa[0]
    new = old.replace(serial=(old.serial + 1) % 2**32)
    zone.replace_rdataset(origin, dns.rdataset.from_rdata_list(soa.ttl, [new]))


def _has_descendants(zone: dns.zone.Zone, name: dns.name.Name) -> bool:
    """An empty non-terminal exists (NODATA, not NXDOMAIN: RFC 8020)."""
    return any(n != name and n.is_subdomain(name) for n in zone.nodes)


def _add_negative_soa(zone: dns.zone.Zone, response: dns.message.Message) -> None:
    """RFC 2308 §3/§5: the SOA in authority, its TTL the negative-caching TTL min(SOA TTL, MINIMUM)."""
    origin = origin_of(zone)
    soa = zone.find_rdataset(origin, "SOA")
    rrset = dns.rrset.from_rdata(origin, min(soa.ttl, soa[0].minimum), soa[0])
    response.authority.append(rrset)


def _rrset(name: dns.name.Name, rdataset: Any) -> dns.rrset.RRset:

    return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))
