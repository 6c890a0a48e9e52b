"""Traffic classes: is a record authorized, forwarded, misconfigured, spoofed or unknown?

The rules (docs/identity.md has them in prose) run in SQL, because
"misconfigured" depends on history: a source that normally passes for a domain
and now fails. The result is stored in ``records.traffic_class`` /
``records.class_reason`` (schema 0002), so dashboards read a plain column
instead of recomputing 30-day windows on every page render.

``update(con, rules, domains)`` is what every ingest runs after its commit
(through ``enrich_db(resolve=False)``): it recomputes only the rows that the
new, still unclassified rows can change (their domain's days from the first new
day to the last plus ``history_days``, reading ``history_days`` of history
before them), merges the new rows' identifiers into the lookalike table, and
falls back to recomputing everything when what it relies on does not hold
(rules changed, classified rows removed, no saved state: ``classify_state``,
schema 0008). ``refresh(con, rules)`` recomputes every row (``dmarclens enrich``
after reverse DNS). Both run inside the caller's transaction; see
benchmarks/enrich.md for what they cost.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmarclens.core.errors import ConfigError, StoreError
from dmarclens.core.net import network_of

if TYPE_CHECKING:
    import duckdb

CLASSES = ("authorized", "forwarded", "misconfigured", "spoofed", "unknown")

RECEIVER_FORWARD_REASONS = ("forwarded", "mailing_list", "trusted_forwarder")
"""policy_evaluated/reason types with which a receiver says it saw forwarding."""

KNOWN_FORWARDERS: tuple[str, ...] = (
    # mailing-list hosts
    "googlegroups.com", "groups.io", "freelists.org", "lists.sourceforge.net", "simplelists.com",
    "mailman3.com", "listserv.net", "lsoft.com", "topica.com", "yahoogroups.com",
    # forwarding and alias services
    "pobox.com", "forwardemail.net", "improvmx.com", "simplelogin.co", "simplelogin.com",
    "addy.io", "anonaddy.me", "duck.com", "relay.firefox.com", "mozmail.com", "33mail.com",
    "cloudflare-email.net", "emailforward.net",
)
"""Domains whose mail is re-sent on behalf of others. Matched against the
source's PTR base domain, the envelope-from domain and passing DKIM domains
(each also as a parent domain). Extend with ``[identity] forwarders``."""

OVERRIDE_ACTIONS = ("authorized", "forwarder")
_MATCHERS = ("service", "ip", "dkim_domain", "envelope_from", "reverse_dns")


@dataclass(frozen=True)
class Override:
    """A user's statement about a source, from ``[[identity.overrides]]``.

    Every matcher given must match (AND); lists inside one matcher are OR.
    ``action = "authorized"``: this is my own sender, so its DMARC failures are
    ``misconfigured``. ``action = "forwarder"``: it re-sends my mail, so its
    failures are ``forwarded``. A DMARC pass stays ``authorized`` either way.
    """

    action: str
    domain: str | None = None
    service: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()
    dkim_domain: tuple[str, ...] = ()
    envelope_from: tuple[str, ...] = ()
    reverse_dns: tuple[str, ...] = ()
    note: str | None = None

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(x, strict=False) for x in self.ip]


@dataclass(frozen=True)
class Rules:
    """Thresholds and overrides; the defaults are documented in docs/identity.md."""

    history_days: int = 30
    min_history_days: int = 7
    min_passing_messages: int = 10
    min_pass_share: float = 0.5
    forwarders: tuple[str, ...] = KNOWN_FORWARDERS
    overrides: tuple[Override, ...] = field(default_factory=tuple)

    def fingerprint(self) -> str:
        """Changes whenever a rule input changes (shown with the classes)."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a string or a list of strings")
    return tuple(v.strip().lower().rstrip(".") for v in value if v.strip())


