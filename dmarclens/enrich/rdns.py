"""Reverse DNS for source IPs, off the ingest path: PTR, forward confirmation,
base domain and service name, many lookups in flight at once.

Why a separate step: reverse DNS is what makes other DMARC tools crawl
(parsedmarc resolves one IP at a time inside parsing; a big Google report
takes hours). Here ``dmarclens ingest`` stores reports with offline facts
only, and ``dmarclens enrich`` resolves PTRs later, concurrently, each lookup
bounded by a timeout, with no database connection open while DNS runs:

    ips = pending_ips(db)            # short read, connection closed
    results = resolve_many(ips, ...) # DNS, no DB lock held
    store_results(db, results)       # one short write transaction

Statuses stored in ``ip_info.rdns_status``:

- ``ok``: a PTR name was found;
- ``nxdomain``: the reverse name does not exist (the common "no PTR" case);
- ``nodata``: the reverse name exists but carries no PTR record;
- ``timeout``: no answer within the timeout;
- ``servfail``: the server answered SERVFAIL or REFUSED;
- ``error``: anything else (malformed address, a broken answer).

``ok``/``nxdomain``/``nodata`` are facts about the IP, refreshed after
``--refresh-days``; ``timeout``/``servfail``/``error`` are facts about the
path to DNS and are retried on the next run, so one run with DNS down does
not hide names for weeks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dmarclens.core.domains import base_domain as psl_base_domain
from dmarclens.core.errors import DmarcLensError
from dmarclens.enrich.offline import service_for_base_domain, service_map

if TYPE_CHECKING:
    import dns.message
    import dns.name
    import duckdb
    from dns.rdtypes.ANY.PTR import PTR
    from dns.rdtypes.IN.A import A
    from dns.rdtypes.IN.AAAA import AAAA

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
DEFAULT_CONCURRENCY = 256
DEFAULT_REFRESH_DAYS = 30
MAX_PTR_NAMES_CHECKED = 3
"""An IP may carry several PTR names; forward-confirm only the first few so
one odd host cannot multiply the lookups."""

FINAL_STATUSES = ("ok", "nxdomain", "nodata")
RETRY_STATUSES = ("timeout", "servfail", "error")


class DnsConfigError(DmarcLensError):
    """No nameserver to ask (no --nameserver and no usable /etc/resolv.conf)."""


@dataclass(frozen=True)
class RdnsResult:
    """What one reverse lookup found. ``fcrdns`` is None when unknown (no PTR,
    or the forward lookup itself failed), False only when the forward answer
    came back without the IP."""

    ip: str
    status: str
    reverse_dns: str | None = None
    fcrdns: bool | None = None
    base_domain: str | None = None
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class Service:
    name: str | None
    type: str | None
    source: str | None


@dataclass(frozen=True)
class EnrichStats:
    """Summary of one ``dmarclens enrich`` run, printed by the CLI."""

    considered: int
    resolved: int
    by_status: dict[str, int]
    seconds: float
    classified: int = 0
    lookalikes: int = 0
    classify_mode: str = "full"  # or "incremental": only the rows new records can change


def parse_nameserver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or bare IPv6 → (address, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host, port = text, 53
    ipaddress.ip_address(host)  # raises ValueError on a host name: resolvers are given by address
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return host, port


class DnsClient:
    """Stub-resolver queries over UDP (TCP on truncation), each bounded by ``timeout``.

    ``query`` uses dnspython for any record type (posture reads TXT with it);
    ``lookup`` is the lean path for PTR/A/AAAA that reverse DNS runs thousands
    of times (see its docstring and benchmarks/enrich.md). Not
    ``dns.asyncresolver.Resolver``: its per-query bookkeeping roughly doubles
    the CPU per lookup again.

    With several nameservers each query starts at the next one in turn and
    falls through to the others on timeout, SERVFAIL or REFUSED, all inside the
    one ``timeout`` budget.
    """

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT) -> None:
        if nameservers:
            self.servers = [parse_nameserver(ns) for ns in nameservers]
        else:
            self.servers = system_nameservers()
        self.timeout = timeout
        self._turn = 0

    async def query(self, qname: str | dns.name.Name, rdtype: str) -> tuple[str, dns.message.Message | None]:
        """(status, response): status is ok, nxdomain, timeout, servfail or error."""
        import dns.asyncquery
        import dns.exception
        import dns.flags
        import dns.message
        import dns.rcode

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        request = dns.message.make_query(qname, rdtype)
        n = len(self.servers)
        start, self._turn = self._turn, (self._turn + 1) % n
        status = "timeout"
        for i in range(n):
            host, port = self.servers[(start + i) % n]
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            budget = remaining / (n - i)
            try:
                response = await dns.asyncquery.udp(
                    request, host, timeout=budget, port=port, ignore_unexpected=True
                )
                if response.flags & dns.flags.TC:
                    response = await dns.asyncquery.tcp(
                        request, host, timeout=max(0.01, deadline - loop.time()), port=port
                    )
            except dns.exception.Timeout:
                status = "timeout"
                continue
            except (dns.exception.DNSException, OSError, EOFError):
                status = "error"
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NOERROR:
                return "ok", response
            if rcode == dns.rcode.NXDOMAIN:
                return "nxdomain", response
            status = "servfail" if rcode in (dns.rcode.SERVFAIL, dns.rcode.REFUSED) else "error"
        return status, None

    async def lookup(self, name: str, rdtype: str) -> tuple[str, list[str]]:
        """(status, values) for a PTR, A or AAAA question: host names or addresses.

        The fast path: enrichment asks this ~20,000 times per 10,000 IPs. The
        query is packed and the reply read here (``pack_query``/``parse_reply``),
        one fresh connected UDP socket per query (a random source port from the
        kernel, a random ID; the reply must echo ID and question). That costs a
        fraction of the CPU of dnspython's message objects, which decides the
        benchmark once hundreds of lookups are in flight. Anything unusual (a
        truncated reply, a name with escaped bytes) goes through dnspython
        (``query``) instead.
        """
        qtype = _QTYPES[rdtype]
        if "\\" in name:
            status, response = await self.query(name, rdtype)
            return status, _values_of(response, rdtype)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        n = len(self.servers)
        start, self._turn = self._turn, (self._turn + 1) % n
        status = "timeout"
        for i in range(n):
            host, port = self.servers[(start + i) % n]
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            qid = secrets.randbits(16)
            try:
                packet = pack_query(qid, name, qtype)
                reply = await _udp_exchange(host, port, packet, qid, name, qtype, remaining / (n - i))
            except TimeoutError:
                status = "timeout"
                continue
            except (OSError, ValueError):
                status = "error"  # refused port, unreachable network, a name we cannot pack
                continue
            if reply.truncated:
                status, response = await self.query(name, rdtype)
                return status, _values_of(response, rdtype)
            if reply.rcode == 0:
                return "ok", reply.values
            if reply.rcode == 3:
                return "nxdomain", []
            status = "servfail" if reply.rcode in (2, 5) else "error"
        return status, []


# --- DNS wire format for the fast path (RFC 1035 section 4) ----------------------------

_QTYPES = {"A": 1, "PTR": 12, "AAAA": 28}
_EDNS0 = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # OPT RR: 1232-byte UDP payload
_MAX_POINTERS = 32


@dataclass(frozen=True)
class Reply:
    rcode: int
    truncated: bool
    values: list[str]


def pack_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"DNS name too long: {name!r}")
    return bytes(out)


def pack_query(qid: int, name: str, qtype: int) -> bytes:
    """A recursion-desired query for one question, with an EDNS0 OPT record."""
    return (struct.pack("!6H", qid, 0x0100, 1, 0, 0, 1) + pack_name(name)
            + struct.pack("!2H", qtype, 1) + _EDNS0)


_PLAIN_LABEL = re.compile(rb"[!-\-/-\[\]-~]+")  # printable ASCII except "." and "\\"


def _label_text(label: bytes) -> str:
    """Label bytes as text; dots, backslashes and unprintable bytes escaped as \\DDD (RFC 1035 5.1)."""
    if _PLAIN_LABEL.fullmatch(label):
        return label.decode("ascii")
    return "".join(chr(c) if 0x21 <= c <= 0x7E and c not in (0x2E, 0x5C) else f"\\{c:03d}" for c in label)


def read_name(msg: bytes, offset: int) -> tuple[str, int]:
    """A possibly compressed name at ``offset`` → (text, offset after it). Raises ValueError on junk."""
    labels: list[str] = []
    end: int | None = None
    pointers = length = 0
    while True:
        if offset >= len(msg):
            raise ValueError("name runs past the message")
        size = msg[offset]
        if size & 0xC0 == 0xC0:
            if offset + 1 >= len(msg):
                raise ValueError("cut compression pointer")
            if end is None:
                end = offset + 2
            offset = ((size & 0x3F) << 8) | msg[offset + 1]
            pointers += 1
            if pointers > _MAX_POINTERS:
                raise ValueError("compression loop")
            continue
        if size & 0xC0:
            raise ValueError("unknown label type")
        offset += 1
        if size == 0:
            break
        label = msg[offset:offset + size]
        if len(label) != size:
            raise ValueError("label runs past the message")
        length += size + 1
        if length > 255:
            raise ValueError("name too long")
        labels.append(_label_text(label))
        offset += size
    return ".".join(labels), (end if end is not None else offset)


def parse_reply(msg: bytes, qid: int, qname: str, qtype: int) -> Reply | None:
    """The answer to our question, or None when the datagram is not a reply to it.

    Checks ID, QR bit and the echoed question, then collects the answer
    records of ``qtype`` whatever their owner name (a CNAME chain ends there,
    as in RFC 2317 classless reverse delegation): host names for PTR,
    addresses for A/AAAA. Malformed data raises ValueError or struct.error.
    """
    if len(msg) < 12:
        return None
    rid, flags, qdcount, ancount, _ns, _ar = struct.unpack_from("!6H", msg)
    if rid != qid or not flags & 0x8000 or qdcount != 1:
        return None
    name, offset = read_name(msg, 12)
    rtype, rclass = struct.unpack_from("!2H", msg, offset)
    if rtype != qtype or rclass != 1 or name.lower() != qname.rstrip(".").lower():
        return None
    offset += 4
    values: list[str] = []
    for _ in range(ancount):
        _owner, offset = read_name(msg, offset)
        atype, aclass, _ttl, rdlen = struct.unpack_from("!2HIH", msg, offset)
        offset += 10
        rdata = msg[offset:offset + rdlen]
        if len(rdata) != rdlen:
            raise ValueError("record runs past the message")
        if aclass == 1 and atype == qtype:
            if qtype == 12:
                values.append(read_name(msg, offset)[0].lower())
            elif qtype == 1 and rdlen == 4:
                values.append(str(ipaddress.IPv4Address(rdata)))
            elif qtype == 28 and rdlen == 16:
                values.append(str(ipaddress.IPv6Address(rdata)))
        offset += rdlen
    return Reply(flags & 0x000F, bool(flags & 0x0200), values)


async def _udp_exchange(
    host: str, port: int, packet: bytes, qid: int, qname: str, qtype: int, budget: float
) -> Reply:
    """Send one query on a fresh connected UDP socket and wait up to ``budget`` for its reply."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((host, port))  # only this server's datagrams reach the socket
        sock.send(packet)
        async with asyncio.timeout(budget):
            while True:
                data = await loop.sock_recv(sock, 65535)
                try:
                    reply = parse_reply(data, qid, qname, qtype)
                except (ValueError, struct.error, IndexError):
                    reply = None  # junk is ignored like a stray datagram; the real reply may follow
                if reply is not None:
                    return reply
    finally:
        sock.close()


