"""Network addresses: the range a source IP belongs to, and whether a host is this machine.

The /24 (IPv4) or /48 (IPv6) range is the layer between "a provider" and
"one IP" that detection, the dashboard and the store all group by; the
loopback test decides whether plain-text IMAP or an unprotected dashboard is
only reachable from this host.
"""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """True for a name or address that only this machine can reach."""
    return host in LOOPBACK_NAMES or host.startswith("127.")


def network_of(ip: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) an address belongs to: the range layer of a source."""
    bare = ip.split("%", 1)[0]
    if ":" not in bare:
        # Dotted quads by string: ipaddress objects cost ~25 us each, which made
        # classifying the 50,000 new IPs of one big report take a second.
        try:
            socket.inet_pton(socket.AF_INET, bare)
        except OSError:
            return None
        return bare.rsplit(".", 1)[0] + ".0/24"
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