def rules_from_settings(raw: Mapping[str, Any]) -> Rules:
    """Read ``[identity]`` and ``[[identity.overrides]]`` from the parsed TOML.

    Example::

        [identity]
        history_days = 30
        forwarders = ["lists.example.org"]

        [[identity.overrides]]
        domain = "example.com"
        action = "authorized"
        service = "SendGrid"

        [[identity.overrides]]
        action = "forwarder"
        ip = ["192.0.2.0/24", "2001:db8:1::/48"]
        note = "university alumni forwarding"
    """
    section = raw.get("identity") or {}
    if not isinstance(section, Mapping):
        raise ConfigError("[identity] must be a table")
    kwargs: dict[str, Any] = {}
    for key, kind in (("history_days", int), ("min_history_days", int), ("min_passing_messages", int),
                      ("min_pass_share", float)):
        if key in section:
            try:
                kwargs[key] = kind(section[key])
            except (TypeError, ValueError) as e:
                raise ConfigError(f"[identity] {key}: expected a number") from e
    if "forwarders" in section:
        kwargs["forwarders"] = KNOWN_FORWARDERS + _str_list(section["forwarders"], "[identity] forwarders")
    overrides = []
    items = section.get("overrides") or []
    if not isinstance(items, list):
        raise ConfigError("[[identity.overrides]] must be an array of tables")
    for n, item in enumerate(items, 1):
        where = f"[[identity.overrides]] #{n}"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(item) - {"action", "domain", "note", *_MATCHERS}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        action = str(item.get("action", "")).strip().lower()
        if action not in OVERRIDE_ACTIONS:
            raise ConfigError(f"{where}: action must be one of {OVERRIDE_ACTIONS}, not {item.get('action')!r}")
        matchers = {k: _str_list(item.get(k), f"{where} {k}") for k in _MATCHERS}
        if not any(matchers.values()):
            raise ConfigError(f"{where}: give at least one of {', '.join(_MATCHERS)}")
        domain = item.get("domain")
        domain = None if domain in (None, "", "*") else str(domain).strip().lower().rstrip(".")
        ov = Override(action=action, domain=domain, note=item.get("note"), **matchers)
        try:
            ov.networks()
        except ValueError as e:
            raise ConfigError(f"{where} ip: {e}") from e
        overrides.append(ov)
    kwargs["overrides"] = tuple(overrides)
    rules = Rules(**kwargs)
    if (rules.history_days < 1 or rules.min_history_days < 0 or not 0 <= rules.min_pass_share <= 1
            or rules.min_passing_messages < 1):
        raise ConfigError("[identity]: history_days and min_passing_messages must be >= 1, "
                          "min_history_days >= 0, min_pass_share between 0 and 1")
    return rules


