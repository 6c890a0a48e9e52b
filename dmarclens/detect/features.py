"""Daily series per domain x identity, built in SQL inside DuckDB.

Why SQL: a year of reports for fifty domains is about ten million record rows;
DuckDB folds them into a few hundred thousand daily aggregates in a couple of
seconds, and computes the rolling robust baselines (median and MAD over
windows) with window functions. Python only ever sees the aggregates.

The vocabulary:

* **unit rows** (``det_u``): records grouped by policy domain, day, reporting
  organisation, report, *service* (``ip_info.service_name``, else the AS
  name), /24 or /48 range, envelope-from, header-from, envelope-to and the DKIM
  signature that matters (the passing one aligned with the domain, else the
  first aligned one, else the first), with message counts;
* **relayed** mail: copies of the domain's own mail re-sent by a forwarder or a
  mailing list. It fails aligned SPF, and either the receiver says so (override
  reason ``forwarded``/``mailing_list``/``trusted_forwarder``, or
  ``local_policy`` with an ARC comment) or it carries the domain's DKIM
  signature from a selector whose *home* is another service (the service that
  sends most of the mail passing with that selector). Relayed mail is kept out
  of novelty, volume and spoofing series: heavy forwarding is not abuse;
* **direct** mail: everything else; **authorized** services: a service that
  sent direct DMARC-passing mail on at least 3 earlier days (or that the
  ``senders.toml`` contract or an acknowledgement allows);
* **novelty day** (``nday``): for a report spanning more than 36 hours the
  last day it covers, else the record's day. The day split spreads a weekly
  report's counts evenly over its days, so without this a source first seen
  on Saturday would look first seen on the Monday before;
* **presence**: the days on which a reporting organisation reported on a
  domain. Volume baselines are kept per reporter and only summed over the
  reporters present on the judged day, so a late, skipped or multi-day report
  changes the expectation exactly as much as it changes the observation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from dmarclens.store.sql import range_expr, trusted_report_keys_sql

if TYPE_CHECKING:
    import duckdb
    import pandas as pd


@dataclass(frozen=True)
class Params:
    """Detection windows and thresholds; each one is explained in docs/detection.md."""

    warmup_days: int = 14  # days of data a domain needs before any day is judged
    base_window: int = 28  # reporter-present days in the rolling baseline
    weekday_weeks: int = 8  # same-weekday values in the weekday baseline
    min_history: int = 7  # reporter-present days a per-reporter series needs
    newness_days: int = 7  # a new identity's episode covers its first days
    authorized_days: int = 3  # earlier days of direct passing mail that make a service authorized
    authorized_messages: int = 30
    dormant_days: int = 30  # silence that makes a returning source "revived"
    # volume spikes (passing mail of authorized services)
    spike_z: float = 5.0
    spike_ratio: float = 1.5
    spike_min_excess: float = 40.0
    spike_over_max: float = 1.5  # ... and this many times the largest same weekday of the last 8 weeks
    sustain_days: int = 3  # or this many days in a row clearly above, significant together
    # spoofing bursts (failing mail from services that are not authorized)
    spoof_z: float = 6.0
    spoof_ratio: float = 3.0
    spoof_min_excess: float = 150.0
    # authentication regressions
    regress_hist_rate: float = 0.9
    regress_max_rate: float = 0.5
    regress_min_messages: int = 20
    # novelty thresholds
    new_source_min_pass: int = 10
    range_min_pass: int = 10
    identifier_min_pass: int = 10
    audience_min_pass: int = 50
    envelope_to_min_new: int = 5
    dormant_min_messages: int = 20
    # forged-report defence: leave out reports whose mail failed authentication (docs/security.md)
    ignore_unverified: bool = False


@dataclass
class Features:
    """What the rules need, as small DataFrames (one row per domain x identity x day)."""

    eval_start: date | None
    eval_end: date | None
    data_first: date | None
    data_last: date | None
    domains: pd.DataFrame  # domain, first_day, last_day, policy_p, daily_median
    services: pd.DataFrame  # per domain, service, day: volumes + history flags
    volume: pd.DataFrame  # per domain, service, day: obs/exp/sigma of direct passing mail
    spoof: pd.DataFrame  # per domain, day: obs/exp/sigma of unauthorized direct failing mail
    ranges: pd.DataFrame  # new /24 or /48 ranges in direct passing mail
    identifiers: pd.DataFrame  # new envelope-from / DKIM d=+s= / header-from in direct passing mail
    regression: pd.DataFrame  # per domain, service, envelope-from, day: pass rate now vs history
    audience_org: pd.DataFrame  # first day a reporter reports an established service
    audience_to: pd.DataFrame  # per domain, service, day: never-seen envelope_to domains
    lookalikes: pd.DataFrame  # identifiers not aligned with the domain, first days
    contract_rows: pd.DataFrame  # per domain, day, service, env_from, dkim: direct passing mail
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.eval_start is None


FORWARD_REASON = (
    "(x.type IN ('forwarded', 'mailing_list', 'trusted_forwarder') "
    "OR (x.type = 'local_policy' AND lower(coalesce(x.comment, '')) LIKE '%arc%'))"
)


def _aligned_sql(dom: str, col: str) -> str:
    """Relaxed alignment of a DKIM/SPF domain with the policy domain (same name or parent/child)."""
    return f"({col} = {dom} OR ends_with({col}, '.' || {dom}) OR ends_with({dom}, '.' || {col}))"


def unit_sql(where: str, *, with_ip: bool = False) -> str:
    """SELECT producing raw unit rows from records: the per-record logic, kept cheap.

    Written for ten million rows: the DKIM result list is reduced to a hash
    (``dkh``) and interpreted once per distinct list in ``det_dk`` (a domain
    sees a few hundred distinct lists, not millions), and parse already
    stored domains in lower case. Ranges and envelope_to are left out here
    (``passing_detail_sql`` keeps them for passing mail, the only mail whose
    range or audience matters); with ``with_ip`` (evidence for the days of a
    finding) IPs, report keys, ranges and envelope_to are kept.
    """
    ip_cols = ("r.source_ip, r.report_key, coalesce(i.ip_range, r.source_ip) AS ip_range, "
               "r.envelope_to AS env_to, " if with_ip else "")
    return f"""
    SELECT p.domain, r.day, CASE WHEN p.span_seconds > 129600 THEN p.last_day ELSE r.day END AS nday,
           p.span_seconds > 129600 AS multi, p.org, {ip_cols}
           coalesce(i.service, 'Unknown network') AS service,
           coalesce(r.envelope_from, r.spf[1].domain, '') AS env_from,
           coalesce(r.header_from, p.domain) AS header_from,
           hash(r.dkim) AS dkh,
           {FORWARD_SQL} AS fwd_reason,
           r.dmarc_pass, r.spf_aligned, r.dkim_aligned,
           sum(r.count)::BIGINT AS msgs
    FROM records r JOIN det_rep p USING (report_key) LEFT JOIN det_ip i ON i.ip = r.source_ip
    WHERE {where}
    GROUP BY ALL
    """


FORWARD_SQL = (
    "CASE WHEN len(coalesce(r.override_reasons, [])) = 0 THEN FALSE "
    f"ELSE len(list_filter(r.override_reasons, lambda x: {FORWARD_REASON})) > 0 END"
)


def _passing_rows_sql(where: str) -> str:
    """Passing records with the columns the range and recipient questions need."""
    return f"""
        SELECT p.domain, r.day, CASE WHEN p.span_seconds > 129600 THEN p.last_day ELSE r.day END AS nday,
               coalesce(i.service, 'Unknown network') AS service,
               coalesce(i.ip_range, r.source_ip) AS ip_range, r.envelope_to AS env_to,
               hash(r.dkim) AS dkh, {FORWARD_SQL} AS fwd_reason, r.spf_aligned, r.count AS n
        FROM records r JOIN det_rep p USING (report_key) LEFT JOIN det_ip i ON i.ip = r.source_ip
        WHERE r.dmarc_pass AND {where}
    """


def passing_detail_sql(where: str) -> str:
    """Passing mail in one scan, two grouping sets (no reporter column: judged over all reporters).

    * per range, *without* the day: the first day each /24 or /48 sent
      passing mail (``first_nday``) -- all history collapses to a few
      thousand rows; the days of the few ranges that are new are read again
      afterwards (``range_days_sql``);
    * per envelope_to domain and day (only one receiver family fills it).
    """
    return f"""
    SELECT domain, day, nday, service, ip_range, env_to, dkh, fwd_reason, spf_aligned,
           sum(n)::BIGINT AS msgs, min(nday) AS first_nday
    FROM ({_passing_rows_sql(where)})
    GROUP BY GROUPING SETS ((domain, service, ip_range, dkh, fwd_reason, spf_aligned),
                            (domain, day, nday, service, env_to, dkh, fwd_reason, spf_aligned))
    """


def range_days_sql(where: str) -> str:
    """Daily passing mail of the candidate new ranges (``det_rcand``), over their first days."""
    return f"""
    SELECT domain, day, nday, service, ip_range, NULL::VARCHAR AS env_to, dkh, fwd_reason, spf_aligned,
           sum(n)::BIGINT AS msgs, NULL::DATE AS first_nday
    FROM ({_passing_rows_sql(where + " AND r.source_ip IN (SELECT ip FROM det_rcand_ip)")}) x
    SEMI JOIN det_rcand c ON c.domain = x.domain AND c.ip_range = x.ip_range
                         AND x.day BETWEEN c.first_day AND c.first_day + c.span
    GROUP BY ALL
    """


def dkim_dictionary_sql(where: str) -> str:
    """One row per policy domain and distinct DKIM result list: the signature that matters.

    ``sig``: the passing signature aligned with the domain, else the first
    aligned one, else the first; ``has_own``: any signature aligned with the
    domain; ``other_pass``: a passing signature of another domain (a mailing
    list re-signing what it modified).
    """
    aligned = _aligned_sql("d.domain", "x.domain")
    return f"""
    WITH d AS (
        SELECT p.domain, hash(r.dkim) AS dkh, any_value(r.dkim) AS dk
        FROM records r JOIN det_rep p USING (report_key) WHERE {where} GROUP BY ALL
    ), o AS (
        SELECT d.*, list_filter(dk, lambda x: {aligned}) AS own,
               len(list_filter(dk, lambda x: x.result = 'pass' AND NOT {aligned})) > 0 AS other_pass
        FROM d
    )
    SELECT domain, dkh, coalesce(list_filter(own, lambda x: x.result = 'pass')[1], own[1], dk[1]) AS sig,
           len(own) > 0 AS has_own, other_pass
    FROM o
    """


def classified_sql(src: str) -> str:
    """Unit rows with their DKIM signature and the relayed flag (see the module docstring)."""
    return f"""
    SELECT u.* EXCLUDE (dkh),
           k.sig.domain AS dkim_domain, coalesce(k.sig.selector, '') AS dkim_selector,
           coalesce(k.sig.result, 'none') AS dkim_result,
           coalesce(k.has_own, FALSE) AS has_own, coalesce(k.other_pass, FALSE) AS other_pass,
           (NOT u.spf_aligned AND (
               u.fwd_reason
               OR (coalesce(k.has_own, FALSE) AND h.home IS NOT NULL AND h.home <> u.service
                   AND (k.sig.result = 'pass' OR coalesce(k.other_pass, FALSE)))
           )) AS relayed
    FROM ({src}) u
    LEFT JOIN det_dk k ON k.domain = u.domain AND k.dkh = u.dkh
    LEFT JOIN det_home h ON h.domain = u.domain AND h.dkim_domain = k.sig.domain
                        AND h.dkim_selector = coalesce(k.sig.selector, '')
    """


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


def prepare(con: duckdb.DuckDBPyConnection, extra_authorized: list[tuple[str, str]] | None = None, *,
            ignore_unverified: bool = False) -> None:
    """Temp tables every later query joins: IP facts, de-duplicated reports, extra authorizations.

    ``ignore_unverified`` keeps reports whose mail failed authentication out of
    det_rep, and so out of every unit row (a forged report must not steer).
    """
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE det_ip AS
            SELECT ip, coalesce(nullif(service_name, ''), nullif(as_name, ''), 'Unknown network') AS service,
                   asn, base_domain, {range_expr('ip')} AS ip_range
            FROM ip_info"""
    )
    # A report re-sent under a new report id (same reporter, domain, interval and
    # counts) is the same report; ingest only removes same-id copies.
    trusted = trusted_report_keys_sql(con, ignore_unverified=ignore_unverified)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE det_rep AS
           SELECT report_key, org_name AS org, domain, report_id, p AS policy_p, begin_ts, span_seconds,
                  DATE '1970-01-01' + CAST(floor((epoch(end_ts) - 1) / 86400) AS INTEGER) AS last_day
           FROM reports
           WHERE report_key IN ({trusted})
           QUALIFY row_number() OVER (
               PARTITION BY lower(org_name), domain, begin_ts, end_ts, message_count, record_count
               ORDER BY ingested_at, report_key) = 1"""
    )
    con.execute("CREATE OR REPLACE TEMP TABLE det_auth (domain VARCHAR, service VARCHAR)")
    if extra_authorized:
        con.executemany("INSERT INTO det_auth VALUES (?, ?)", [list(x) for x in extra_authorized])


def build(
    con: duckdb.DuckDBPyConnection,
    since: date | None = None,
    until: date | None = None,
    params: Params | None = None,
    extra_authorized: list[tuple[str, str]] | None = None,
    authorize_fn: Callable[[pd.DataFrame], list[tuple[str, str]]] | None = None,
    contract_rows: bool = True,
) -> Features:
    """All feature frames for judging the days in [since, until] (defaults: all judgeable days)."""
    import pandas as pd

    p = params or Params()
    con.execute("PRAGMA disable_progress_bar")
    prepare(con, extra_authorized, ignore_unverified=p.ignore_unverified)
    first, last = con.execute("SELECT min(day), max(day) FROM records").fetchone() or (None, None)
    if first is None:
        empty = pd.DataFrame()
        return Features(None, None, None, None, *([empty] * 11))
    eval_start = since or (first + timedelta(days=p.warmup_days))
    eval_end = min(until, last) if until else last
    upto = eval_end
    if eval_start > eval_end:
        empty = pd.DataFrame()
        return Features(None, None, first, last, *([empty] * 11))

    con.execute(f"CREATE OR REPLACE TEMP TABLE det_u AS {unit_sql('r.day <= ?')}", [upto])
    con.execute(f"CREATE OR REPLACE TEMP TABLE det_dk AS {dkim_dictionary_sql('r.day <= ?')}", [upto])
    # Home service of each DKIM selector: who sends most mail passing with it.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE det_home AS
           SELECT domain, dkim_domain, dkim_selector, arg_max(service, m) AS home
           FROM (SELECT u.domain, k.sig.domain AS dkim_domain, coalesce(k.sig.selector, '') AS dkim_selector,
                        u.service, sum(u.msgs) AS m
                 FROM det_u u JOIN det_dk k ON k.domain = u.domain AND k.dkh = u.dkh
                 WHERE k.has_own AND k.sig.result = 'pass' GROUP BY ALL)
           GROUP BY ALL"""
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE det_x AS {classified_sql('SELECT * FROM det_u')}")
    con.execute("DROP TABLE det_u")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE det_v AS
            SELECT * FROM ({classified_sql(passing_detail_sql('r.day <= ?'))}) WHERE NOT relayed""",
        [upto],
    )
    # First day each range sent direct passing mail; the new ones get their days read again.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE det_rfirst AS
           SELECT domain, ip_range, min(first_nday) AS first_day FROM det_v
           WHERE ip_range IS NOT NULL AND day IS NULL GROUP BY ALL"""
    )
    con.execute("DELETE FROM det_v WHERE day IS NULL")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE det_rcand AS
            SELECT domain, ip_range, first_day, {p.newness_days - 1} AS span FROM det_rfirst
            WHERE first_day BETWEEN ? AND ?""",
        [eval_start, eval_end],
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE det_rcand_ip AS
           SELECT DISTINCT i.ip FROM det_ip i JOIN (SELECT DISTINCT ip_range FROM det_rcand) c USING (ip_range)"""
    )
    if con.execute("SELECT count(*) FROM det_rcand").fetchall()[0][0]:
        con.execute(
            f"""INSERT INTO det_v SELECT * FROM ({classified_sql(range_days_sql('r.day <= ?'))}) WHERE NOT relayed""",
            [upto],
        )
    if authorize_fn is not None:
        pairs = authorize_fn(_df(con, "SELECT DISTINCT domain, service FROM det_x"))
        if pairs:
            con.executemany("INSERT INTO det_auth VALUES (?, ?)", [list(x) for x in pairs])
    # A reporter's day is "smeared" when a multi-day report covers it: the day split spread
    # that report's counts evenly, so the day's value says nothing about that day.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE det_pres AS
           SELECT domain, org, day, bool_or(multi) AS smeared FROM det_x GROUP BY ALL"""
    )

    # Per service and day, with history flags computed only from earlier days.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE det_svc AS
        WITH d AS (
            SELECT domain, service, day,
                   sum(msgs) AS msgs,
                   coalesce(sum(msgs) FILTER (WHERE dmarc_pass), 0) AS passed,
                   coalesce(sum(msgs) FILTER (WHERE NOT relayed), 0) AS direct,
                   coalesce(sum(msgs) FILTER (WHERE NOT relayed AND dmarc_pass), 0) AS direct_pass,
                   coalesce(sum(msgs) FILTER (WHERE NOT relayed AND NOT dmarc_pass), 0) AS direct_fail,
                   coalesce(sum(msgs) FILTER (WHERE relayed), 0) AS relayed
            FROM det_x GROUP BY ALL
        ), w AS (
            SELECT d.*,
                   coalesce(sum(CASE WHEN direct_pass > 0 THEN 1 ELSE 0 END) OVER before, 0) AS pass_days_before,
                   coalesce(sum(direct_pass) OVER before, 0) AS pass_before,
                   coalesce(sum(direct) OVER before, 0) AS direct_before,
                   coalesce(sum(CASE WHEN direct > 0 THEN 1 ELSE 0 END) OVER before, 0) AS direct_days_before
            FROM d
            WINDOW before AS (PARTITION BY domain, service ORDER BY day
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ), sa AS (
            SELECT service, mode(asn) AS asn FROM det_ip GROUP BY ALL
        ), nov AS (
            SELECT domain, service, min(nday) AS first_day FROM det_x GROUP BY ALL
        ), act AS (
            SELECT domain, service, day,
                   lag(day) OVER (PARTITION BY domain, service ORDER BY day) AS prev_direct_day
            FROM d WHERE direct > 0
        )
        SELECT w.*, sa.asn, nov.first_day, act.prev_direct_day,
               (w.pass_days_before >= {p.authorized_days} AND w.pass_before >= {p.authorized_messages}
                AND w.pass_before >= 0.5 * w.direct_before)
               OR EXISTS (SELECT 1 FROM det_auth a WHERE a.domain = w.domain AND a.service = w.service)
                   AS authorized
        FROM w JOIN nov USING (domain, service) LEFT JOIN act USING (domain, service, day)
        LEFT JOIN sa USING (service)"""
    )
    services = _df(con, "SELECT * FROM det_svc WHERE day BETWEEN ? AND ?", [eval_start, eval_end])

    domains = _df(
        con,
        """WITH t AS (SELECT domain, day, sum(msgs) AS m FROM det_x GROUP BY ALL)
           SELECT t.domain, min(day) AS first_day, max(day) AS last_day, median(m) AS daily_median,
                  (SELECT arg_max(policy_p, begin_ts) FROM det_rep r WHERE r.domain = t.domain) AS policy_p
           FROM t GROUP BY t.domain""",
    )

    volume = _volume(con, p, eval_start, eval_end)
    spoof = _spoof(con, p, eval_start, eval_end)
    ranges = _ranges(con, p, eval_start, eval_end)
    identifiers = _identifiers(con, p, eval_start, eval_end)
    regression = _regression(con, p, eval_start, eval_end)
    audience_org, audience_to = _audience(con, p, eval_start, eval_end)
    lookalikes = _lookalikes(con, p, eval_start, eval_end)
    contract = pd.DataFrame() if not contract_rows else _df(
        con,
        """SELECT domain, day, service, env_from, dkim_domain, dkim_selector, header_from,
                  sum(msgs) AS msgs
           FROM det_x WHERE NOT relayed AND dmarc_pass AND day BETWEEN ? AND ?
           GROUP BY ALL""",
        [eval_start, eval_end],
    )
    return Features(
        eval_start, eval_end, first, last, domains, services, volume, spoof, ranges, identifiers,
        regression, audience_org, audience_to, lookalikes, contract,
    )


