"""Where raw reports come from: files, folders, zip archives, saved mail
(.eml, mbox, Maildir) and IMAP mailboxes (``sources.imap``). A source turns
what it reads into ``RawItem``s (bytes plus where they came from), and checks
a report mail's own authentication (``mailauth``). No DuckDB here.
"""