def _filled_networks(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Set ip_info.network where it is missing; return the IPs set.

    The ingest writer fills the network when it inserts an IP, so this is
    normally a no-op; it stays for databases and writers that did not. The
    IPs set are left in the temp table ``_dl_filled`` for the incremental
    scope (their rows may have been classified without a network).
    """
    con.execute("DROP TABLE IF EXISTS _dl_filled")
    ips = [r[0] for r in con.execute("SELECT ip FROM ip_info WHERE network IS NULL").fetchall()]
    pairs = [(ip, net) for ip in ips if (net := network_of(ip))]
    if not pairs:
        return []
    from dmarclens.core.arrow import import_pyarrow

    pa = import_pyarrow()
    con.register("_dl_nets", pa.table({"ip": pa.array([p[0] for p in pairs], pa.string()),
                                       "network": pa.array([p[1] for p in pairs], pa.string())}))
    try:
        con.execute("UPDATE ip_info SET network = n.network FROM _dl_nets n WHERE ip_info.ip = n.ip")
        con.execute("CREATE TEMP TABLE _dl_filled AS SELECT ip FROM _dl_nets")
    finally:
        con.unregister("_dl_nets")
    return [p[0] for p in pairs]


def fill_networks(con: duckdb.DuckDBPyConnection) -> int:
    """Set ip_info.network (/24 or /48) where it is missing; return rows set."""
    return len(_filled_networks(con))


def _load_rule_tables(con: duckdb.DuckDBPyConnection, rules: Rules,
                      candidate_ips: str = "SELECT ip FROM ip_info") -> None:
    """Overrides, their IP matches and the forwarder list as temp tables.

    IP ranges are matched in Python against ``candidate_ips`` (SQL): every
    known IP, or after an ingest the IPs of the days being recomputed.
    """
    # import_pyarrow, not `import pyarrow`: building arrays from lists would
    # otherwise import pandas (~0.15 s) in an ingest that never uses it.
    from dmarclens.core.arrow import import_pyarrow

    pa = import_pyarrow()
    string, strings = pa.string(), pa.list_(pa.string())
    ov = rules.overrides
    con.register("_dl_ov_src", pa.table({
        "idx": pa.array(list(range(1, len(ov) + 1)), type=pa.int32()),
        "action": pa.array([o.action for o in ov], type=string),
        "domain": pa.array([o.domain for o in ov], type=string),
        "service": pa.array([list(o.service) or None for o in ov], type=strings),
        "dkim_domain": pa.array([list(o.dkim_domain) or None for o in ov], type=strings),
        "envelope_from": pa.array([list(o.envelope_from) or None for o in ov], type=strings),
        "reverse_dns": pa.array([list(o.reverse_dns) or None for o in ov], type=strings),
        "has_ip": pa.array([bool(o.ip) for o in ov], type=pa.bool_()),
    }))
    pairs: list[tuple[int, str]] = []
    if any(o.ip for o in ov):
        all_ips = [r[0] for r in con.execute(candidate_ips).fetchall()]
        parsed = []
        for ip in all_ips:
            try:
                parsed.append((ip, ipaddress.ip_address(ip.split("%", 1)[0])))
            except ValueError:
                continue
        for idx, o in enumerate(ov, 1):
            nets = o.networks()
            if nets:
                pairs += [(idx, ip) for ip, addr in parsed if any(addr in n for n in nets)]
    con.register("_dl_ov_ip_src", pa.table({
        "idx": pa.array([p[0] for p in pairs], type=pa.int32()),
        "ip": pa.array([p[1] for p in pairs], type=string),
    }))
    con.register("_dl_fw_src", pa.table({"fw": pa.array(list(rules.forwarders), type=string)}))
    for name in ("_dl_ov", "_dl_ov_ip", "_dl_fw"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_src")
        con.unregister(f"{name}_src")


# A domain matches a listed one when equal or a subdomain of it.
_UNDER = "({x} = {y} OR {x} LIKE '%.' || {y})"
# Relaxed alignment without a public-suffix list in SQL: equal, or one is a
# parent of the other. Close enough to tell "our own signature" from others.
_ALIGNED = "({a} = {b} OR {a} LIKE '%.' || {b} OR {b} LIKE '%.' || {a})"

BASE_SQL = """
SELECT r.rowid AS rid, p.domain, p.adkim, r.day, r.count, r.dmarc_pass,
       r.policy_dkim, r.policy_spf, r.source_ip,
       coalesce(r.override_reasons, []) AS reasons,
       coalesce(r.dkim, []) AS dkim, coalesce(r.spf, []) AS spf,
       lower(coalesce(nullif(r.header_from, ''), p.domain)) AS hfrom,
       lower(nullif(r.envelope_from, '')) AS efrom,
       i.network, lower(i.service_name) AS service, lower(i.base_domain) AS rdns_base,
       r.traffic_class AS old_class, r.class_reason AS old_reason,
       $in_scope AS in_scope
FROM records r JOIN reports p USING (report_key) $scope_join
LEFT JOIN ip_info i ON i.ip = r.source_ip
$where
"""
"""The rows a refresh reads: every record (full), or per scope domain the days
from ``lo - history_days`` to ``hi`` (incremental); ``in_scope`` marks the rows
whose class is recomputed, the others are history only. A CTE of CLASSIFY_SQL
(materializing it as a table first costs ~20% more)."""

CLASSIFY_SQL = f"""
CREATE OR REPLACE TEMP TABLE _dl_cls AS
WITH base AS (
    $base
),
dk AS (
    SELECT rid, domain, day, dmarc_pass, hfrom, in_scope,
           lower(d.domain) AS d_domain, lower(coalesce(d.result, '')) AS d_result
    FROM (SELECT rid, domain, day, dmarc_pass, hfrom, in_scope, unnest(dkim) AS d FROM base)
    WHERE d.domain IS NOT NULL
),
known_dkim AS (
    SELECT DISTINCT domain, d_domain, day FROM dk WHERE dmarc_pass AND d_result = 'pass'
),
fail_dk AS (
    SELECT f.rid, f.d_domain, f.d_result,
           {_ALIGNED.format(a="f.d_domain", b="f.hfrom")} AS own,
           count(k.day) > 0 AS known
    FROM dk f
    LEFT JOIN known_dkim k ON f.d_result = 'pass' AND k.domain = f.domain AND k.d_domain = f.d_domain
         AND k.day BETWEEN f.day - $history AND f.day
    WHERE NOT f.dmarc_pass AND f.in_scope
    GROUP BY ALL
),
dkim_flags AS (
    SELECT rid,
           bool_or(d_result = 'pass' AND own) AS own_dkim_pass,
           bool_or(d_result <> 'pass' AND own) AS own_dkim_fail,
           bool_or(d_result = 'pass' AND NOT own AND known) AS known_dkim,
           bool_or(d_result = 'pass' AND NOT own AND NOT known) AS foreign_dkim,
           min(d_domain) FILTER (WHERE d_result = 'pass' AND NOT own AND known) AS known_dkim_domain,
           list(d_domain) FILTER (WHERE d_result = 'pass') AS passing_dkim
    FROM fail_dk GROUP BY rid
),
spf_flags AS (
    SELECT rid, list(lower(s.domain)) FILTER (WHERE lower(coalesce(s.result, '')) = 'pass'
                 AND NOT {_ALIGNED.format(a="lower(s.domain)", b="hfrom")}) AS other_spf_pass
    FROM (SELECT rid, hfrom, unnest(spf) AS s FROM base WHERE NOT dmarc_pass AND in_scope)
    WHERE s.domain IS NOT NULL
    GROUP BY rid
),
relay AS (  -- the relay authenticated itself: SPF and DKIM pass for its own (aligned) domain
    SELECT s.rid, min(sd) AS relay_domain
    FROM (SELECT rid, unnest(other_spf_pass) AS sd FROM spf_flags) s
    JOIN (SELECT rid, unnest(passing_dkim) AS kd FROM dkim_flags) k
      ON k.rid = s.rid AND {_ALIGNED.format(a="s.sd", b="k.kd")}
    GROUP BY s.rid
),
dom_first AS (
    $dom_first
),
net_day AS (
    SELECT domain, network, day, sum(count) AS msgs, sum(count) FILTER (WHERE dmarc_pass) AS passed
    FROM base WHERE network IS NOT NULL GROUP BY ALL
),
fail_net AS (
    SELECT DISTINCT domain, network, day FROM base WHERE NOT dmarc_pass AND network IS NOT NULL AND in_scope
),
net_hist AS (
    SELECT f.domain, f.network, f.day,
           coalesce(sum(h.passed), 0) AS passed, coalesce(sum(h.msgs), 0) AS msgs
    FROM fail_net f
    LEFT JOIN net_day h ON h.domain = f.domain AND h.network = f.network
         AND h.day >= f.day - $history AND h.day < f.day
    GROUP BY ALL
),
ov AS (
    SELECT b.rid, arg_min(o.action, o.idx) AS action, min(o.idx) AS idx
    FROM base b LEFT JOIN _dl_ov_ip x ON x.ip = b.source_ip
    JOIN _dl_ov o
      ON (o.domain IS NULL OR {_UNDER.format(x="b.domain", y="o.domain")})
     AND (o.service IS NULL OR list_contains(o.service, b.service))
     AND (o.reverse_dns IS NULL OR len(list_filter(o.reverse_dns, lambda z: b.rdns_base IS NOT NULL
              AND {_UNDER.format(x="b.rdns_base", y="z")})) > 0)
     AND (o.envelope_from IS NULL OR len(list_filter(o.envelope_from, lambda z: b.efrom IS NOT NULL
              AND {_UNDER.format(x="b.efrom", y="z")})) > 0)
     AND (o.dkim_domain IS NULL OR len(list_filter(b.dkim, lambda d: lower(d.result) = 'pass'
              AND list_contains(o.dkim_domain, lower(d.domain)))) > 0)
     AND (NOT o.has_ip OR x.idx = o.idx)
    WHERE NOT b.dmarc_pass AND b.in_scope
    GROUP BY b.rid
),
fw AS (
    SELECT b.rid, min(f.fw) AS fw
    FROM base b LEFT JOIN dkim_flags d USING (rid), _dl_fw f
    WHERE NOT b.dmarc_pass AND b.in_scope
      AND ((b.rdns_base IS NOT NULL AND {_UNDER.format(x="b.rdns_base", y="f.fw")})
        OR (b.efrom IS NOT NULL AND {_UNDER.format(x="b.efrom", y="f.fw")})
        OR len(list_filter(coalesce(d.passing_dkim, []), lambda z: {_UNDER.format(x="z", y="f.fw")})) > 0)
    GROUP BY b.rid
),
decided AS (
    SELECT b.rid, b.domain, b.day, b.old_class, b.old_reason,
        CASE
          WHEN b.dmarc_pass THEN ['authorized', CASE WHEN b.policy_dkim = 'pass' THEN 'dmarc_pass dkim'
                                                    ELSE 'dmarc_pass spf' END]
          WHEN coalesce(b.policy_dkim, '') = '' AND coalesce(b.policy_spf, '') = ''
            THEN ['unknown', 'no_evaluation']
          WHEN ov.action = 'forwarder' THEN ['forwarded', 'override #' || ov.idx || ' forwarder']
          WHEN ov.action = 'authorized' THEN ['misconfigured', 'override #' || ov.idx || ' authorized']
          WHEN len(list_filter(b.reasons, lambda x: list_contains({list(RECEIVER_FORWARD_REASONS)}, lower(x.type)))) > 0
            THEN ['forwarded', 'receiver_reason ' || lower(list_filter(b.reasons,
                  lambda x: list_contains({list(RECEIVER_FORWARD_REASONS)}, lower(x.type)))[1].type)]
          WHEN len(list_filter(b.reasons, lambda x: lower(coalesce(x.comment, '')) LIKE '%arc=pass%')) > 0
            THEN ['forwarded', 'arc_pass']
          WHEN coalesce(d.own_dkim_pass, false)
               AND NOT (b.adkim = 's' AND NOT list_contains(
                   list_transform(list_filter(b.dkim, lambda x: lower(x.result) = 'pass'), lambda x: lower(x.domain)), b.hfrom))
            THEN ['forwarded', 'own_dkim_pass']
          WHEN fw.fw IS NOT NULL THEN ['forwarded', 'known_forwarder ' || fw.fw]
          WHEN coalesce(d.known_dkim, false) THEN ['misconfigured', 'known_dkim ' || d.known_dkim_domain]
          WHEN coalesce(d.own_dkim_fail, false) AND rl.relay_domain IS NOT NULL
            THEN ['forwarded', 'dkim_broken_relay ' || rl.relay_domain]
          WHEN nh.passed >= $min_passing AND nh.passed >= $min_share * nh.msgs
               AND NOT coalesce(d.foreign_dkim, false)
            THEN ['misconfigured', 'known_network ' || b.network]
          WHEN b.day - df.first_day < $min_history THEN ['unknown', 'too_little_history']
          ELSE ['spoofed', CASE WHEN coalesce(d.foreign_dkim, false) THEN 'unknown_source foreign_dkim'
                                ELSE 'unknown_source' END]
        END AS cls
    FROM base b
    LEFT JOIN dkim_flags d USING (rid)
    LEFT JOIN relay rl USING (rid)
    LEFT JOIN ov USING (rid)
    LEFT JOIN fw USING (rid)
    LEFT JOIN dom_first df ON df.domain = b.domain
    LEFT JOIN net_hist nh ON nh.domain = b.domain AND nh.network = b.network AND nh.day = b.day
    WHERE b.in_scope
)
SELECT rid, domain, day, cls[1] AS traffic_class, cls[2] AS class_reason,
       (cls[1] IS DISTINCT FROM old_class OR cls[2] IS DISTINCT FROM old_reason) AS changed,
       old_class IS NULL AS was_null
FROM decided
"""
"""Decides the class of every in-scope row of ``base`` into ``_dl_cls``."""

_TEMP_TABLES = ("_dl_cls", "_dl_ov", "_dl_ov_ip", "_dl_fw", "_dl_new_keys", "_dl_scope",
                "_dl_filled")


# ---------------------------------------------------------------------- refresh state (migration 0008)


@dataclass(frozen=True)
class _State:
    rules_fingerprint: str
    classified_rows: int
    lookalikes_owned: str | None


@dataclass
class Refreshed:
    """What one refresh did; the same facts are kept in ``classify_state``."""

    mode: str  # "full" or "incremental"
    reason: str  # why full, or what the incremental run covered
    recomputed: int = 0  # rows whose class was computed
    changed: int = 0  # rows whose stored class changed (new rows included)
    newly: int = 0  # rows classified for the first time
    lookalikes: int = 0  # rows in identifier_lookalikes afterwards
    lookalikes_mode: str = "full"


def _has_state(con: duckdb.DuckDBPyConnection) -> bool:
    [(n,)] = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'classify_state'"
    ).fetchall()
    return bool(n)


def _read_state(con: duckdb.DuckDBPyConnection) -> _State | None:
    rows = con.execute(
        "SELECT rules_fingerprint, classified_rows, lookalikes_owned FROM classify_state").fetchall()
    return _State(rows[0][0], int(rows[0][1]), rows[0][2]) if len(rows) == 1 else None


def _classified_rows(con: duckdb.DuckDBPyConnection) -> int:
    [(n,)] = con.execute("SELECT count(*) FROM records WHERE traffic_class IS NOT NULL").fetchall()
    return int(n)


def _owned_fingerprint(owned: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(owned).encode()).hexdigest()[:16]


def _write_state(con: duckdb.DuckDBPyConnection, rules: Rules, classified: int, lookalikes_owned: str | None,
                 done: Refreshed) -> None:
    con.execute("DELETE FROM classify_state")
    con.execute("INSERT INTO classify_state VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [rules.fingerprint(), classified, lookalikes_owned, datetime.now(UTC), done.mode, done.reason,
                 done.recomputed, done.changed])


# ---------------------------------------------------------------------- planning


@dataclass
class _Plan:
    mode: str
    reason: str
    classified_before: int = 0
    state: _State | None = None
    has_state: bool = False
    lo: date | None = None  # incremental: the days the refresh reads (history included)
    hi: date | None = None


def _plan(con: duckdb.DuckDBPyConnection, rules: Rules, *, incremental: bool) -> _Plan:
    """Full or incremental; for incremental also the scope (temp tables _dl_new_keys, _dl_scope).

    Incremental is exact only while the stored classes are those of the
    current rules over the current records minus the unclassified ones:
    same rules fingerprint, and as many classified rows as the last refresh
    left (rows only leave ``records`` when a domain is hidden, and only a
    refresh classifies rows). Anything else is a full recompute.
    """
    has_state = _has_state(con)
    state = _read_state(con) if has_state else None
    filled = _filled_networks(con)
    if not incremental:
        return _Plan("full", "requested", state=state, has_state=has_state)
    classified = _classified_rows(con)
    reason = None
    if state is None:
        if classified:
            reason = "no saved refresh state"
    elif state.rules_fingerprint != rules.fingerprint():
        reason = "rules changed"
    elif state.classified_rows != classified:
        reason = "records removed or classified elsewhere since the last refresh"
    if reason:
        return _Plan("full", reason, state=state, has_state=has_state)
    # Touched rows: the unclassified ones, plus (defensively) classified rows of IPs
    # whose network was only set now. Per policy domain: the days they span.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _dl_new_keys AS
           SELECT n.report_key, p.domain, n.lo, n.hi
           FROM (SELECT report_key, min(day) AS lo, max(day) AS hi FROM records
                 WHERE traffic_class IS NULL GROUP BY report_key) n
           JOIN reports p USING (report_key)"""
    )
    ip_touched = ""
    if filled:
        ip_touched = """UNION ALL
           SELECT p.domain, NULL, min(r.day), max(r.day)
           FROM records r JOIN reports p USING (report_key)
           WHERE r.traffic_class IS NOT NULL AND r.source_ip IN (SELECT ip FROM _dl_filled)
           GROUP BY p.domain"""
    first_days = "classify_domains" if has_state else "(SELECT NULL::VARCHAR AS domain, NULL::DATE AS first_day)"
    h, mh = int(rules.history_days), int(rules.min_history_days)
    # A row's class reads its domain's rows of the history_days before it, and its
    # domain's first day. New rows on days a..b change rows on days a..b+history;
    # new rows before the domain's old first day F also change days F..F+min_history-1.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _dl_scope AS
            WITH t AS (
                SELECT domain, min(lo) AS a_new, min(lo) AS a, max(hi) AS b FROM _dl_new_keys GROUP BY domain
                {ip_touched}
            ),
            u AS (SELECT domain, min(a_new) AS a_new, min(a) AS a, max(b) AS b FROM t GROUP BY domain)
            SELECT u.domain, u.a AS lo,
                   greatest(u.b + {h}, CASE WHEN {mh} > 0 AND u.a_new < f.first_day
                                            THEN f.first_day + {mh - 1} END) AS hi,
                   least(f.first_day, u.a_new) AS first_day
            FROM u LEFT JOIN {first_days} f ON f.domain = u.domain"""
    )
    [(domains, missing, lo, hi)] = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE first_day IS NULL), min(lo) - {h}, max(hi) FROM _dl_scope"
    ).fetchall()
    if missing:
        return _Plan("full", "refresh state has no first day for a domain", state=state, has_state=has_state)
    return _Plan("incremental", f"{domains} domain(s), days {lo} to {hi} read" if domains else "nothing new",
                 classified_before=classified, state=state, has_state=has_state, lo=lo, hi=hi)


def _fill(sql: str, rules: Rules, **parts: str) -> str:
    # Numbers are validated ints/floats, formatted in (DuckDB cannot bind
    # parameters inside CREATE TABLE AS).
    for key, value in parts.items():
        sql = sql.replace(f"${key}", value)
    return (sql.replace("$history", str(int(rules.history_days)))
            .replace("$min_passing", str(int(rules.min_passing_messages)))
            .replace("$min_history", str(int(rules.min_history_days)))
            .replace("$min_share", repr(float(rules.min_pass_share))))


def _classify(con: duckdb.DuckDBPyConnection, rules: Rules, plan: _Plan) -> Refreshed:
    """Recompute the planned rows; write the changed ones; keep classify_domains in step."""
    done = Refreshed(plan.mode, plan.reason)
    incremental = plan.mode == "incremental"
    if incremental and plan.lo is None:
        return done  # nothing unclassified, nothing touched
    if incremental:
        assert plan.lo is not None and plan.hi is not None
        days = f"DATE '{plan.lo.isoformat()}' AND DATE '{plan.hi.isoformat()}'"
        # The constant range lets DuckDB skip the row groups of other days.
        base = _fill(BASE_SQL, rules, in_scope="r.day >= s.lo", scope_join="JOIN _dl_scope s ON s.domain = p.domain",
                     where=f"WHERE r.day BETWEEN s.lo - $history AND s.hi AND r.day BETWEEN {days}")
        dom_first = "SELECT domain, first_day FROM _dl_scope"
        _load_rule_tables(con, rules, f"SELECT DISTINCT source_ip FROM records WHERE day BETWEEN {days}")
    else:
        base = _fill(BASE_SQL, rules, in_scope="true", scope_join="", where="")
        dom_first = "SELECT domain, min(day) AS first_day FROM base GROUP BY domain"
        _load_rule_tables(con, rules)
    con.execute(_fill(CLASSIFY_SQL, rules, base=base, dom_first=dom_first))
    [(recomputed, changed, was_null)] = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE changed), count(*) FILTER (WHERE was_null) FROM _dl_cls"
    ).fetchall()
    done.recomputed, done.changed, done.newly = int(recomputed), int(changed), int(was_null)
    if changed:
        day_range = f"AND records.day BETWEEN {days}" if incremental else ""
        con.execute(
            f"""UPDATE records SET traffic_class = c.traffic_class, class_reason = c.class_reason
                FROM (SELECT * FROM _dl_cls WHERE changed) c
                WHERE records.rowid = c.rid {day_range}"""
        )
    if plan.has_state:
        if incremental:
            con.execute("DELETE FROM classify_domains WHERE domain IN (SELECT domain FROM _dl_scope)")
            con.execute("INSERT INTO classify_domains SELECT domain, first_day FROM _dl_scope")
        else:
            con.execute("DELETE FROM classify_domains")
            con.execute("INSERT INTO classify_domains SELECT domain, min(day) FROM _dl_cls GROUP BY domain")
    return done


def _classified(con: duckdb.DuckDBPyConnection, plan: _Plan, done: Refreshed) -> int:
    """Classified rows after this refresh (counted once more after a full one)."""
    return _classified_rows(con) if plan.mode == "full" else plan.classified_before + done.newly


def _drop_temp(con: duckdb.DuckDBPyConnection) -> None:
    for name in _TEMP_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {name}")


def refresh(con: duckdb.DuckDBPyConnection, rules: Rules | None = None, *, incremental: bool = False) -> int:
    """Recompute records' classes; write the rows that changed; return that count.

    Runs inside the caller's transaction. ``incremental=False`` (the default)
    recomputes every row: a report that arrives late changes the history of
    the days after it, and a new override changes old rows. ``incremental=True``
    recomputes only the rows the unclassified ones can change, and every row
    when the rules or the classified records changed since the last refresh.
    ``update`` does the same and keeps the lookalike table in step; prefer it.
    """
    rules = rules or Rules()
    plan = _plan(con, rules, incremental=incremental)
    done = _classify(con, rules, plan)
    if plan.has_state and (plan.mode == "full" or plan.state is None or done.recomputed):
        # Rows classified here were not added to the lookalike table: the next update rebuilds it.
        kept = plan.state.lookalikes_owned if plan.state is not None and not done.newly else None
        _write_state(con, rules, _classified(con, plan, done), kept, done)
    _drop_temp(con)
    return done.changed


def update_on(con: duckdb.DuckDBPyConnection, db_path: str | Path, rules: Rules | None = None,
              configured: Sequence[str] = (), *, incremental: bool = True,
              before: Callable[[duckdb.DuckDBPyConnection], Any] | None = None) -> Refreshed:
    """``update`` in a transaction of its own on an open connection (after
    ``before(con)``, which ``dmarclens enrich`` uses to store reverse DNS).

    The ingest calls it on the connection it has just committed with
    (``Ingestor.after_commit``), which saves opening the file again; it lives
    here, not with the DNS code, so that step does not import asyncio.
    Errors roll back and come out as ``StoreError``.
    """
    import duckdb

    from dmarclens.store.db import transaction

    try:
        with transaction(con):
            if before is not None:
                before(con)
            done = update(con, rules, configured, incremental=incremental)
    except duckdb.Error as e:
        raise StoreError(f"database {db_path}: enrichment not stored: {' '.join(str(e).split())}") from e
    return done


def update(con: duckdb.DuckDBPyConnection, rules: Rules | None = None, configured: Sequence[str] = (), *,
           incremental: bool = True) -> Refreshed:
    """Classes and lookalike identifiers in step with ``records``, in the caller's transaction.

    The step every ingest runs (``incremental=True``): only the rows that new
    records can change are recomputed and only the new records' identifiers
    are matched. Every class is recomputed when the rules or the classified
    records changed since the last refresh, or when asked (``dmarclens
    enrich`` after reverse DNS changed ip_info); the lookalike table is
    rebuilt then too, and when the domain list changed.
    """
    rules = rules or Rules()
    plan = _plan(con, rules, incremental=incremental)
    owned = owned_domains(con, configured)
    owned_fp = _owned_fingerprint(owned)
    look_incremental = (plan.mode == "incremental" and plan.state is not None
                        and plan.state.lookalikes_owned == owned_fp)
    # Lookalikes first: the incremental merge reads the rows still unclassified.
    lookalikes = _merge_lookalikes(con, owned) if look_incremental else _rebuild_lookalikes(con, owned)
    done = _classify(con, rules, plan)
    done.lookalikes, done.lookalikes_mode = lookalikes, "incremental" if look_incremental else "full"
    if plan.has_state and (plan.mode == "full" or plan.state is None or done.recomputed or not look_incremental):
        _write_state(con, rules, _classified(con, plan, done), owned_fp, done)
    _drop_temp(con)
    return done


def owned_domains(con: duckdb.DuckDBPyConnection, configured: Sequence[str] = ()) -> list[str]:
    """The user's domains: the configured list, else every policy domain reported on."""
    if configured:
        return sorted({d.strip().lower().rstrip(".") for d in configured if d.strip()})
    return [r[0] for r in con.execute("SELECT DISTINCT lower(domain) FROM reports ORDER BY 1").fetchall()]


