"""dmarclens' Streamlit dashboard.

``app.py`` is the entry point ``dmarclens dashboard`` runs; ``views/`` holds
one file per page (not ``pages/``, which would switch Streamlit to its
legacy multipage mode); ``ui.py`` the shared widgets (filters kept in the URL, safe
text, CSV downloads, the read-only database handle); ``figures.py`` pure
plotly builders. Every number comes from ``dmarclens.query``.
"""
