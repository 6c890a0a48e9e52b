"""Offline facts about a source IP: country, ASN, AS owner, known service.

Uses only files parsedmarc ships (the IPinfo Lite MMDB and
``base_reverse_dns_map.csv``), opened once per process: parsedmarc reopens
the MMDB for every uncached IP, which dominates its parse time on big reports.
No DNS here; reverse DNS is ``dmarclens enrich``'s job, off the ingest path.
"""

from __future__ import annotations

import csv
import importlib.util
import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class IpFacts:
    ip: str
    country: str | None
    asn: int | None
    as_name: str | None
    as_domain: str | None
    service_name: str | None
    service_type: str | None
    service_source: str | None


def _resource_path(package: str, name: str) -> Path:
    """A data file inside an installed package, found without importing the package.

    Why not ``importlib.resources.files``: it imports the package, and
    importing parsedmarc (pandas, mail libraries) costs ~0.5 s that every
    ``dmarclens ingest`` would pay just to locate two data files.
    """
    top, _, rest = package.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return Path(str(resources.files(package).joinpath(name)))
    base = Path(next(iter(spec.submodule_search_locations)))
    return base.joinpath(*rest.split("."), name) if rest else base / name


@lru_cache(maxsize=1)
def service_map() -> dict[str, tuple[str, str]]:
    """base domain → (service name, service type), from parsedmarc's map."""
    path = _resource_path("parsedmarc.resources.maps", "base_reverse_dns_map.csv")
    out: dict[str, tuple[str, str]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        # csv.reader, not DictReader: a dict per row made loading the
        # 38,000-row map cost ~0.2 s of every ingest.
        rows = csv.reader(fh)
        header = [h.strip() for h in next(rows, [])]
        try:
            k, n, t = header.index("base_reverse_dns"), header.index("name"), header.index("type")
        except ValueError:
            return out
        width = max(k, n, t)
        for row in rows:
            if len(row) <= width:
                row = row + [""] * (width + 1 - len(row))
            key = row[k].strip().lower()
            if key:
                out[key] = (row[n].strip(), row[t].strip())
    return out


class OfflineEnricher:
    """Look up IPs against the bundled IP database; one open reader per instance."""

    def __init__(self, mmdb_path: str | Path | None = None) -> None:
        import maxminddb

        path = mmdb_path or _resource_path("parsedmarc.resources.ipinfo", "ipinfo_lite.mmdb")
        self._reader = maxminddb.open_database(str(path))
        self._services = service_map()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> OfflineEnricher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, ip: str) -> IpFacts:
        record: Any = None
        try:
            record = self._reader.get(ip)
        except ValueError:
            record = None  # not an IP address; the row is still stored, just unenriched
        country = asn = as_name = as_domain = None
        if isinstance(record, dict):
            code = record.get("country_code")
            country = code if isinstance(code, str) else None
            raw_asn = record.get("asn")
            if isinstance(raw_asn, str) and raw_asn.upper().startswith("AS") and raw_asn[2:].isdigit():
                asn = int(raw_asn[2:])
            elif isinstance(raw_asn, int):
                asn = raw_asn
            as_name = record.get("as_name") or None
            dom = record.get("as_domain")
            as_domain = dom.lower() if isinstance(dom, str) and dom else None
        service_name = service_type = source = None
        if as_domain and as_domain in self._services:
            service_name, service_type = self._services[as_domain]
            source = "as_domain"
        elif as_name:
            service_name, source = as_name, "as_name"
        return IpFacts(ip, country, asn, as_name, as_domain, service_name, service_type, source)


@lru_cache(maxsize=1)
def shared_enricher() -> OfflineEnricher:
    """The process-wide reader: the MMDB is opened once, not per batch or per IP."""
    return OfflineEnricher()


def service_for_base_domain(base_domain: str | None) -> tuple[str, str] | None:
    """Service for a reverse-DNS base domain (used by ``dmarclens enrich``)."""
    if not base_domain:
        return None
    return service_map().get(base_domain.lower())


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