def _baseline_sql(series: str, part: str, p: Params) -> str:
    """Per-reporter rolling baselines for a dense series ``series`` (columns: {part}, org, day, x).

    Weekday-aware in two steps, so one window pass does the work:

    1. a weekday profile per series: the median of each weekday divided by the
       median of all days (clipped to 0.05..20; 1 until a weekday has 4
       values). A business sends little at weekends, a newsletter goes out on
       Tuesdays: both become part of what is expected;
    2. on the de-seasonalised values (x / profile) the median, interquartile
       range and maximum of the last ``base_window`` reporter-present days.

    Expected ``e`` = median x profile of the judged weekday. Spread ``s`` =
    IQR / 1.349 x profile (a robust standard deviation), floored at 10 % of
    ``e`` and at its square root (Poisson noise), so a flat history does not
    make every wobble significant. ``hmax`` = the de-seasonalised maximum of
    the days 7 to ``base_window`` calendar days back x profile: a weekly
    campaign is its own precedent from its second week, while the days of an
    ongoing burst (up to a week) do not excuse each other.

    Values of "smeared" reporter-days (covered by a multi-day report) are
    NULL: they neither feed the baseline nor get judged.
    """
    keys = f"{part}, org"
    return f"""
    WITH prof AS (
        SELECT {keys}, dayofweek(day) AS wd, median(x) AS m_wd, count(x) AS n_wd
        FROM {series} GROUP BY ALL
    ), lvl AS (
        SELECT {keys}, median(x) AS m_all FROM {series} GROUP BY ALL
    ), fac AS (
        SELECT prof.*, CASE WHEN n_wd >= 4 AND m_all > 0 THEN least(greatest(m_wd / m_all, 0.05), 20.0)
                            ELSE 1.0 END AS f
        FROM prof JOIN lvl USING ({keys})
    ), d AS (
        SELECT v.*, fac.f, v.x / fac.f AS xd
        FROM {series} v JOIN fac ON {' AND '.join(f"fac.{k.strip()} = v.{k.strip()}" for k in keys.split(','))}
                              AND fac.wd = dayofweek(v.day)
    ), w AS (
        SELECT {keys}, day, x, f,
               quantile_cont(xd, [0.25, 0.5, 0.75]) OVER w28 AS q, count(xd) OVER w28 AS n28,
               max(xd) OVER wold AS mx
        FROM d
        WINDOW w28 AS (PARTITION BY {keys} ORDER BY day ROWS BETWEEN {p.base_window} PRECEDING AND 1 PRECEDING),
               wold AS (PARTITION BY {keys} ORDER BY day
                        RANGE BETWEEN INTERVAL {p.base_window} DAYS PRECEDING AND INTERVAL 7 DAYS PRECEDING)
    )
    SELECT {keys}, day, x, n28, q[2] * f AS e,
           greatest((q[3] - q[1]) / 1.349 * f, 0.10 * q[2] * f, sqrt(q[2] * f), 1.0) AS s,
           coalesce(mx, 0) * f AS hmax
    FROM w
    """


