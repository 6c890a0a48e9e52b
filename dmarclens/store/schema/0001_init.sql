-- 0001: the spine. Reports, records, lineage and offline IP facts.
-- Every table and column carries a COMMENT so analysts can read the docs
-- with `SELECT * FROM duckdb_columns()`; docs/schema.md is generated from them.

CREATE TABLE ingest_runs (
    run_id            VARCHAR PRIMARY KEY,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ,
    command           VARCHAR NOT NULL,
    source_kind       VARCHAR,
    hostname          VARCHAR,
    version           VARCHAR,
    items_seen        INTEGER DEFAULT 0,
    stored            INTEGER DEFAULT 0,
    duplicates        INTEGER DEFAULT 0,
    rejected          INTEGER DEFAULT 0,
    ignored           INTEGER DEFAULT 0,
    records           BIGINT DEFAULT 0,
    messages          BIGINT DEFAULT 0
);
COMMENT ON TABLE ingest_runs IS 'One row per ingest or fetch run: when it ran and what it did.';
COMMENT ON COLUMN ingest_runs.run_id IS 'Random id of the run; every stored report and item points back to it.';
COMMENT ON COLUMN ingest_runs.started_at IS 'When the run started (UTC).';
COMMENT ON COLUMN ingest_runs.finished_at IS 'When the run finished (UTC); NULL if it was killed.';
COMMENT ON COLUMN ingest_runs.command IS 'The dmarclens command that ran (ingest, fetch, demo).';
COMMENT ON COLUMN ingest_runs.source_kind IS 'files, imap, or mixed.';
COMMENT ON COLUMN ingest_runs.hostname IS 'Machine the run ran on.';
COMMENT ON COLUMN ingest_runs.version IS 'dmarclens version that ran.';
COMMENT ON COLUMN ingest_runs.items_seen IS 'Input items looked at (files, archive members, mail messages).';
COMMENT ON COLUMN ingest_runs.stored IS 'Aggregate reports newly stored.';
COMMENT ON COLUMN ingest_runs.duplicates IS 'Reports already stored before (re-sends, copies); not counted again.';
COMMENT ON COLUMN ingest_runs.rejected IS 'Items that could not be parsed; reasons in ingest_items.';
COMMENT ON COLUMN ingest_runs.ignored IS 'Items recognised as other report kinds (failure/RUF, SMTP TLS) and not counted.';
COMMENT ON COLUMN ingest_runs.records IS 'Record rows stored (after splitting multi-day reports into days).';
COMMENT ON COLUMN ingest_runs.messages IS 'Sum of message counts in the stored records.';