_IDENTIFIERS_SQL = """
WITH src AS ({source}),
ids AS (
    SELECT lower(envelope_from) AS identifier, 'envelope_from' AS kind, day, count FROM src
    WHERE envelope_from IS NOT NULL AND envelope_from <> ''
    UNION ALL
    SELECT lower(d.domain), 'dkim_domain', day, count
    FROM (SELECT day, count, unnest(dkim) AS d FROM src) WHERE d.domain IS NOT NULL
)
SELECT identifier, kind, sum(count), min(day), max(day) FROM ids GROUP BY 1, 2
"""
"""Every envelope-from and DKIM signing domain of ``source`` rows, with messages and days."""


def _hits(con: duckdb.DuckDBPyConnection, source: str, owned: Sequence[str]) -> list[tuple[Any, ...]]:
    from dmarclens.enrich.lookalike import lookalike_of

    hits = []
    for identifier, kind, messages, first, last in con.execute(_IDENTIFIERS_SQL.format(source=source)).fetchall():
        match = lookalike_of(identifier, owned)
        if match is not None:
            hits.append((identifier, kind, match.owned, match.technique, match.detail,
                         int(messages or 0), first, last))
    return hits


# Rows of records that some report owns (v_records' rows): an orphan row would
# never be classified, so it must not count as new on every run either.
_ALL_ROWS = "SELECT day, count, envelope_from, dkim FROM records WHERE report_key IN (SELECT report_key FROM reports)"
_NEW_ROWS = ("SELECT day, count, envelope_from, dkim FROM records "
             "WHERE traffic_class IS NULL AND report_key IN (SELECT report_key FROM _dl_new_keys)")