def _values_of(response: dns.message.Message | None, rdtype: str) -> list[str]:
    out = []
    for rd in _rdata_of(response, rdtype):
        if rdtype == "PTR":
            out.append(cast("PTR", rd).target.to_text().rstrip(".").lower())
        else:
            out.append(str(ipaddress.ip_address(cast("A | AAAA", rd).address)))
    return out


def system_nameservers() -> list[tuple[str, int]]:
    """The nameservers in /etc/resolv.conf, as dnspython reads them."""
    import dns.resolver

    try:
        found = dns.resolver.Resolver().nameservers
    except dns.resolver.NoResolverConfiguration as e:
        raise DnsConfigError("no system resolver configured; pass --nameserver IP[:PORT]") from e
    servers = [parse_nameserver(str(ns)) for ns in found]
    if not servers:
        raise DnsConfigError("no system resolver configured; pass --nameserver IP[:PORT]")
    return servers


def base_domain_of(name: str | None) -> str | None:
    """Registrable domain of a host name, public-suffix aware.

    The same rule as parsedmarc's ``get_base_domain`` (``core.domains.base_domain``:
    the public suffix list plus parsedmarc's overrides for ISPs that put
    customer names left of a shared suffix), so dmarclens groups PTR names
    exactly as the service map expects.
    """
    if not name:
        return None
    try:
        return psl_base_domain(name.rstrip(".").lower())
    except Exception:  # noqa: BLE001 - a malformed PTR name must not stop the batch
        return None