CREATE SEQUENCE ingest_item_seq START 1;
CREATE TABLE ingest_items (
    item_id           BIGINT PRIMARY KEY DEFAULT nextval('ingest_item_seq'),
    run_id            VARCHAR NOT NULL,
    seen_at           TIMESTAMPTZ NOT NULL,
    origin_kind       VARCHAR NOT NULL,
    origin            VARCHAR NOT NULL,
    member            VARCHAR,
    sha256            VARCHAR,
    size_bytes        BIGINT,
    mailbox           VARCHAR,
    uidvalidity       BIGINT,
    uid               BIGINT,
    message_id        VARCHAR,
    outcome           VARCHAR NOT NULL,
    report_kind       VARCHAR NOT NULL,
    report_key        VARCHAR,
    domain            VARCHAR,
    records           INTEGER,
    messages          BIGINT,
    reason            VARCHAR
);
COMMENT ON TABLE ingest_items IS 'Every input item ever seen and what became of it: the "nothing lost" ledger.';
COMMENT ON COLUMN ingest_items.item_id IS 'Sequential id.';
COMMENT ON COLUMN ingest_items.run_id IS 'The ingest run that saw the item (ingest_runs.run_id).';
COMMENT ON COLUMN ingest_items.seen_at IS 'When the item was processed (UTC).';
COMMENT ON COLUMN ingest_items.origin_kind IS 'file, eml, mbox, maildir or imap.';
COMMENT ON COLUMN ingest_items.origin IS 'Where the item came from: a path, or imap://user@host/folder.';
COMMENT ON COLUMN ingest_items.member IS 'Part inside the origin: zip member, MIME attachment name, mbox message number.';
COMMENT ON COLUMN ingest_items.sha256 IS 'SHA-256 of the item bytes as received.';
COMMENT ON COLUMN ingest_items.size_bytes IS 'Size of the item as received.';
COMMENT ON COLUMN ingest_items.mailbox IS 'IMAP folder the message was in (IMAP items only).';
COMMENT ON COLUMN ingest_items.uidvalidity IS 'IMAP UIDVALIDITY of that folder (IMAP items only).';
COMMENT ON COLUMN ingest_items.uid IS 'IMAP UID of the message (IMAP items only).';
COMMENT ON COLUMN ingest_items.message_id IS 'Message-ID header of the report mail, when the item came in a mail.';
COMMENT ON COLUMN ingest_items.outcome IS 'stored, duplicate, rejected (unparseable, see reason) or ignored (non-aggregate report).';
COMMENT ON COLUMN ingest_items.report_kind IS 'aggregate, failure, smtp_tls or unknown.';
COMMENT ON COLUMN ingest_items.report_key IS 'reports.report_key of the stored or duplicate report.';
COMMENT ON COLUMN ingest_items.domain IS 'Policy domain of the report, when known.';
COMMENT ON COLUMN ingest_items.records IS 'Record rows the item stored.';
COMMENT ON COLUMN ingest_items.messages IS 'Messages the item stored.';
COMMENT ON COLUMN ingest_items.reason IS 'Why the item was rejected, ignored or counted as a duplicate; plain language.';