def _volume(con: duckdb.DuckDBPyConnection, p: Params, start: date, end: date) -> pd.DataFrame:
    """Direct DMARC-passing mail per authorized service: observed vs per-reporter baseline."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE det_vol_dense AS
        WITH so AS (
            SELECT domain, service, org, day,
                   sum(msgs) FILTER (WHERE NOT relayed AND dmarc_pass) AS x
            FROM det_x GROUP BY ALL
        ), elig AS (
            SELECT domain, service, org, min(day) AS f FROM so WHERE x > 0
            GROUP BY ALL HAVING count(*) >= {p.min_history}
        )
        SELECT e.domain, e.service, e.org, pr.day,
               CASE WHEN pr.smeared THEN NULL ELSE coalesce(so.x, 0) END::DOUBLE AS x
        FROM elig e
        JOIN det_pres pr ON pr.domain = e.domain AND pr.org = e.org AND pr.day >= e.f
        LEFT JOIN so ON so.domain = e.domain AND so.service = e.service AND so.org = e.org AND so.day = pr.day"""
    )
    return _df(
        con,
        f"""WITH b AS ({_baseline_sql('det_vol_dense', 'domain, service', p)})
            SELECT b.domain, b.service, b.day,
                   sum(x) AS obs, sum(e) AS exp, sqrt(sum(s * s)) AS sigma, sum(hmax) AS hmax,
                   count(*) AS orgs, list(org ORDER BY org) AS org_list
            FROM b
            WHERE b.day BETWEEN ? AND ? AND n28 >= {p.min_history} AND x IS NOT NULL
            GROUP BY ALL""",
        [start, end],
    )


