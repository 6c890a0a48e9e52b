"""Objects sent between dmarclens' processes with their Arrow buffers out of band.

Used by the parsing children and pool workers (``dmarclens.ingest.pool``) and
by the split parse of one big report (``dmarclens.parse.fast``).
"""
from __future__ import annotations

import pickle
from typing import Any


def send_pickled(sender: Any, obj: Any) -> None:
    """Send ``obj`` down a multiprocessing pipe with out-of-band buffers.

    Arrow data goes straight from its own memory into the pipe instead of
    being copied into one big pickle first, which for a big report would be
    the sending process's memory peak.
    """
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    sender.send(len(buffers))
    sender.send_bytes(payload)
    for buf in buffers:
        sender.send_bytes(buf.raw())


def receive_pickled(receiver: Any) -> Any:
    """The other end of ``send_pickled``."""
    count = receiver.recv()
    payload = receiver.recv_bytes()
    return pickle.loads(payload, buffers=[receiver.recv_bytes() for _ in range(count)])
