"""Traffic classes: is a record authorized, forwarded, misconfigured, spoofed or unknown?

The rules (docs/identity.md has them in prose) run in SQL over the whole
``records`` table, because "misconfigured" depends on history: a source that
normally passes for a domain and now fails. The result is stored in
``records.traffic_class`` / ``records.class_reason`` (schema 0002) and
refreshed by ``dmarclens enrich`` (and ``dmarclens ingest --enrich``) inside
the same transaction as the reverse-DNS results, so dashboards read a plain
column instead of recomputing 30-day windows on every page render.

``refresh(con, rules)`` recomputes every row and writes only rows whose class
changed; any caller that just stored records may call it inside its own
transaction (it does no DNS and takes a few seconds per million records, see
benchmarks/enrich.md; call it once at the end of a run, not per batch).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dmarclens.enrich.offline import network_of
from dmarclens.errors import ConfigError

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


def fill_networks(con: duckdb.DuckDBPyConnection) -> int:
    """Set ip_info.network (/24 or /48) where it is missing; return rows set."""
    ips = [r[0] for r in con.execute("SELECT ip FROM ip_info WHERE network IS NULL").fetchall()]
    pairs = [(ip, network_of(ip)) for ip in ips]
    pairs = [(ip, net) for ip, net in pairs if net]
    if not pairs:
        return 0
    import pyarrow as pa

    con.register("_dl_nets", pa.table({"ip": pa.array([p[0] for p in pairs], pa.string()),
                                       "network": pa.array([p[1] for p in pairs], pa.string())}))
    try:
        con.execute("UPDATE ip_info SET network = n.network FROM _dl_nets n WHERE ip_info.ip = n.ip")
    finally:
        con.unregister("_dl_nets")
    return len(pairs)


def _load_rule_tables(con: duckdb.DuckDBPyConnection, rules: Rules) -> None:
    """Overrides, their IP matches and the forwarder list as temp tables."""
    import pyarrow as pa

    ov = rules.overrides
    con.register("_dl_ov_src", pa.table({
        "idx": pa.array(list(range(1, len(ov) + 1)), type=pa.int32()),
        "action": [o.action for o in ov],
        "domain": pa.array([o.domain for o in ov], type=pa.string()),
        "service": pa.array([list(o.service) or None for o in ov], type=pa.list_(pa.string())),
        "dkim_domain": pa.array([list(o.dkim_domain) or None for o in ov], type=pa.list_(pa.string())),
        "envelope_from": pa.array([list(o.envelope_from) or None for o in ov], type=pa.list_(pa.string())),
        "reverse_dns": pa.array([list(o.reverse_dns) or None for o in ov], type=pa.list_(pa.string())),
        "has_ip": pa.array([bool(o.ip) for o in ov], type=pa.bool_()),
    }))
    pairs: list[tuple[int, str]] = []
    if any(o.ip for o in ov):
        all_ips = [r[0] for r in con.execute("SELECT ip FROM ip_info").fetchall()]
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
        "ip": pa.array([p[1] for p in pairs], type=pa.string()),
    }))
    con.register("_dl_fw_src", pa.table({"fw": pa.array(list(rules.forwarders), type=pa.string())}))
    for name in ("_dl_ov", "_dl_ov_ip", "_dl_fw"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_src")
        con.unregister(f"{name}_src")


# A domain matches a listed one when equal or a subdomain of it.
_UNDER = "({x} = {y} OR {x} LIKE '%.' || {y})"
# Relaxed alignment without a public-suffix list in SQL: equal, or one is a
# parent of the other. Close enough to tell "our own signature" from others.
_ALIGNED = "({a} = {b} OR {a} LIKE '%.' || {b} OR {b} LIKE '%.' || {a})"

CLASSIFY_SQL = f"""
CREATE OR REPLACE TEMP TABLE _dl_cls AS
WITH base AS (
    SELECT r.rowid AS rid, p.domain, p.adkim, r.day, r.count, r.dmarc_pass,
           r.policy_dkim, r.policy_spf, r.source_ip,
           coalesce(r.override_reasons, []) AS reasons,
           coalesce(r.dkim, []) AS dkim, coalesce(r.spf, []) AS spf,
           lower(coalesce(nullif(r.header_from, ''), p.domain)) AS hfrom,
           lower(nullif(r.envelope_from, '')) AS efrom,
           i.network, lower(i.service_name) AS service, lower(i.base_domain) AS rdns_base
    FROM records r JOIN reports p USING (report_key) LEFT JOIN ip_info i ON i.ip = r.source_ip
),
dk AS (
    SELECT rid, domain, day, dmarc_pass, hfrom,
           lower(d.domain) AS d_domain, lower(coalesce(d.result, '')) AS d_result
    FROM (SELECT rid, domain, day, dmarc_pass, hfrom, unnest(dkim) AS d FROM base)
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
    WHERE NOT f.dmarc_pass
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
    FROM (SELECT rid, hfrom, unnest(spf) AS s FROM base WHERE NOT dmarc_pass)
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
    SELECT domain, min(day) AS first_day FROM base GROUP BY domain
),
net_day AS (
    SELECT domain, network, day, sum(count) AS msgs, sum(count) FILTER (WHERE dmarc_pass) AS passed
    FROM base WHERE network IS NOT NULL GROUP BY ALL
),
fail_net AS (
    SELECT DISTINCT domain, network, day FROM base WHERE NOT dmarc_pass AND network IS NOT NULL
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
    WHERE NOT b.dmarc_pass
    GROUP BY b.rid
),
fw AS (
    SELECT b.rid, min(f.fw) AS fw
    FROM base b LEFT JOIN dkim_flags d USING (rid), _dl_fw f
    WHERE NOT b.dmarc_pass
      AND ((b.rdns_base IS NOT NULL AND {_UNDER.format(x="b.rdns_base", y="f.fw")})
        OR (b.efrom IS NOT NULL AND {_UNDER.format(x="b.efrom", y="f.fw")})
        OR len(list_filter(coalesce(d.passing_dkim, []), lambda z: {_UNDER.format(x="z", y="f.fw")})) > 0)
    GROUP BY b.rid
),
decided AS (
    SELECT b.rid,
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
)
SELECT rid, cls[1] AS traffic_class, cls[2] AS class_reason FROM decided
"""


def refresh(con: duckdb.DuckDBPyConnection, rules: Rules | None = None) -> int:
    """Recompute every record's class; write the rows that changed; return that count.

    Runs inside the caller's transaction. Full recompute on purpose: a report
    that arrives late changes the history of the 30 days after it, and a new
    override changes old rows, so "only new rows" would leave stale classes.
    """
    rules = rules or Rules()
    fill_networks(con)
    _load_rule_tables(con, rules)
    # Numbers are validated ints/floats, formatted in (DuckDB cannot bind
    # parameters inside CREATE TABLE AS).
    sql = (CLASSIFY_SQL.replace("$history", str(int(rules.history_days)))
           .replace("$min_passing", str(int(rules.min_passing_messages)))
           .replace("$min_history", str(int(rules.min_history_days)))
           .replace("$min_share", repr(float(rules.min_pass_share))))
    con.execute(sql)
    row = con.execute(
        """SELECT count(*) FROM records r JOIN _dl_cls c ON r.rowid = c.rid
           WHERE r.traffic_class IS DISTINCT FROM c.traffic_class
              OR r.class_reason IS DISTINCT FROM c.class_reason"""
    ).fetchone()
    changed = int(row[0]) if row else 0
    if changed:
        con.execute(
            """UPDATE records SET traffic_class = c.traffic_class, class_reason = c.class_reason
               FROM _dl_cls c
               WHERE records.rowid = c.rid
                 AND (records.traffic_class IS DISTINCT FROM c.traffic_class
                      OR records.class_reason IS DISTINCT FROM c.class_reason)"""
        )
    for name in ("_dl_cls", "_dl_ov", "_dl_ov_ip", "_dl_fw"):
        con.execute(f"DROP TABLE IF EXISTS {name}")
    return changed


def owned_domains(con: duckdb.DuckDBPyConnection, configured: Sequence[str] = ()) -> list[str]:
    """The user's domains: the configured list, else every policy domain reported on."""
    if configured:
        return sorted({d.strip().lower().rstrip(".") for d in configured if d.strip()})
    return [r[0] for r in con.execute("SELECT DISTINCT lower(domain) FROM reports ORDER BY 1").fetchall()]


