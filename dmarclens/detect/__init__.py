"""Anomaly detection over stored aggregate reports.

Why a package of its own: detection is the reason dmarclens exists (abuse that
*passes* DMARC through the domain's own, authorized pipelines), and it has
three separable jobs that are easier to test apart:

* ``features`` -- SQL inside DuckDB: daily series per domain x identity
  (provider/service, /24 or /48 range, envelope-from, DKIM signing domain and
  selector, header-from, reporting organisation, envelope-to), with
  weekday-aware, per-reporter robust baselines;
* ``rules`` -- pure functions: thresholds, severity and the plain-language
  explanation of each finding;
* ``contract`` -- the optional ``senders.toml`` expected-sender contract;
* ``run`` -- I/O at the edges: open the database, build features, score,
  store anomalies with stable ids (``detect_and_store``).

Nothing here imports click, streamlit or imapclient.
"""