def service_for(
    base_domain: str | None, as_domain: str | None, as_name: str | None
) -> Service:
    """Service name/type for an IP from its PTR base domain and AS facts.

    Order, as parsedmarc attributes sources: the PTR base domain in the service
    map (``rdns``); else the AS domain in the map (``as_domain``); else the PTR
    base domain itself as the name, type unknown (``rdns_domain``); else the AS
    name (``as_name``, weak: a whole hosting provider).
    """
    hit = service_for_base_domain(base_domain)
    if hit:
        return Service(hit[0] or None, hit[1] or None, "rdns")
    if as_domain and as_domain.lower() in service_map():
        name, kind = service_map()[as_domain.lower()]
        return Service(name or None, kind or None, "as_domain")
    if base_domain:
        return Service(base_domain, None, "rdns_domain")
    if as_name:
        return Service(as_name, None, "as_name")
    return Service(None, None, None)


def _rdata_of(response: dns.message.Message | None, rdtype: str) -> list[object]:
    """Records of ``rdtype`` in the answer section, whatever name they hang on
    (a CNAME chain, as in RFC 2317 classless reverse delegation, ends there)."""
    import dns.rdatatype

    if response is None:
        return []
    want = dns.rdatatype.from_text(rdtype)
    return [rd for rrset in response.answer if rrset.rdtype == want for rd in rrset]


