"""Policy readiness and DNS posture: what enforcement would do to each source's
mail, and what ``dmarclens posture`` found in DNS."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

from dmarclens.query.filters import Filters, frame
from dmarclens.store import rollups
from dmarclens.store.sql import SERVICE_EXPR, has_table


def readiness_sources(con: duckdb.DuckDBPyConnection, f: Filters) -> pd.DataFrame:
    """Per domain and sending service: what enforcement would have done to its mail.

    Failing mail is what p=quarantine/reject acts on; failed_overridden is the
    part receivers already let through as forwarded or mailing-list mail.
    """
    where, params = f.where()
    return frame(
        con,
        f"""WITH s AS (
                SELECT domain, source_ip, sum(messages)::BIGINT AS messages, sum(passed)::BIGINT AS passed,
                       sum(failed_overridden)::BIGINT AS failed_overridden,
                       sum(disp_quarantine)::BIGINT AS quarantined, sum(disp_reject)::BIGINT AS rejected
                FROM {rollups.relation(con)} WHERE {where} GROUP BY domain, source_ip)
            SELECT s.domain, {SERVICE_EXPR} AS service, any_value(i.service_type) AS service_type,
                   sum(s.messages)::BIGINT AS messages, sum(s.passed)::BIGINT AS passed,
                   sum(s.messages - s.passed)::BIGINT AS failed, sum(s.failed_overridden)::BIGINT AS failed_overridden,
                   sum(s.quarantined)::BIGINT AS quarantined, sum(s.rejected)::BIGINT AS rejected, count(*) AS ips
            FROM s LEFT JOIN ip_info i ON i.ip = s.source_ip
            GROUP BY s.domain, service ORDER BY s.domain, messages DESC""",
        params,
    )


def posture(con: duckdb.DuckDBPyConnection, domains: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """The latest DNS posture check per domain (None when `dmarclens posture` never ran)."""
    if not has_table(con, "posture_checks"):
        return None
    where, params = ("domain IN (SELECT unnest(?))", [list(domains)]) if domains else ("TRUE", [])
    return frame(
        con,
        f"""SELECT * FROM posture_checks WHERE {where}
            QUALIFY row_number() OVER (PARTITION BY domain ORDER BY checked_at DESC, check_id DESC) = 1
            ORDER BY domain""",
        params,
    )


def posture_spf_includes(con: duckdb.DuckDBPyConnection, check_ids: tuple[int, ...]) -> pd.DataFrame | None:
    """SPF includes of posture checks: the platforms the domain authorises, used or not."""
    if not has_table(con, "posture_spf_includes"):
        return None
    return frame(
        con,
        """SELECT domain, include, platform, multi_tenant, depth, status, messages, last_seen, unused
           FROM posture_spf_includes WHERE check_id IN (SELECT unnest(?))
           ORDER BY domain, multi_tenant DESC, messages DESC NULLS LAST, include""",
        [list(check_ids)],
    )


def posture_dkim_selectors(con: duckdb.DuckDBPyConnection, check_ids: tuple[int, ...]) -> pd.DataFrame | None:
    """DKIM selectors the reports show, with what DNS says about each key, for posture checks."""
    if not has_table(con, "posture_dkim_selectors"):
        return None
    return frame(
        con,
        """SELECT domain, selector, status, key_type, key_bits, messages, last_seen, record
           FROM posture_dkim_selectors WHERE check_id IN (SELECT unnest(?))
           ORDER BY domain, last_seen DESC NULLS LAST, selector""",
        [list(check_ids)],
    )


def posture_history(con: duckdb.DuckDBPyConnection, domain: str, limit: int = 100) -> pd.DataFrame | None:
    """Every posture check of one domain, newest first: did the policy get stronger over time?"""
    if not has_table(con, "posture_checks"):
        return None
    return frame(
        con,
        f"""SELECT check_id, checked_at, policy_strength, p, sp, np, pct, dmarc_status, spf_status,
                   spf_lookups, spf_all, len(findings) AS findings
            FROM posture_checks WHERE domain = ? ORDER BY checked_at DESC, check_id DESC LIMIT {int(limit)}""",
        [domain],
    )
