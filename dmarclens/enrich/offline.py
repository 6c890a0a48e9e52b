"""Offline facts about a source IP: country, ASN, AS owner, known service.

Uses only files parsedmarc ships (the IPinfo Lite MMDB and
``base_reverse_dns_map.csv``), opened once per process: parsedmarc reopens
the MMDB for every uncached IP, which dominates its parse time on big reports.
No DNS here; reverse DNS is ``dmarclens enrich``'s job, off the ingest path.
"""

from __future__ import annotations

import csv
import importlib.util
import socket
from collections.abc import Sequence
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
        return IpFacts(ip, *self._derive(record))

    def _derive(self, record: Any) -> tuple[Any, ...]:
        """(country, asn, as_name, as_domain, service_name, service_type, source) of a database record."""
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
        return country, asn, as_name, as_domain, service_name, service_type, source

    def lookup_columns(self, ips: Sequence[str]) -> dict[str, list[Any]]:
        """``lookup`` for many IPs at once, as columns named like IpFacts' fields.

        Why: a big report brings 50,000 new IPs. Addresses inside one network
        of the database share its record, so the network the database reports
        for one address answers the others in it without another tree walk
        or another record dict (the values are exactly ``lookup``'s).
        """
        names = ("country", "asn", "as_name", "as_domain", "service_name", "service_type", "service_source")
        cols: dict[str, list[Any]] = {"ip": list(ips), **{n: [] for n in names}}
        appends = [cols[n].append for n in names]
        known: dict[tuple[int, int, int], tuple[Any, ...]] = {}
        prefixes: dict[int, list[int]] = {4: [], 6: []}
        for ip in cols["ip"]:
            family, number = _ip_number(ip)
            derived = None
            if family:
                width = 32 if family == 4 else 128
                for plen in prefixes[family]:
                    derived = known.get((family, number >> (width - plen), plen))
                    if derived is not None:
                        break
                if derived is None:
                    record: Any
                    record, plen = self._reader.get_with_prefix_len(ip)
                    derived = self._derive(record)
                    known[(family, number >> (width - plen), plen)] = derived
                    if plen not in prefixes[family]:
                        prefixes[family].append(plen)
            else:
                try:
                    record = self._reader.get(ip)
                except ValueError:
                    record = None
                derived = self._derive(record)
            for append, value in zip(appends, derived, strict=True):
                append(value)
        return cols


def _ip_number(ip: str) -> tuple[int, int]:
    """(4 or 6, the address as an integer) for plain IP text; (0, 0) otherwise."""
    try:
        if ":" in ip:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except OSError:
        return 0, 0


@lru_cache(maxsize=1)
def shared_enricher() -> OfflineEnricher:
    """The process-wide reader: the MMDB is opened once, not per batch or per IP."""
    return OfflineEnricher()


def service_for_base_domain(base_domain: str | None) -> tuple[str, str] | None:
    """Service for a reverse-DNS base domain (used by ``dmarclens enrich``)."""
    if not base_domain:
        return None
    return service_map().get(base_domain.lower())