def _spoof(con: duckdb.DuckDBPyConnection, p: Params, start: date, end: date) -> pd.DataFrame:
    """Direct failing mail from services not authorized on that day, per reporter, vs baseline."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE det_spoof_dense AS
        WITH so AS (
            SELECT v.domain, v.org, v.day, sum(v.msgs) AS x
            FROM det_x v JOIN det_svc s USING (domain, service, day)
            WHERE NOT v.relayed AND NOT v.dmarc_pass AND NOT s.authorized
            GROUP BY ALL
        ), elig AS (
            SELECT domain, org, min(day) AS f FROM det_pres GROUP BY ALL HAVING count(*) >= {p.min_history}
        )
        SELECT e.domain, e.org, pr.day, CASE WHEN pr.smeared THEN NULL ELSE coalesce(so.x, 0) END::DOUBLE AS x
        FROM elig e
        JOIN det_pres pr ON pr.domain = e.domain AND pr.org = e.org
        LEFT JOIN so ON so.domain = e.domain AND so.org = e.org AND so.day = pr.day"""
    )
    return _df(
        con,
        f"""WITH b AS ({_baseline_sql('det_spoof_dense', 'domain', p)})
            SELECT domain, day, sum(x) AS obs, sum(e) AS exp, sqrt(sum(s * s)) AS sigma, sum(hmax) AS hmax,
                   count(*) AS orgs
            FROM b WHERE day BETWEEN ? AND ? AND n28 >= {p.min_history} AND x IS NOT NULL
            GROUP BY ALL""",
        [start, end],
    )


