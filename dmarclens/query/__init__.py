"""The one query layer the dashboard, the CLI and analysts share.

Each function takes an open connection plus plain filter values and returns
a DataFrame, a dict or a scalar, so the same tested SQL answers the
dashboard's pages (``traffic``, ``reports``, ``posture``, ``anomalies``), the
CLI and notebooks. ``api`` holds ``dmarclens.connect`` and
``dmarclens.load_dataframe``; ``saved`` the hunting-query library (its SQL
in ``sql/``); ``export`` the Parquet lake; ``output`` the CLI's table, CSV and
JSON rendering.
"""
