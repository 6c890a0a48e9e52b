"""Free-port and readiness helpers shared by every real-server fixture.

Why this exists: each fixture starts a real server on 127.0.0.1, and other
test runs may share the machine, so fixed ports would collide. We ask
the kernel for a free port (bind to port 0) and hand that number to the
server. There is a small window in which another process could grab the port;
servers that can fail that way (Dovecot) retry with fresh ports.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOCALHOST = "127.0.0.1"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """Return a port on 127.0.0.1 that is free right now.

    ``kind`` is ``socket.SOCK_STREAM`` (TCP) or ``socket.SOCK_DGRAM`` (UDP).
    """
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct free TCP ports (sockets held open together so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOCALHOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_udp_tcp_port() -> int:
    """Return a port free for both UDP and TCP (a DNS server listens on both)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOCALHOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError("could not find a port free for both UDP and TCP on 127.0.0.1")


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.2) -> bool:
    """True if a TCP connect to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.02,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until true; raise ``TimeoutError`` naming ``what`` otherwise.

    Every wait in the fixtures is bounded so a broken server fails the test
    with a message instead of hanging CI. ``on_timeout`` may add diagnostics
    (for example the tail of a server log) to the error message.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            extra = on_timeout() if on_timeout else ""
            raise TimeoutError(
                f"timed out after {timeout:.1f}s waiting for {what}" + (f"\n{extra}" if extra else "")
            )
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = 10.0, host: str = LOCALHOST, what: str | None = None) -> None:
    """Wait until a TCP connect to host:port succeeds."""
    wait_until(lambda: port_open(port, host), timeout, what or f"TCP port {host}:{port}")