def _ranges(con: duckdb.DuckDBPyConnection, p: Params, start: date, end: date) -> pd.DataFrame:
    """/24 and /48 ranges sending direct passing mail for the first time, over their first days."""
    return _df(
        con,
        f"""WITH r AS (
                SELECT domain, service, ip_range, day, sum(msgs) AS dp, sum(msgs) AS direct,
                       coalesce(sum(msgs) FILTER (WHERE spf_aligned), 0) AS dp_spf
                FROM det_v WHERE ip_range IS NOT NULL GROUP BY ALL
            ), f AS (SELECT domain, ip_range, first_day FROM det_rfirst)
            SELECT r.domain, r.service, r.ip_range, r.day, f.first_day,
                   coalesce(r.dp, 0) AS dp, coalesce(r.direct, 0) AS direct, coalesce(r.dp_spf, 0) AS dp_spf,
                   s.authorized AS service_authorized, s.first_day AS service_first_day
            FROM r JOIN f USING (domain, ip_range)
            LEFT JOIN det_svc s ON s.domain = r.domain AND s.service = r.service AND s.day = f.first_day
            WHERE f.first_day BETWEEN ? AND ?
              AND r.day BETWEEN f.first_day AND f.first_day + {p.newness_days - 1}
              AND r.day <= ?""",
        [start, end, end],
    )


