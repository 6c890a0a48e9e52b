"""Real servers started by the tests themselves: Dovecot, DNS, SMTP, webhook, Chromium, Streamlit.

The classes can be used directly (context managers) or through the pytest
fixtures in ``tests.servers.plugin``. Nothing here is assumed to be running
beforehand; everything binds to 127.0.0.1 and is stopped at teardown.
"""