async def _forward_confirms(client: DnsClient, name: str, addr: IPAddress) -> bool | None:
    """True if ``name`` resolves (A or AAAA, by the IP's family) back to ``addr``;
    None if the forward lookup could not be completed."""
    status, values = await client.lookup(name, "A" if addr.version == 4 else "AAAA")
    if status in ("nxdomain",):
        return False
    if status != "ok":
        return None
    return any(ipaddress.ip_address(v) == addr for v in values)


async def resolve_one(client: DnsClient, ip: str) -> RdnsResult:
    """PTR, then forward confirmation of the PTR names, for one IP."""
    now = datetime.now(UTC)
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return RdnsResult(ip, "error", resolved_at=now)
    status, names = await client.lookup(addr.reverse_pointer, "PTR")
    if status != "ok":
        return RdnsResult(ip, status, resolved_at=now)
    names = [n for n in names if n]
    if not names:
        return RdnsResult(ip, "nodata", resolved_at=now)
    fcrdns: bool | None = False
    chosen = names[0]
    for name in names[:MAX_PTR_NAMES_CHECKED]:
        confirmed = await _forward_confirms(client, name, addr)
        if confirmed:
            fcrdns, chosen = True, name
            break
        if confirmed is None:
            fcrdns = None
    return RdnsResult(ip, "ok", chosen, fcrdns, base_domain_of(chosen), now)


