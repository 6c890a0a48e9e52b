"""A tour of dmarclens for analysts, runnable top to bottom.

    python docs/analyst_example.py reports.duckdb [OUTPUT_FOLDER]

It works on a snapshot (a private copy), so it never blocks a scheduled
`dmarclens ingest`, and it only reads. A test runs this file on generated
data, so every step here is known to work with the current schema.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

import dmarclens

db = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("dmarclens.duckdb")
out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="dmarclens-tour-"))
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 12)

# 1. Open a snapshot: a copy of the file taken in a second, then yours for as long as you like.
con = dmarclens.connect(db, snapshot=True)

# 2. The stable views are the contract; their comments are the documentation.
views = con.execute(
    "SELECT view_name, comment FROM duckdb_views() WHERE comment LIKE 'Stable view:%' ORDER BY 1"
).df()
print("== stable views")
print(views.to_string(index=False))

# 3. Where does each domain's mail come from, and how much of it passes?
sources = con.execute(
    """SELECT domain, source_ip, service_name, country, messages, round(pass_rate, 3) AS pass_rate,
              first_seen, last_seen
       FROM v_sources ORDER BY messages DESC LIMIT 10"""
).df()
print("\n== top sources")
print(sources.to_string(index=False))

# 4. Saved hunting queries straight into pandas (parameters are bound, never pasted into SQL).
new_sources = dmarclens.load_dataframe("new_passing_sources", con=con, days=14)
print("\n== new sources whose mail passes DMARC (last 14 days)")
print(new_sources[["domain", "source_ip", "service_name", "first_seen", "passed"]].to_string(index=False))

spikes = dmarclens.load_dataframe("volume_above_p95", con=con)
print("\n== sources above their 28-day p95 on the newest day")
print(spikes[["domain", "source_ip", "service_name", "messages", "p95", "ratio"]].to_string(index=False))

# 5. Follow a lead with your own SQL across views: which reports saw the first new source?
if not new_sources.empty:
    ip = new_sources.iloc[0]["source_ip"]
    seen_by = con.execute(
        """SELECT v.reporter, v.begin_ts::DATE AS day, sum(r.count) AS messages
           FROM v_records r JOIN v_reports v USING (report_key)
           WHERE r.source_ip = ? GROUP BY ALL ORDER BY day""",
        [ip],
    ).df()
    print(f"\n== reports that saw {ip}")
    print(seen_by.to_string(index=False))

# 6. Hand the result to someone else.
target = out_dir / "new_passing_sources.parquet"
new_sources.to_parquet(target)
print(f"\nwrote {target} ({len(new_sources)} rows)")
con.close()
