"""Reverse DNS from code that already runs an event loop (a notebook, a host app)."""

from __future__ import annotations

import asyncio
import threading

from dmarclens.enrich.rdns import resolve_many


def test_resolve_many_works_inside_a_running_event_loop(dns_server) -> None:
    dns_server.zone.add_host("mail.example.net", "192.0.2.25")

    async def caller() -> list:
        # asyncio.run() would refuse here; resolve_many must not.
        return resolve_many(["192.0.2.25"], nameservers=[f"127.0.0.1:{dns_server.port}"], timeout=1.0)

    # Run the caller on a fresh thread: the test runner's own thread may already
    # host a loop (Playwright's sync API), and asyncio.run() there would refuse.
    out: list = []
    worker = threading.Thread(target=lambda: out.append(asyncio.run(caller())))
    worker.start()
    worker.join(timeout=30)
    results = out[0]
    assert [(r.ip, r.status, r.reverse_dns, r.fcrdns) for r in results] == [
        ("192.0.2.25", "ok", "mail.example.net", True)
    ]