async def resolve_many_async(
    ips: Iterable[str],
    *,
    nameservers: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[RdnsResult]:
    """Resolve every IP with at most ``concurrency`` lookups in flight.

    A fixed pool of workers pulls from one queue, so memory stays flat for
    100,000 IPs and a timing-out IP only holds its own worker. Every DNS query
    has its own deadline (``DnsClient``), so one IP takes at most
    ``timeout * (1 + MAX_PTR_NAMES_CHECKED)``; no extra ``wait_for`` task per
    IP, which would cost more CPU than the lookup's own bookkeeping.
    """
    client = DnsClient(nameservers, timeout)
    _ensure_fd_limit(concurrency + 128)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for ip in ips:
        queue.put_nowait(ip)
    results: list[RdnsResult] = []

    async def worker() -> None:
        while True:
            try:
                ip = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results.append(await resolve_one(client, ip))

    n = max(1, min(concurrency, queue.qsize()))
    await asyncio.gather(*(worker() for _ in range(n)))
    return results


def _ensure_fd_limit(wanted: int) -> None:
    """Each lookup in flight holds one socket: raise the soft open-files limit
    (often 1024) towards ``wanted`` when the hard limit allows, so a high
    ``--concurrency`` does not turn into "too many open files" errors."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        log.debug("could not raise the open-files limit to %d", wanted)


def resolve_many(
    ips: Iterable[str],
    *,
    nameservers: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[RdnsResult]:
    """Blocking wrapper: works from the CLI and from code that already runs an event loop."""
    return run_coroutine_blocking(
        resolve_many_async(ips, nameservers=nameservers, timeout=timeout, concurrency=concurrency)
    )


def run_coroutine_blocking(coro: Any) -> Any:
    """``asyncio.run``, also when the calling thread already runs an event loop.

    A notebook (Jupyter runs a loop) or a host such as Playwright's sync API
    makes ``asyncio.run`` refuse; there the coroutine runs on a private loop in
    a helper thread and this thread waits for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dmarclens-dns") as pool:
        return pool.submit(asyncio.run, coro).result()


# --- the database side -------------------------------------------------------


def pending_ips(
    con: duckdb.DuckDBPyConnection, *, refresh_days: float = DEFAULT_REFRESH_DAYS, now: datetime | None = None
) -> list[str]:
    """IPs never resolved, resolved with a transient failure, or older than ``refresh_days``."""
    now = now or datetime.now(UTC)
    stale_before = now - timedelta(days=refresh_days)
    rows = con.execute(
        """SELECT ip FROM ip_info
           WHERE rdns_status IS NULL
              OR rdns_status NOT IN (SELECT unnest(?))
              OR rdns_resolved_at IS NULL
              OR rdns_resolved_at < ?
           ORDER BY ip""",
        [list(FINAL_STATUSES), stale_before],
    ).fetchall()
    return [r[0] for r in rows]


def store_results(con: duckdb.DuckDBPyConnection, results: Sequence[RdnsResult]) -> int:
    """Write results into ip_info (caller owns the transaction).

    A transient failure (timeout, servfail) keeps the PTR name, base domain and
    service a previous run found: a flaky resolver must not erase good facts.
    A definitive answer (ok, nxdomain, nodata) replaces them.
    """
    if not results:
        return 0
    import pyarrow as pa

    ips = [r.ip for r in results]
    as_facts = {
        ip: (as_domain, as_name)
        for ip, as_domain, as_name in con.execute(
            "SELECT ip, as_domain, as_name FROM ip_info WHERE ip IN (SELECT unnest(?))", [ips]
        ).fetchall()
    }
    rows: dict[str, list[object]] = {
        k: [] for k in ("ip", "status", "reverse_dns", "base_domain", "fcrdns", "resolved_at",
                        "definitive", "service_name", "service_type", "service_source")
    }
    for r in results:
        as_domain, as_name = as_facts.get(r.ip, (None, None))
        definitive = r.status in FINAL_STATUSES
        svc = service_for(r.base_domain if r.status == "ok" else None, as_domain, as_name)
        for key, value in (
            ("ip", r.ip), ("status", r.status), ("reverse_dns", r.reverse_dns), ("base_domain", r.base_domain),
            ("fcrdns", r.fcrdns), ("resolved_at", r.resolved_at), ("definitive", definitive),
            ("service_name", svc.name), ("service_type", svc.type), ("service_source", svc.source),
        ):
            rows[key].append(value)
    table = pa.table({
        **{k: v for k, v in rows.items() if k not in ("fcrdns", "resolved_at", "definitive")},
        "fcrdns": pa.array(rows["fcrdns"], type=pa.bool_()),
        "definitive": pa.array(rows["definitive"], type=pa.bool_()),
        "resolved_at": pa.array(rows["resolved_at"], type=pa.timestamp("us", tz="UTC")),
    })
    con.register("_dl_rdns", table)
    try:
        con.execute(
            """UPDATE ip_info SET
                 rdns_status = n.status,
                 rdns_resolved_at = n.resolved_at,
                 reverse_dns = CASE WHEN n.definitive THEN n.reverse_dns ELSE ip_info.reverse_dns END,
                 base_domain = CASE WHEN n.definitive THEN n.base_domain ELSE ip_info.base_domain END,
                 fcrdns = CASE WHEN n.definitive THEN n.fcrdns ELSE ip_info.fcrdns END,
                 service_name = CASE WHEN n.definitive THEN n.service_name ELSE ip_info.service_name END,
                 service_type = CASE WHEN n.definitive THEN n.service_type ELSE ip_info.service_type END,
                 service_source = CASE WHEN n.definitive THEN n.service_source ELSE ip_info.service_source END
               FROM _dl_rdns n WHERE ip_info.ip = n.ip"""
        )
    finally:
        con.unregister("_dl_rdns")
    return len(results)


@dataclass(frozen=True)
class EnrichOptions:
    """DNS settings: CLI flag > ``[enrich]`` in the config file > default.

    ``[enrich]`` keys: ``nameservers`` (list of "IP" or "IP:PORT"),
    ``timeout``, ``concurrency``, ``refresh_days``. ``dmarclens ingest
    --enrich`` has no DNS flags of its own and uses these.
    """

    nameservers: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    refresh_days: float = DEFAULT_REFRESH_DAYS

    @classmethod
    def resolve(
        cls,
        raw: Mapping[str, Any] | None,
        *,
        nameservers: Sequence[str] | None = None,
        timeout: float | None = None,
        concurrency: int | None = None,
        refresh_days: float | None = None,
    ) -> EnrichOptions:
        from dmarclens.core.errors import ConfigError

        section = (raw or {}).get("enrich") or {}
        if not isinstance(section, Mapping):
            raise ConfigError("[enrich] must be a table")
        unknown = set(section) - {"nameservers", "timeout", "concurrency", "refresh_days"}
        if unknown:
            raise ConfigError(f"[enrich]: unknown keys {sorted(unknown)}")
        try:
            conf_ns = section.get("nameservers") or []
            if isinstance(conf_ns, str):
                conf_ns = [conf_ns]
            for ns in conf_ns:
                parse_nameserver(str(ns))
            opts = cls(
                nameservers=tuple(nameservers) if nameservers else tuple(str(n) for n in conf_ns),
                timeout=float(timeout if timeout is not None else section.get("timeout", DEFAULT_TIMEOUT)),
                concurrency=int(concurrency if concurrency is not None
                                else section.get("concurrency", DEFAULT_CONCURRENCY)),
                refresh_days=float(refresh_days if refresh_days is not None
                                   else section.get("refresh_days", DEFAULT_REFRESH_DAYS)),
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"[enrich]: {e}") from e
        if opts.timeout <= 0 or opts.concurrency < 1 or opts.refresh_days < 0:
            raise ConfigError("[enrich]: timeout must be > 0, concurrency >= 1, refresh_days >= 0")
        return opts


def classify_on(
    con: duckdb.DuckDBPyConnection,
    db_path: str | Path,
    rules: Any,
    owned_domains: Sequence[str] = (),
    *,
    incremental: bool = True,
    results: Sequence[RdnsResult] = (),
) -> Any:
    """Store reverse-DNS ``results`` (if any), then traffic classes and
    lookalikes, in one transaction on an open connection; return what
    ``classify.update`` did (see ``classify.update_on``)."""
    from dmarclens.enrich import classify

    return classify.update_on(con, db_path, rules, owned_domains, incremental=incremental,
                              before=(lambda c: store_results(c, list(results))) if results else None)


def enrich_db(
    db_path: str | Path,
    *,
    nameservers: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
    refresh_days: float = DEFAULT_REFRESH_DAYS,
    lock_timeout: float = 30.0,
    settings_raw: Mapping[str, Any] | None = None,
    owned_domains: Sequence[str] = (),
    resolve: bool = True,
    incremental: bool | None = None,
) -> EnrichStats:
    """Library entry point behind ``dmarclens enrich`` and the classification after every ingest.

    With ``resolve`` it reads the pending IPs and closes the database, resolves
    with no connection open (a dashboard or a cron ingest can use the file
    meanwhile), then writes every result, the traffic classes and the
    lookalike table in one transaction, recomputing every class (reverse DNS
    feeds the forwarder and override rules). Without ``resolve`` (after an
    ingest) it opens the database once and, by default, only recomputes the
    rows that the new records can change (``classify.update``).
    """
    import time

    from dmarclens.enrich import classify
    from dmarclens.store import db as dbmod

    started = time.monotonic()
    if incremental is None:
        incremental = not resolve
    rules = classify.rules_from_settings(settings_raw or {})  # a config error before any work
    ips: list[str] = []
    results: list[RdnsResult] = []
    if resolve:
        with dbmod.open_db(db_path, lock_timeout=lock_timeout) as con:
            ips = pending_ips(con, refresh_days=refresh_days)
        if ips:
            log.info("resolving %d IPs (%d in flight, %.1fs timeout)", len(ips), concurrency, timeout)
            results = resolve_many(ips, nameservers=nameservers, timeout=timeout, concurrency=concurrency)
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    with dbmod.open_db(db_path, lock_timeout=lock_timeout) as con:
        done = classify_on(con, db_path, rules, owned_domains, incremental=incremental, results=results)
    log.debug("traffic classes: %s refresh (%s), %d rows recomputed, %d changed; lookalikes %s",
              done.mode, done.reason, done.recomputed, done.changed, done.lookalikes_mode)
    return EnrichStats(
        considered=len(ips), resolved=len(results), by_status=by_status,
        seconds=time.monotonic() - started, classified=done.changed, lookalikes=done.lookalikes,
        classify_mode=done.mode,
    )
