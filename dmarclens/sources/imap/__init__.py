"""IMAP mailboxes: the client (``client``: connect, TLS, login, fetch, move,
IDLE) and its settings (``settings``: ``[[mailboxes]]`` in the config,
credentials). The only place imapclient is imported; what gets stored and
moved is decided by ``dmarclens.ingest.mailbox``.
"""
