"""What a committed ingest runs next, on the connection it committed with.

``dmarclens ingest``, ``dmarclens demo`` and ``dmarclens fetch`` (every
``--watch`` wake-up too) hand ``classify_hook`` to the writer as its
``after_commit``: traffic classes and lookalike identifiers for what was just
stored, SQL only, no DNS. It runs after the commit, so a failure here never
loses a report; it is one warning line, the run's exit code stays the
ingest's, and the next run classifies the rows left over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dmarclens.core.errors import DmarcLensError

if TYPE_CHECKING:
    import duckdb

    from dmarclens.core.config import Settings


def classify_hook(settings: Settings, warn: Callable[[str], None]) -> Callable[[duckdb.DuckDBPyConnection], None]:
    """Classification as an ``Ingestor.after_commit`` hook.

    Incremental (only the rows the new records can change; docs/identity.md),
    one transaction, bounded in memory like the ingest's writes (a first full
    pass over a big database gets more: ``store.db.bounded``). ``warn`` gets
    the one line saying why classes were not updated; the CLI prints it even
    under ``-q``, since the run's result stands but a person should know.
    """
    def hook(con: duckdb.DuckDBPyConnection) -> None:
        # Imported here: the ingest forks its big-report child before this runs.
        from dmarclens.enrich import classify
        from dmarclens.store.db import bounded

        try:
            rules = classify.rules_from_settings(settings.raw)
            bounded(con, lambda: classify.update_on(con, settings.db, rules, settings.domains, incremental=True),
                    what="classifying traffic")
        except DmarcLensError as e:
            warn(f"traffic classes not updated: {e}")

    return hook