def _identifiers(con: duckdb.DuckDBPyConnection, p: Params, start: date, end: date) -> pd.DataFrame:
    """Envelope-from domains, DKIM d=/s= pairs and header-from names new in direct passing mail."""
    return _df(
        con,
        f"""WITH x AS (
                SELECT domain, day, nday, service, 'envelope_from' AS typ, env_from AS val, msgs
                FROM det_x WHERE NOT relayed AND dmarc_pass AND env_from <> ''
                UNION ALL
                SELECT domain, day, nday, service, 'dkim', dkim_domain || ':' || dkim_selector, msgs
                FROM det_x WHERE NOT relayed AND dmarc_pass AND dkim_result = 'pass' AND dkim_domain IS NOT NULL
                UNION ALL
                SELECT domain, day, nday, service, 'header_from', header_from, msgs
                FROM det_x WHERE NOT relayed AND dmarc_pass
            ), d AS (
                SELECT domain, typ, val, service, day, sum(msgs) AS dp FROM x GROUP BY ALL
            ), f AS (
                SELECT domain, typ, val, min(nday) AS first_day FROM x GROUP BY ALL
            )
            SELECT d.domain, d.typ, d.val, d.service, d.day, d.dp, f.first_day,
                   s.authorized AS service_authorized, s.first_day AS service_first_day
            FROM d JOIN f USING (domain, typ, val)
            LEFT JOIN det_svc s ON s.domain = d.domain AND s.service = d.service AND s.day = f.first_day
            WHERE f.first_day BETWEEN ? AND ?
              AND d.day BETWEEN f.first_day AND f.first_day + {p.newness_days - 1} AND d.day <= ?""",
        [start, end, end],
    )