def _rebuild_lookalikes(con: duckdb.DuckDBPyConnection, owned: Sequence[str]) -> int:
    hits = _hits(con, _ALL_ROWS, owned)
    now = datetime.now(UTC)
    con.execute("DELETE FROM identifier_lookalikes")
    if hits:
        con.executemany("INSERT INTO identifier_lookalikes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(*h, now) for h in hits])
    return len(hits)


def _merge_lookalikes(con: duckdb.DuckDBPyConnection, owned: Sequence[str]) -> int:
    """Add the new rows' identifiers: messages summed, first/last day widened.

    Exact because a lookalike depends only on the identifier and the owned
    list (unchanged, or this would be a rebuild), and the table already holds
    every classified row's identifiers.
    """
    hits = _hits(con, _NEW_ROWS, owned)
    if hits:
        now = datetime.now(UTC)
        con.execute("CREATE OR REPLACE TEMP TABLE _dl_hits (identifier VARCHAR, identifier_kind VARCHAR, "
                    "owned_domain VARCHAR, technique VARCHAR, detail VARCHAR, messages BIGINT, "
                    "first_seen DATE, last_seen DATE)")
        try:
            con.executemany("INSERT INTO _dl_hits VALUES (?, ?, ?, ?, ?, ?, ?, ?)", hits)
            con.execute(
                """UPDATE identifier_lookalikes AS t
                   SET messages = t.messages + h.messages, first_seen = least(t.first_seen, h.first_seen),
                       last_seen = greatest(t.last_seen, h.last_seen), refreshed_at = ?
                   FROM _dl_hits h
                   WHERE t.identifier = h.identifier AND t.identifier_kind = h.identifier_kind""", [now])
            con.execute(
                """INSERT INTO identifier_lookalikes
                   SELECT h.*, ? FROM _dl_hits h
                   WHERE NOT EXISTS (SELECT 1 FROM identifier_lookalikes t
                                     WHERE t.identifier = h.identifier AND t.identifier_kind = h.identifier_kind)""",
                [now])
        finally:
            con.execute("DROP TABLE IF EXISTS _dl_hits")
    [(n,)] = con.execute("SELECT count(*) FROM identifier_lookalikes").fetchall()
    return int(n)


def refresh_lookalikes(con: duckdb.DuckDBPyConnection, configured: Sequence[str] = ()) -> int:
    """Rebuild identifier_lookalikes from every envelope-from and DKIM domain reported.

    The matching itself is ``dmarclens.enrich.lookalike.lookalike_of`` (pure);
    this only gathers the identifiers with their counts and stores the hits.
    ``update`` keeps the table in step incrementally; after a rebuild here the
    next ``update`` rebuilds it once more (it cannot tell which rows it saw).
    """
    n = _rebuild_lookalikes(con, owned_domains(con, configured))
    if _has_state(con):
        con.execute("UPDATE classify_state SET lookalikes_owned = NULL")
    return n
