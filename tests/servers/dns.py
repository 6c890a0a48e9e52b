"""A real authoritative DNS server on 127.0.0.1 for reverse-DNS and lookup tests.

Why: enrichment does real DNS queries (PTR, A/AAAA, TXT) with timeouts and
concurrency; the only honest way to test timeouts, SERVFAIL and throughput is
to answer real UDP/TCP packets. Wire format is handled by ``dnslib``; the
socket loop is our own so it can answer thousands of queries a second from one
thread, drop packets on purpose (``timeout``), or answer late (``delay``).

Behaviours can be set per name (``zone.set_behaviour(name, "timeout")``) or
for the whole server (``server.mode = "servfail"``).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import ipaddress
import itertools
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

from dnslib import AAAA, CNAME, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord

from .ports import LOCALHOST, free_udp_tcp_port

if TYPE_CHECKING:
    import dns.resolver

Behaviour = Literal["answer", "timeout", "servfail", "nxdomain", "nodata", "refused"]
BEHAVIOURS: tuple[str, ...] = ("answer", "timeout", "servfail", "nxdomain", "nodata", "refused")

#: ``fallback(name, qtype)`` for names not in the table: ``None`` (NXDOMAIN), a
#: list of RDATA strings in zone-file syntax (``["mail.example.com."]`` for a
#: PTR) or a behaviour word such as ``"timeout"``. Lets a benchmark answer
#: 10,000 generated names without storing them.
Fallback = Callable[[str, str], "list[str] | str | None"]


def normalize(name: str) -> str:
    """Lowercase, no trailing dot: the key every table lookup uses."""
    return name.strip().rstrip(".").lower()


def reverse_name(ip: str) -> str:
    """``192.0.2.1`` → ``1.2.0.192.in-addr.arpa``; IPv6 → nibble ``ip6.arpa`` name."""
    return ipaddress.ip_address(ip).reverse_pointer


def _name_or_ip(name: str) -> str:
    """Accept an IP address where a name is expected and turn it into its PTR name."""
    try:
        return reverse_name(name)
    except ValueError:
        return normalize(name)


def _txt_chunks(text: str | bytes) -> list[bytes]:
    """Split TXT data into <=255-byte character-strings (as SPF/DKIM records are)."""
    data = text.encode() if isinstance(text, str) else text
    return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]


class Zone:
    """The table the server answers from. Thread-safe; edit it while the server runs.

    Names are case-insensitive. Unknown names get NXDOMAIN (or whatever
    ``fallback`` says); known names without records of the asked type get an
    empty NOERROR answer (NODATA).
    """

    def __init__(self, fallback: Fallback | None = None) -> None:
        self.fallback = fallback
        self._records: dict[str, list[RR]] = {}
        self._behaviour: dict[str, str] = {}
        self._delay: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- records
    def add(self, name: str, rtype: str, rdata: object, ttl: int = 300) -> None:
        """Add one record of any type from a dnslib rdata object (``A("192.0.2.1")`` …)."""
        key = normalize(name)
        rr = RR(rname=key + ".", rtype=getattr(QTYPE, rtype.upper()), rdata=rdata, ttl=ttl)
        with self._lock:
            self._records.setdefault(key, []).append(rr)

    def add_zone_line(self, line: str) -> None:
        """Add records written in zone-file syntax, e.g. ``"example.com. 300 IN MX 10 mx.example.com."``."""
        for rr in RR.fromZone(line):
            key = normalize(str(rr.rname))
            with self._lock:
                self._records.setdefault(key, []).append(rr)

    def add_a(self, name: str, ip: str, ttl: int = 300) -> None:
        """Add an A record."""
        self.add(name, "A", A(ip), ttl)

    def add_aaaa(self, name: str, ip: str, ttl: int = 300) -> None:
        """Add an AAAA record."""
        self.add(name, "AAAA", AAAA(ip), ttl)

    def add_txt(self, name: str, text: str | bytes, ttl: int = 300) -> None:
        """Add a TXT record; long text is split into 255-byte strings like real SPF/DKIM TXT."""
        self.add(name, "TXT", TXT(_txt_chunks(text)), ttl)

    def add_cname(self, name: str, target: str, ttl: int = 300) -> None:
        """Add a CNAME; lookups of other types follow it inside this zone."""
        self.add(name, "CNAME", CNAME(normalize(target) + "."), ttl)

    def add_ptr(self, ip: str, hostname: str, ttl: int = 300) -> str:
        """Add a PTR for an IPv4 or IPv6 address; return the reverse name used."""
        name = reverse_name(ip)
        self.add(name, "PTR", PTR(normalize(hostname) + "."), ttl)
        return name

    def add_host(self, hostname: str, ip: str, ttl: int = 300) -> None:
        """Forward-confirmed reverse DNS in one call: A/AAAA for the name and PTR for the IP."""
        if ipaddress.ip_address(ip).version == 4:
            self.add_a(hostname, ip, ttl)
        else:
            self.add_aaaa(hostname, ip, ttl)
        self.add_ptr(ip, hostname, ttl)

    def remove(self, name: str) -> None:
        """Forget every record, behaviour and delay of ``name`` (or of an IP's PTR name)."""
        key = _name_or_ip(name)
        with self._lock:
            self._records.pop(key, None)
            self._behaviour.pop(key, None)
            self._delay.pop(key, None)

    def clear(self) -> None:
        """Empty the zone."""
        with self._lock:
            self._records.clear()
            self._behaviour.clear()
            self._delay.clear()

    # -- behaviour
    def set_behaviour(self, name: str, behaviour: Behaviour) -> None:
        """Make queries for ``name`` (or an IP: its PTR name) time out, SERVFAIL, NXDOMAIN, NODATA, REFUSE or answer."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}, not {behaviour!r}")
        with self._lock:
            self._behaviour[_name_or_ip(name)] = behaviour

    def set_delay(self, name: str, seconds: float) -> None:
        """Answer queries for ``name`` (or an IP's PTR name) only after ``seconds`` (0 removes the delay)."""
        with self._lock:
            if seconds > 0:
                self._delay[_name_or_ip(name)] = seconds
            else:
                self._delay.pop(_name_or_ip(name), None)

    def resolve(self, name: str, qtype: int) -> tuple[str, float, int, list[RR]]:
        """(behaviour, delay, rcode, answer records) for one question."""
        key = normalize(name)
        with self._lock:
            behaviour = self._behaviour.get(key, "answer")
            delay = self._delay.get(key, 0.0)
            known = key in self._records
            fallback = self.fallback
        if behaviour != "answer":
            return behaviour, delay, RCODE.NOERROR, []
        if not known and fallback is not None:
            qtype_name = str(QTYPE.get(qtype, qtype))
            result = fallback(key, qtype_name)
            if isinstance(result, str):
                if result not in BEHAVIOURS:
                    raise ValueError(
                        f"fallback returned {result!r}; expected a list of RDATA or one of {BEHAVIOURS}"
                    )
                return result, delay, RCODE.NOERROR, []
            if result is not None:
                answers = [
                    rr for rdata in result for rr in RR.fromZone(f"{key}. 300 IN {qtype_name} {rdata}")
                ]
                return behaviour, delay, RCODE.NOERROR, answers
        with self._lock:
            answers = []
            current = key
            for _hop in range(8):  # follow CNAME chains inside the zone, bounded
                records = self._records.get(current)
                if records is None:
                    return behaviour, delay, (RCODE.NOERROR if answers else RCODE.NXDOMAIN), answers
                matching = [r for r in records if qtype in (r.rtype, QTYPE.ANY)]
                if matching:
                    return behaviour, delay, RCODE.NOERROR, answers + matching
                cnames = [r for r in records if r.rtype == QTYPE.CNAME]
                if not cnames:
                    return behaviour, delay, RCODE.NOERROR, answers
                answers.append(cnames[0])
                current = normalize(str(cnames[0].rdata.label))
            return behaviour, delay, RCODE.NOERROR, answers


class DNSServer:
    """Authoritative DNS on 127.0.0.1:``port`` over UDP and TCP, answering from ``zone``.

    Attributes: ``host``, ``port``, ``zone``, ``mode`` (whole-server
    behaviour, overrides per-name ones unless ``"answer"``), ``queries``
    (list of ``(name, type, "udp"|"tcp")`` in arrival order).
    """

    def __init__(
        self, zone: Zone | None = None, *, mode: Behaviour = "answer", port: int | None = None
    ) -> None:
        self.zone = zone or Zone()
        self.mode: Behaviour = mode
        self.host = LOCALHOST
        self.port = port or free_udp_tcp_port()
        self._auto_port = port is None
        self.queries: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self._udp: socket.socket | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self._threads: list[threading.Thread] = []
        self._delayed: list[tuple[float, int, bytes, tuple[str, int]]] = []
        self._delayed_cv = threading.Condition()
        self._seq = itertools.count()

    @property
    def query_count(self) -> int:
        """How many questions arrived (UDP and TCP)."""
        return len(self.queries)

    # -- answering
    def _answer(self, data: bytes, proto: str, limit: int | None) -> tuple[bytes | None, float]:
        """Build the reply for one query packet; (None, _) means: stay silent."""
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - garbage packets are answered with silence, like real servers
            return None, 0.0
        reply = request.reply()  # copies id and question, sets QR, AA and RA
        if not request.questions:
            reply.header.rcode = RCODE.FORMERR
            return reply.pack(), 0.0
        q = request.q
        qname = str(q.qname)
        self.queries.append((normalize(qname), QTYPE.get(q.qtype, str(q.qtype)), proto))
        try:
            behaviour, delay, rcode, answers = self.zone.resolve(qname, q.qtype)
        except Exception:  # noqa: BLE001 - a broken fallback shows up as SERVFAIL, not a dead server
            behaviour, delay, rcode, answers = "servfail", 0.0, RCODE.SERVFAIL, []
        if self.mode != "answer":
            behaviour = self.mode
        if behaviour == "timeout":
            return None, 0.0
        if behaviour == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        elif behaviour == "refused":
            reply.header.rcode = RCODE.REFUSED
        elif behaviour == "nxdomain":
            reply.header.rcode = RCODE.NXDOMAIN
        elif behaviour == "nodata":
            reply.header.rcode = RCODE.NOERROR
        else:
            reply.header.rcode = rcode
            for rr in answers:
                reply.add_answer(rr)
        packet = reply.pack()
        if limit is not None:
            edns = [r for r in request.ar if r.rtype == QTYPE.OPT]
            size = max(512, edns[0].rclass) if edns else 512
            if len(packet) > min(size, limit):
                reply.rr = []
                reply.header.tc = 1  # truncated: the client retries over TCP
                packet = reply.pack()
        return packet, delay

    # -- UDP: one thread, a non-blocking loop; late answers go through a timer heap
    def _serve_udp(self) -> None:
        assert self._udp is not None
        sock = self._udp
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.2)
            if not ready:
                continue
            for _ in range(256):  # drain what is queued before selecting again
                try:
                    data, addr = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return
                packet, delay = self._answer(data, "udp", limit=65507)
                if packet is None:
                    continue
                if delay > 0:
                    with self._delayed_cv:
                        heapq.heappush(
                            self._delayed, (time.monotonic() + delay, next(self._seq), packet, addr)
                        )
                        self._delayed_cv.notify()
                    continue
                with contextlib.suppress(OSError):
                    sock.sendto(packet, addr)

    def _send_delayed(self) -> None:
        assert self._udp is not None
        with self._delayed_cv:
            while not self._stop.is_set():
                if not self._delayed:
                    self._delayed_cv.wait(0.2)
                    continue
                due, _, packet, addr = self._delayed[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._delayed_cv.wait(min(wait, 0.2))
                    continue
                heapq.heappop(self._delayed)
                with contextlib.suppress(OSError):
                    self._udp.sendto(packet, addr)

    # -- TCP: rarely used (truncated answers), a thread per connection is fine
    def _make_tcp_server(self) -> socketserver.ThreadingTCPServer:
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                conn.settimeout(10)
                while not outer._stop.is_set():
                    try:
                        head = _recv_exact(conn, 2)
                        if head is None:
                            return
                        body = _recv_exact(conn, struct.unpack("!H", head)[0])
                        if body is None:
                            return
                    except OSError:
                        return
                    packet, delay = outer._answer(body, "tcp", limit=None)
                    if packet is None:
                        outer._stop.wait(30)  # never answer: hold the connection until the client gives up
                        return
                    if delay > 0:
                        outer._stop.wait(delay)
                    try:
                        conn.sendall(struct.pack("!H", len(packet)) + packet)
                    except OSError:
                        return

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        return Server((self.host, self.port), Handler)

    # -- lifecycle
    def start(self) -> DNSServer:
        """Bind UDP and TCP on ``port`` and serve in background threads."""
        if self._threads:
            return self
        self._stop.clear()
        for attempt in range(3):
            try:
                return self._start_once()
            except OSError as e:
                if e.errno != errno.EADDRINUSE or not self._auto_port or attempt == 2:
                    raise
                self.port = free_udp_tcp_port()  # taken since we picked it: try another
        return self

    def _start_once(self) -> DNSServer:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # bursts of thousands of queries must not be dropped
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        udp.bind((self.host, self.port))
        udp.setblocking(False)
        self._udp = udp
        try:
            self._tcp = self._make_tcp_server()
        except OSError:
            udp.close()
            raise
        self._threads = [
            threading.Thread(target=self._serve_udp, name=f"dns-udp-{self.port}", daemon=True),
            threading.Thread(target=self._send_delayed, name=f"dns-delay-{self.port}", daemon=True),
            threading.Thread(
                target=self._tcp.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"dns-tcp-{self.port}",
                daemon=True,
            ),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop all threads (bounded) and close the sockets."""
        self._stop.set()
        if self._udp is not None:  # wake the UDP loop's select() at once
            with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"\0", (self.host, self.port))
        with self._delayed_cv:
            self._delayed_cv.notify_all()
        if self._tcp is not None:
            self._tcp.shutdown()
            self._tcp.server_close()
        for t in self._threads:
            t.join(timeout=5)
        if self._udp is not None:
            self._udp.close()
        self._threads = []
        self._tcp = None
        self._udp = None
        self._delayed.clear()

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<DNSServer {self.host}:{self.port} mode={self.mode} queries={self.query_count}>"

    # -- client helpers
    def resolver(self, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks only this server (``lifetime`` = ``timeout``)."""
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [self.host]
        r.port = self.port
        r.timeout = timeout
        r.lifetime = timeout
        r.cache = None
        return r

    def nameserver(self) -> tuple[str, int]:
        """(host, port) for code under test that takes a nameserver setting."""
        return self.host, self.port


_SIMPLE_RDATA: dict[str, Callable[[str], object]] = {
    "A": A,
    "AAAA": AAAA,
    "PTR": lambda v: PTR(normalize(v) + "."),
    "CNAME": lambda v: CNAME(normalize(v) + "."),
}


def _rrs(name: str, qtype_name: str, rdata: str) -> list[RR]:
    """RRs for one RDATA string; common types built directly (the zone parser is slow)."""
    build = _SIMPLE_RDATA.get(qtype_name)
    if build is not None:
        return [RR(rname=name + ".", rtype=getattr(QTYPE, qtype_name), rdata=build(rdata), ttl=300)]
    return list(RR.fromZone(f"{name}. 300 IN {qtype_name} {rdata}"))


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def zone_from_ptrs(ptrs: Iterable[tuple[str, str]]) -> Zone:
    """Build a zone from (ip, hostname) pairs, e.g. for the reverse-DNS benchmark."""
    zone = Zone()
    for ip, host in ptrs:
        zone.add_ptr(ip, host)
    return zone