CREATE TABLE reports (
    report_key        VARCHAR PRIMARY KEY,
    org_name          VARCHAR NOT NULL,
    org_email         VARCHAR,
    org_extra_contact VARCHAR,
    report_id         VARCHAR NOT NULL,
    domain            VARCHAR NOT NULL,
    begin_ts          TIMESTAMPTZ NOT NULL,
    end_ts            TIMESTAMPTZ NOT NULL,
    span_seconds      BIGINT NOT NULL,
    adkim             VARCHAR,
    aspf              VARCHAR,
    p                 VARCHAR,
    sp                VARCHAR,
    np                VARCHAR,
    pct               INTEGER,
    fo                VARCHAR,
    testing           VARCHAR,
    discovery_method  VARCHAR,
    format            VARCHAR NOT NULL,
    xml_schema        VARCHAR,
    xml_namespace     VARCHAR,
    generator         VARCHAR,
    reporter_errors   VARCHAR[],
    parser            VARCHAR NOT NULL,
    origin            VARCHAR NOT NULL,
    origin_member     VARCHAR,
    raw_sha256        VARCHAR NOT NULL,
    record_count      INTEGER NOT NULL,
    message_count     BIGINT NOT NULL,
    ingest_run_id     VARCHAR NOT NULL,
    ingested_at       TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE reports IS 'One row per distinct aggregate (RUA) report. Re-sent copies are stored once.';
COMMENT ON COLUMN reports.report_key IS 'Stable fingerprint of (reporter org, report_id, policy domain, begin, end); the duplicate key.';
COMMENT ON COLUMN reports.org_name IS 'Reporting organisation (the receiver that sent the report), as parsedmarc normalises it.';
COMMENT ON COLUMN reports.org_email IS 'Reporter contact address from the report.';
COMMENT ON COLUMN reports.org_extra_contact IS 'Reporter extra contact info from the report.';
COMMENT ON COLUMN reports.report_id IS 'Reporter''s own report id.';
COMMENT ON COLUMN reports.domain IS 'Policy domain the report is about (policy_published/domain), lower case.';
COMMENT ON COLUMN reports.begin_ts IS 'Start of the reporting interval (UTC).';
COMMENT ON COLUMN reports.end_ts IS 'End of the reporting interval (UTC).';
COMMENT ON COLUMN reports.span_seconds IS 'end_ts - begin_ts in seconds; over 86400 means the records were split into days.';
COMMENT ON COLUMN reports.adkim IS 'Published DKIM alignment mode: r (relaxed) or s (strict).';
COMMENT ON COLUMN reports.aspf IS 'Published SPF alignment mode: r or s.';
COMMENT ON COLUMN reports.p IS 'Published policy: none, quarantine or reject.';
COMMENT ON COLUMN reports.sp IS 'Published subdomain policy (defaults to p).';
COMMENT ON COLUMN reports.np IS 'Published non-existent subdomain policy (RFC 9990).';
COMMENT ON COLUMN reports.pct IS 'Published pct (RFC 7489 only; gone in RFC 9990).';
COMMENT ON COLUMN reports.fo IS 'Published failure reporting options.';
COMMENT ON COLUMN reports.testing IS 'Published testing flag y/n (RFC 9990).';
COMMENT ON COLUMN reports.discovery_method IS 'How the receiver found the policy: psl or treewalk (RFC 9990).';
COMMENT ON COLUMN reports.format IS 'rfc7489 (legacy), rfc9990, or draft (no <version>: the old DMARC wiki schema, or a reporter that omits the version).';
COMMENT ON COLUMN reports.xml_schema IS 'The <version> the report declared, or draft.';
COMMENT ON COLUMN reports.xml_namespace IS 'XML namespace the report declared, if any.';
COMMENT ON COLUMN reports.generator IS 'Software that generated the report (RFC 9990 <generator>).';
COMMENT ON COLUMN reports.reporter_errors IS 'Errors the reporter listed in the report metadata.';
COMMENT ON COLUMN reports.parser IS 'Code path that parsed it: parsedmarc or fast (streaming parser).';
COMMENT ON COLUMN reports.origin IS 'Where the stored copy came from (path or IMAP message).';
COMMENT ON COLUMN reports.origin_member IS 'Part of the origin that held the report (zip member, attachment).';
COMMENT ON COLUMN reports.raw_sha256 IS 'SHA-256 of the report XML as parsed.';
COMMENT ON COLUMN reports.record_count IS 'Record rows stored for this report (after the day split).';
COMMENT ON COLUMN reports.message_count IS 'Messages the report covers (sum of record counts).';
COMMENT ON COLUMN reports.ingest_run_id IS 'Run that stored the report (ingest_runs.run_id).';
COMMENT ON COLUMN reports.ingested_at IS 'When it was stored (UTC).';

CREATE TABLE report_raw (
    report_key        VARCHAR PRIMARY KEY,
    xml_gz            BLOB NOT NULL
);
COMMENT ON TABLE report_raw IS 'The report XML as received (gzip-compressed), for "show me the raw report".';
COMMENT ON COLUMN report_raw.report_key IS 'reports.report_key.';
COMMENT ON COLUMN report_raw.xml_gz IS 'Gzip-compressed XML bytes.';

CREATE TABLE records (
    report_key        VARCHAR NOT NULL,
    day               DATE NOT NULL,
    interval_begin    TIMESTAMPTZ NOT NULL,
    interval_end      TIMESTAMPTZ NOT NULL,
    source_ip         VARCHAR NOT NULL,
    count             BIGINT NOT NULL,
    disposition       VARCHAR,
    policy_dkim       VARCHAR,
    policy_spf        VARCHAR,
    dkim_aligned      BOOLEAN NOT NULL,
    spf_aligned       BOOLEAN NOT NULL,
    dmarc_pass        BOOLEAN NOT NULL,
    override_reasons  STRUCT("type" VARCHAR, "comment" VARCHAR)[],
    header_from       VARCHAR,
    envelope_from     VARCHAR,
    envelope_to       VARCHAR,
    dkim              STRUCT("domain" VARCHAR, selector VARCHAR, result VARCHAR)[],
    spf               STRUCT("domain" VARCHAR, scope VARCHAR, result VARCHAR)[],
    ingest_run_id     VARCHAR NOT NULL
);
COMMENT ON TABLE records IS 'One row per report <record>, per day: a report spanning several days is split into days with counts pro-rated.';
COMMENT ON COLUMN records.report_key IS 'reports.report_key.';
COMMENT ON COLUMN records.day IS 'UTC day the messages were seen (from the report interval).';
COMMENT ON COLUMN records.interval_begin IS 'Start of the part of the report interval this row covers (UTC).';
COMMENT ON COLUMN records.interval_end IS 'End of the part of the report interval this row covers (UTC).';
COMMENT ON COLUMN records.source_ip IS 'IP address that sent the mail, as the receiver saw it.';
COMMENT ON COLUMN records.count IS 'Messages from this source with these results.';
COMMENT ON COLUMN records.disposition IS 'What the receiver did: none, quarantine or reject.';
COMMENT ON COLUMN records.policy_dkim IS 'DMARC-aligned DKIM result the receiver evaluated: pass or fail.';
COMMENT ON COLUMN records.policy_spf IS 'DMARC-aligned SPF result the receiver evaluated: pass or fail.';
COMMENT ON COLUMN records.dkim_aligned IS 'True when policy_dkim = pass (DKIM passed and aligned with header_from).';
COMMENT ON COLUMN records.spf_aligned IS 'True when policy_spf = pass (SPF passed and aligned with header_from).';
COMMENT ON COLUMN records.dmarc_pass IS 'True when DKIM or SPF passed aligned: the mail passed DMARC.';
COMMENT ON COLUMN records.override_reasons IS 'Receiver policy overrides: type (forwarded, mailing_list, local_policy ...) and comment.';
COMMENT ON COLUMN records.header_from IS 'RFC5322.From domain, lower case.';
COMMENT ON COLUMN records.envelope_from IS 'RFC5321.MailFrom domain (falls back to the last SPF domain when the reporter omits it).';
COMMENT ON COLUMN records.envelope_to IS 'RFC5321.RcptTo domain, when the reporter includes it.';
COMMENT ON COLUMN records.dkim IS 'Raw DKIM results: signing domain, selector, result.';
COMMENT ON COLUMN records.spf IS 'Raw SPF results: domain, scope (mfrom/helo), result.';
COMMENT ON COLUMN records.ingest_run_id IS 'Run that stored the row (lineage).';

CREATE TABLE ip_info (
    ip                  VARCHAR PRIMARY KEY,
    country             VARCHAR,
    asn                 INTEGER,
    as_name             VARCHAR,
    as_domain           VARCHAR,
    service_name        VARCHAR,
    service_type        VARCHAR,
    service_source      VARCHAR,
    reverse_dns         VARCHAR,
    base_domain         VARCHAR,
    fcrdns              BOOLEAN,
    rdns_status         VARCHAR,
    rdns_resolved_at    TIMESTAMPTZ,
    offline_resolved_at TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE ip_info IS 'What is known about each source IP: offline facts at ingest, reverse DNS later (dmarclens enrich).';
COMMENT ON COLUMN ip_info.ip IS 'Source IP address.';
COMMENT ON COLUMN ip_info.country IS 'ISO country code from the IPinfo Lite database parsedmarc ships.';
COMMENT ON COLUMN ip_info.asn IS 'Autonomous system number.';
COMMENT ON COLUMN ip_info.as_name IS 'Autonomous system name.';
COMMENT ON COLUMN ip_info.as_domain IS 'Domain of the AS owner.';
COMMENT ON COLUMN ip_info.service_name IS 'Known sending service (Microsoft 365, Google, SendGrid ...), from reverse DNS or the AS domain.';
COMMENT ON COLUMN ip_info.service_type IS 'Kind of service (Email Provider, Marketing, SaaS, ISP ...).';
COMMENT ON COLUMN ip_info.service_source IS 'How service_name was found: rdns, as_domain, or as_name (weak).';
COMMENT ON COLUMN ip_info.reverse_dns IS 'PTR name, once dmarclens enrich resolved it.';
COMMENT ON COLUMN ip_info.base_domain IS 'Registrable domain of the PTR name.';
COMMENT ON COLUMN ip_info.fcrdns IS 'True when the PTR name resolves back to the IP (forward-confirmed).';
COMMENT ON COLUMN ip_info.rdns_status IS 'Outcome of the last PTR lookup: ok, nxdomain, timeout, servfail; NULL = not tried.';
COMMENT ON COLUMN ip_info.rdns_resolved_at IS 'When the PTR lookup ran (UTC).';
COMMENT ON COLUMN ip_info.offline_resolved_at IS 'When the offline facts were filled (UTC).';

CREATE VIEW v_records AS
SELECT
    r.report_key, p.report_id, p.org_name, p.domain, r.day,
    r.interval_begin, r.interval_end, r.source_ip, r.count,
    r.disposition, r.dmarc_pass, r.dkim_aligned, r.spf_aligned,
    r.policy_dkim, r.policy_spf, r.override_reasons,
    r.header_from, r.envelope_from, r.envelope_to, r.dkim, r.spf,
    p.p AS policy_p, p.pct AS policy_pct,
    i.country, i.asn, i.as_name, i.as_domain, i.service_name, i.service_type,
    i.reverse_dns, i.base_domain,
    r.ingest_run_id
FROM records r
JOIN reports p USING (report_key)
LEFT JOIN ip_info i ON i.ip = r.source_ip;
COMMENT ON VIEW v_records IS 'Stable view: one row per record with its report, policy domain, day, source and enrichment.';
COMMENT ON COLUMN v_records.policy_p IS 'Policy (p) the domain published, as this report saw it.';
COMMENT ON COLUMN v_records.policy_pct IS 'pct the domain published, as this report saw it (RFC 7489 only).';
-- Pass-through columns inherit their table column's comment (store/db.py inherit_view_comments).

CREATE VIEW v_daily AS
SELECT
    p.domain, r.day,
    sum(r.count) AS messages,
    sum(r.count) FILTER (WHERE r.dmarc_pass) AS passed,
    sum(r.count) FILTER (WHERE NOT r.dmarc_pass) AS failed,
    sum(r.count) FILTER (WHERE r.dkim_aligned) AS dkim_aligned,
    sum(r.count) FILTER (WHERE r.spf_aligned) AS spf_aligned,
    sum(r.count) FILTER (WHERE r.disposition = 'none') AS disposition_none,
    sum(r.count) FILTER (WHERE r.disposition = 'quarantine') AS disposition_quarantine,
    sum(r.count) FILTER (WHERE r.disposition = 'reject') AS disposition_reject,
    count(DISTINCT r.source_ip) AS sources,
    count(DISTINCT r.report_key) AS reports
FROM records r JOIN reports p USING (report_key)
GROUP BY p.domain, r.day;
COMMENT ON VIEW v_daily IS 'Stable view: daily rollup per policy domain.';
COMMENT ON COLUMN v_daily.domain IS 'Policy domain.';
COMMENT ON COLUMN v_daily.day IS 'UTC day.';
COMMENT ON COLUMN v_daily.messages IS 'Messages reported for the domain that day.';
COMMENT ON COLUMN v_daily.passed IS 'Messages that passed DMARC.';
COMMENT ON COLUMN v_daily.failed IS 'Messages that failed DMARC.';
COMMENT ON COLUMN v_daily.dkim_aligned IS 'Messages with aligned DKIM pass.';
COMMENT ON COLUMN v_daily.spf_aligned IS 'Messages with aligned SPF pass.';
COMMENT ON COLUMN v_daily.disposition_none IS 'Messages the receivers delivered normally (disposition none).';
COMMENT ON COLUMN v_daily.disposition_quarantine IS 'Messages the receivers quarantined.';
COMMENT ON COLUMN v_daily.disposition_reject IS 'Messages the receivers rejected.';
COMMENT ON COLUMN v_daily.sources IS 'Distinct source IPs seen.';
COMMENT ON COLUMN v_daily.reports IS 'Distinct reports that covered the day.';
