"""The ingest stage: sources → parse → store, in committed batches, and what
follows each commit.

``writer`` (the one process that writes: ``Ingestor``, ``ingest_paths``),
``parsed`` (one item's pure parse step), ``pool`` (parsing processes; a big
report parsed apart), ``mailbox`` (the IMAP runner behind ``dmarclens
fetch``), ``trust`` (does a report's mail authenticate its reporter) and
``followup`` (classification after the commit).
"""