def refresh_lookalikes(con: duckdb.DuckDBPyConnection, configured: Sequence[str] = ()) -> int:
    """Rebuild identifier_lookalikes from every envelope-from and DKIM domain reported.

    The matching itself is ``dmarclens.enrich.lookalike.lookalike_of`` (pure);
    this only gathers the identifiers with their counts and stores the hits.
    """
    from dmarclens.enrich.lookalike import lookalike_of

    owned = owned_domains(con, configured)
    rows = con.execute(
        """WITH ids AS (
               SELECT lower(envelope_from) AS identifier, 'envelope_from' AS kind, day, count FROM records
               WHERE envelope_from IS NOT NULL AND envelope_from <> ''
               UNION ALL
               SELECT lower(d.domain), 'dkim_domain', day, count
               FROM (SELECT day, count, unnest(dkim) AS d FROM records) WHERE d.domain IS NOT NULL
           )
           SELECT identifier, kind, sum(count), min(day), max(day) FROM ids GROUP BY 1, 2"""
    ).fetchall()
    now = datetime.now(UTC)
    hits = []
    for identifier, kind, messages, first, last in rows:
        match = lookalike_of(identifier, owned)
        if match is not None:
            hits.append((identifier, kind, match.owned, match.technique, match.detail,
                         int(messages or 0), first, last, now))
    con.execute("DELETE FROM identifier_lookalikes")
    if hits:
        con.executemany("INSERT INTO identifier_lookalikes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", hits)
    return len(hits)