def _regression(con: duckdb.DuckDBPyConnection, p: Params, start: date, end: date) -> pd.DataFrame:
    """Pass rates per service and envelope-from: the judged day vs its previous active days.

    Only services that were authorized at some point can regress, which
    keeps the (large, noisy) forged traffic out of the windows.
    """
    return _df(
        con,
        f"""WITH svc AS (SELECT DISTINCT domain, service FROM det_svc WHERE authorized),
            d AS (
                SELECT v.domain, v.service, v.env_from, v.day,
                       sum(v.msgs) AS msgs,
                       coalesce(sum(v.msgs) FILTER (WHERE v.dmarc_pass), 0) AS passed,
                       coalesce(sum(v.msgs) FILTER (WHERE v.dkim_aligned), 0) AS dkim_ok,
                       coalesce(sum(v.msgs) FILTER (WHERE v.spf_aligned), 0) AS spf_ok
                FROM det_x v SEMI JOIN svc ON svc.domain = v.domain AND svc.service = v.service
                GROUP BY ALL
            ), elig AS (
                SELECT domain, service, env_from FROM d GROUP BY ALL
                HAVING count(*) > {p.min_history} AND sum(passed) >= 0.5 * sum(msgs)
                   AND max(day) >= ?::DATE AND max(msgs - passed) >= {p.regress_min_messages}
            ), w AS (
                SELECT d.*,
                       sum(msgs) OVER h AS h_msgs, sum(passed) OVER h AS h_passed,
                       sum(dkim_ok) OVER h AS h_dkim, sum(spf_ok) OVER h AS h_spf,
                       count(*) OVER h AS h_days, median(msgs) OVER h AS h_median,
                       median(passed / msgs) OVER h AS h_rate
                FROM d SEMI JOIN elig USING (domain, service, env_from)
                WINDOW h AS (PARTITION BY domain, service, env_from ORDER BY day
                             ROWS BETWEEN {p.base_window} PRECEDING AND 1 PRECEDING)
            )
            SELECT * FROM w
            WHERE day BETWEEN ? AND ? AND h_days >= {p.min_history}
              AND h_rate >= {p.regress_hist_rate}
              AND msgs >= {p.regress_min_messages}
              AND passed <= {p.regress_max_rate} * msgs""",
        [start, start, end],
    )


