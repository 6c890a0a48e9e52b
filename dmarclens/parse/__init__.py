"""One report payload → a normalized ``Report``, offline and pure.

``report`` is the entry point (``parse_payload``); ``formats`` tells what a
payload is; ``stream`` is the streaming parser on the hot path and ``fast``
its entry (one process, or a big report split across several);
``reference`` is parsedmarc, the parser the streaming one is tested against
and falls back to; ``guards`` holds the hostile-input checks around both.
"""
