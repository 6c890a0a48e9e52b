"""The installed dmarclens version: recorded with every ingest and detection run."""

__version__ = "0.1.0"