def _audience(con: duckdb.DuckDBPyConnection, p: Params, start: date, end: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """New reporter x service pairs, and bursts of never-seen envelope_to domains per service."""
    org = _df(
        con,
        f"""WITH d AS (
                SELECT domain, service, org, day, sum(msgs) AS dp
                FROM det_x WHERE NOT relayed AND dmarc_pass GROUP BY ALL
            ), f AS (SELECT domain, service, org, min(nday) AS first_day FROM det_x
                     WHERE NOT relayed AND dmarc_pass GROUP BY ALL),
            o AS (SELECT domain, org, count(*) AS org_days_before_end, min(day) AS org_first FROM det_pres GROUP BY ALL)
            SELECT d.domain, d.service, d.org, d.day, d.dp, f.first_day, o.org_first,
                   (SELECT count(*) FROM det_pres pr WHERE pr.domain = d.domain AND pr.org = d.org
                      AND pr.day < f.first_day) AS org_days_before,
                   s.authorized AS service_authorized, s.pass_days_before AS service_pass_days
            FROM d JOIN f USING (domain, service, org) JOIN o USING (domain, org)
            LEFT JOIN det_svc s ON s.domain = d.domain AND s.service = d.service AND s.day = f.first_day
            WHERE f.first_day BETWEEN ? AND ?
              AND d.day BETWEEN f.first_day AND f.first_day + {p.newness_days - 1} AND d.day <= ?""",
        [start, end, end],
    )
    to = _df(
        con,
        f"""WITH d AS (
                SELECT domain, service, env_to, day, sum(msgs) AS dp
                FROM det_v WHERE env_to IS NOT NULL GROUP BY ALL
            ), f AS (SELECT domain, service, env_to, min(day) AS first_day FROM d GROUP BY ALL),
            per_day AS (
                SELECT d.domain, d.service, d.day,
                       count(*) FILTER (WHERE f.first_day = d.day) AS new_to,
                       coalesce(sum(d.dp) FILTER (WHERE f.first_day = d.day), 0) AS new_to_msgs,
                       sum(d.dp) AS to_msgs,
                       list(d.env_to ORDER BY d.dp DESC) FILTER (WHERE f.first_day = d.day) AS new_list
                FROM d JOIN f USING (domain, service, env_to)
                GROUP BY ALL
            )
            SELECT *, median(new_to) OVER h AS h_new_median, count(*) OVER h AS h_days
            FROM per_day
            WINDOW h AS (PARTITION BY domain, service ORDER BY day
                         ROWS BETWEEN {p.base_window} PRECEDING AND 1 PRECEDING)
            QUALIFY day BETWEEN ? AND ?""",
        [start, end],
    )
    return org, to


def _lookalikes(con: duckdb.DuckDBPyConnection, p: Params, start: date, end: date) -> pd.DataFrame:
    """Envelope-from and DKIM domains that are not aligned with the policy domain, with first days."""
    return _df(
        con,
        f"""WITH x AS (
                SELECT domain, day, nday, 'envelope_from' AS typ, env_from AS val, dmarc_pass, msgs
                FROM det_x WHERE NOT relayed AND env_from <> ''
                UNION ALL
                SELECT domain, day, nday, 'dkim_domain', dkim_domain, dmarc_pass, msgs
                FROM det_x WHERE NOT relayed AND dkim_domain IS NOT NULL
                UNION ALL
                SELECT domain, day, nday, 'header_from', header_from, dmarc_pass, msgs
                FROM det_x WHERE NOT relayed
            ), f AS (SELECT domain, typ, val, min(nday) AS first_day FROM x GROUP BY ALL)
            SELECT x.domain, x.typ, x.val, f.first_day, min(x.day) AS day_min, max(x.day) AS day_max,
                   sum(x.msgs) AS msgs, coalesce(sum(x.msgs) FILTER (WHERE x.dmarc_pass), 0) AS passed
            FROM x JOIN f USING (domain, typ, val)
            WHERE f.first_day BETWEEN ? AND ?
              AND x.day BETWEEN f.first_day AND f.first_day + {p.newness_days - 1} AND x.day <= ?
              AND NOT {_aligned_sql('x.domain', 'x.val')}
            GROUP BY ALL""",
        [start, end, end],
    )


# --------------------------------------------------------------------------- evidence


def evidence(con: duckdb.DuckDBPyConnection, wanted: pd.DataFrame) -> pd.DataFrame:
    """IPs, report keys and reporters behind each finding, read from the records of its days only.

    ``wanted`` has one row per finding: fid, domain, first_day, last_day, the
    identity filters (service, ip_range, env_from, dkim_domain, dkim_selector,
    header_from, org, env_to; NULL = any) and ``traffic``: which mail counts
    (direct_pass, direct_fail_unauth, direct, any).
    """
    import pandas as pd

    if wanted.empty:
        return pd.DataFrame(columns=["fid", "ips", "report_keys", "report_ids", "reporters"])
    cols = ["fid", "domain", "first_day", "last_day", "service", "ip_range", "env_from", "dkim_domain",
            "dkim_selector", "header_from", "org", "env_to", "traffic"]
    w = wanted.reindex(columns=cols).astype(object).where(wanted.reindex(columns=cols).notna(), None)
    con.execute(
        """CREATE OR REPLACE TEMP TABLE det_want (fid VARCHAR, domain VARCHAR, first_day DATE, last_day DATE,
           service VARCHAR, ip_range VARCHAR, env_from VARCHAR, dkim_domain VARCHAR, dkim_selector VARCHAR,
           header_from VARCHAR, org VARCHAR, env_to VARCHAR, traffic VARCHAR)"""
    )
    con.executemany("INSERT INTO det_want VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", w.values.tolist())
    con.execute(
        """CREATE OR REPLACE TEMP TABLE det_wday AS
           SELECT DISTINCT domain, unnest(generate_series(first_day, last_day, INTERVAL 1 DAY))::DATE AS day
           FROM det_want"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE det_ev AS {classified_sql(unit_sql(
            '(p.domain, r.day) IN (SELECT (domain, day) FROM det_wday)', with_ip=True))}"""
    )
    return _df(
        con,
        """WITH m AS (
               SELECT w.fid, e.source_ip, e.report_key, e.org, sum(e.msgs) AS msgs
               FROM det_want w JOIN det_ev e
                 ON e.domain = w.domain AND e.day BETWEEN w.first_day AND w.last_day
                AND (w.service IS NULL OR e.service = w.service)
                AND (w.ip_range IS NULL OR e.ip_range = w.ip_range)
                AND (w.env_from IS NULL OR e.env_from = w.env_from)
                AND (w.dkim_domain IS NULL OR e.dkim_domain = w.dkim_domain)
                AND (w.dkim_selector IS NULL OR e.dkim_selector = w.dkim_selector)
                AND (w.header_from IS NULL OR e.header_from = w.header_from)
                AND (w.org IS NULL OR e.org = w.org)
                AND (w.env_to IS NULL OR e.env_to = w.env_to)
               LEFT JOIN det_svc s ON s.domain = e.domain AND s.service = e.service AND s.day = e.day
               WHERE CASE w.traffic
                   WHEN 'direct_pass' THEN NOT e.relayed AND e.dmarc_pass
                   WHEN 'direct_fail_unauth' THEN NOT e.relayed AND NOT e.dmarc_pass AND NOT coalesce(s.authorized, FALSE)
                   WHEN 'direct_fail' THEN NOT e.relayed AND NOT e.dmarc_pass
                   WHEN 'direct' THEN NOT e.relayed
                   ELSE TRUE END
               GROUP BY ALL
           ), ip AS (SELECT fid, source_ip, sum(msgs) AS m FROM m GROUP BY ALL),
           rk AS (SELECT fid, report_key, any_value(org) AS org, sum(msgs) AS m FROM m GROUP BY ALL)
           SELECT f.fid,
                  (SELECT list(source_ip ORDER BY m DESC, source_ip)[1:50] FROM ip WHERE ip.fid = f.fid) AS ips,
                  (SELECT list(rk.report_key ORDER BY m DESC, rk.report_key)[1:50] FROM rk WHERE rk.fid = f.fid)
                      AS report_keys,
                  (SELECT list(r.report_id ORDER BY rk.m DESC, rk.report_key)[1:50]
                     FROM rk JOIN det_rep r USING (report_key) WHERE rk.fid = f.fid) AS report_ids,
                  (SELECT list(DISTINCT rk.org ORDER BY rk.org) FROM rk WHERE rk.fid = f.fid) AS reporters,
                  (SELECT count(*) FROM ip WHERE ip.fid = f.fid) AS n_ips
           FROM det_want f""",
    )
