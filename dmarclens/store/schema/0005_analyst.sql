-- 0005: analyst views. Like v_records and v_daily they are the public
-- contract for people who open the file in their own tools (DuckDB CLI,
-- pandas, DBeaver): columns change only with a new migration and a note in
-- docs/analyst.md. They read the base tables (not other views) so a later
-- CREATE OR REPLACE of v_records cannot change what these return.
-- Traffic classes and networks come from 0002 (records.traffic_class,
-- ip_info.network), which always runs before this file.

CREATE VIEW v_sources AS
WITH classes AS (
    SELECT p.domain, r.source_ip, r.traffic_class, sum(r.count) AS messages
    FROM records r JOIN reports p USING (report_key)
    WHERE r.traffic_class IS NOT NULL
    GROUP BY p.domain, r.source_ip, r.traffic_class
),
class_summary AS (
    SELECT domain, source_ip,
           arg_max(traffic_class, messages)  AS traffic_class,
           list_sort(list(traffic_class))    AS traffic_classes
    FROM classes
    GROUP BY domain, source_ip
),
totals AS (
SELECT
    p.domain,
    r.source_ip,
    any_value(i.service_name)                                      AS service_name,
    any_value(i.service_type)                                      AS service_type,
    any_value(i.asn)                                               AS asn,
    any_value(i.as_name)                                           AS as_name,
    any_value(i.country)                                           AS country,
    any_value(i.reverse_dns)                                       AS reverse_dns,
    any_value(i.base_domain)                                       AS base_domain,
    any_value(i.fcrdns)                                            AS fcrdns,
    any_value(i.network)                                           AS source_network,
    min(r.day)                                                     AS first_seen,
    max(r.day)                                                     AS last_seen,
    count(DISTINCT r.day)                                          AS days_seen,
    count(DISTINCT r.report_key)                                   AS reports,
    count(DISTINCT p.org_name)                                     AS reporters,
    sum(r.count)::BIGINT                                           AS messages,
    coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0)::BIGINT  AS passed,
    coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass), 0)::BIGINT AS failed,
    coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0) / sum(r.count)   AS pass_rate,
    coalesce(sum(r.count) FILTER (WHERE r.dkim_aligned), 0) / sum(r.count) AS dkim_aligned_rate,
    coalesce(sum(r.count) FILTER (WHERE r.spf_aligned), 0) / sum(r.count)  AS spf_aligned_rate,
    coalesce(sum(r.count) FILTER (WHERE r.disposition IN ('quarantine', 'reject')), 0)::BIGINT AS quarantined_or_rejected,
    list_sort(list_distinct(list(r.header_from)))                  AS header_from_domains,
    list_sort(list_distinct(list(r.envelope_from)))                AS envelope_from_domains,
    coalesce(sum(r.count) FILTER (WHERE r.traffic_class IS NULL), 0)::BIGINT AS unclassified
FROM records r
JOIN reports p USING (report_key)
LEFT JOIN ip_info i ON i.ip = r.source_ip
GROUP BY p.domain, r.source_ip
)
SELECT t.*, c.traffic_class, coalesce(c.traffic_classes, [])::VARCHAR[] AS traffic_classes
FROM totals t
LEFT JOIN class_summary c USING (domain, source_ip);
COMMENT ON VIEW v_sources IS 'Stable view: one row per policy domain and source IP, with what is known about the IP, when it was first and last seen, totals, pass rates and traffic class over all stored data.';
COMMENT ON COLUMN v_sources.domain IS 'Policy domain the reports are about.';
COMMENT ON COLUMN v_sources.source_ip IS 'IP address that sent mail as the domain.';
COMMENT ON COLUMN v_sources.service_name IS 'Known sending service of the IP (Microsoft 365, SendGrid ...), NULL when unknown.';
COMMENT ON COLUMN v_sources.service_type IS 'Kind of service (Email Provider, Marketing, SaaS, ISP ...).';
COMMENT ON COLUMN v_sources.asn IS 'Autonomous system number of the IP.';
COMMENT ON COLUMN v_sources.as_name IS 'Autonomous system name of the IP.';
COMMENT ON COLUMN v_sources.country IS 'ISO country code of the IP.';
COMMENT ON COLUMN v_sources.reverse_dns IS 'PTR name of the IP, once dmarclens enrich resolved it.';
COMMENT ON COLUMN v_sources.base_domain IS 'Registrable domain of the PTR name.';
COMMENT ON COLUMN v_sources.fcrdns IS 'True when the PTR name resolves back to the IP (forward-confirmed).';
COMMENT ON COLUMN v_sources.source_network IS 'The /24 (IPv4) or /48 (IPv6) of the IP, once dmarclens enrich filled it.';
COMMENT ON COLUMN v_sources.first_seen IS 'First UTC day any report saw this IP send as the domain.';
COMMENT ON COLUMN v_sources.last_seen IS 'Last UTC day any report saw this IP send as the domain.';
COMMENT ON COLUMN v_sources.days_seen IS 'Distinct days with mail from this IP for the domain.';
COMMENT ON COLUMN v_sources.reports IS 'Distinct reports that listed this IP for the domain.';
COMMENT ON COLUMN v_sources.reporters IS 'Distinct reporting organisations that saw this IP for the domain.';
COMMENT ON COLUMN v_sources.messages IS 'Messages from this IP for the domain (sum of record counts).';
COMMENT ON COLUMN v_sources.passed IS 'Messages that passed DMARC (aligned DKIM or aligned SPF).';
COMMENT ON COLUMN v_sources.failed IS 'Messages that failed DMARC.';
COMMENT ON COLUMN v_sources.pass_rate IS 'passed / messages, 0 to 1.';
COMMENT ON COLUMN v_sources.dkim_aligned_rate IS 'Share of messages with an aligned DKIM pass, 0 to 1.';
COMMENT ON COLUMN v_sources.spf_aligned_rate IS 'Share of messages with an aligned SPF pass, 0 to 1.';
COMMENT ON COLUMN v_sources.quarantined_or_rejected IS 'Messages the receivers quarantined or rejected.';
COMMENT ON COLUMN v_sources.header_from_domains IS 'Distinct RFC5322.From domains the IP used, sorted.';
COMMENT ON COLUMN v_sources.envelope_from_domains IS 'Distinct RFC5321.MailFrom domains the IP used, sorted.';
COMMENT ON COLUMN v_sources.unclassified IS 'Messages whose rows dmarclens enrich has not given a traffic class yet.';
COMMENT ON COLUMN v_sources.traffic_class IS 'Traffic class carrying most of the classified messages: authorized, forwarded, misconfigured, spoofed or unknown (docs/identity.md); NULL until classified.';
COMMENT ON COLUMN v_sources.traffic_classes IS 'Every traffic class the rows of this source were given, sorted; empty until classified.';

CREATE VIEW v_reports AS
WITH per_report AS (
    SELECT
        report_key,
        coalesce(sum(count) FILTER (WHERE dmarc_pass), 0)::BIGINT     AS passed,
        coalesce(sum(count) FILTER (WHERE NOT dmarc_pass), 0)::BIGINT AS failed,
        count(DISTINCT source_ip)                             AS sources,
        count(DISTINCT day)                                   AS days
    FROM records
    GROUP BY report_key
)
SELECT
    p.report_key,
    p.org_name                    AS reporter,
    p.org_email                   AS reporter_email,
    p.report_id,
    p.domain,
    p.begin_ts,
    p.end_ts,
    p.span_seconds,
    coalesce(c.days, 0)           AS days,
    p.p                           AS policy_p,
    p.sp                          AS policy_sp,
    p.np                          AS policy_np,
    p.pct                         AS policy_pct,
    p.adkim                       AS policy_adkim,
    p.aspf                        AS policy_aspf,
    p.fo                          AS policy_fo,
    p.testing                     AS policy_testing,
    p.format,
    p.generator,
    p.reporter_errors,
    p.record_count                AS records,
    p.message_count               AS messages,
    coalesce(c.passed, 0)         AS passed,
    coalesce(c.failed, 0)         AS failed,
    CASE WHEN p.message_count > 0 THEN coalesce(c.passed, 0) / p.message_count END AS pass_rate,
    coalesce(c.sources, 0)        AS sources,
    p.origin,
    p.origin_member,
    p.ingest_run_id,
    p.ingested_at
FROM reports p
LEFT JOIN per_report c USING (report_key);
COMMENT ON VIEW v_reports IS 'Stable view: one row per stored aggregate report with its reporter, interval, published policy, message counts and where the copy came from.';
COMMENT ON COLUMN v_reports.report_key IS 'Stable fingerprint of the report; joins to v_records.report_key.';
COMMENT ON COLUMN v_reports.reporter IS 'Reporting organisation (the receiver that sent the report).';
COMMENT ON COLUMN v_reports.reporter_email IS 'Reporter contact address from the report.';
COMMENT ON COLUMN v_reports.report_id IS 'Reporter''s own report id.';
COMMENT ON COLUMN v_reports.domain IS 'Policy domain the report is about.';
COMMENT ON COLUMN v_reports.begin_ts IS 'Start of the reporting interval (UTC).';
COMMENT ON COLUMN v_reports.end_ts IS 'End of the reporting interval (UTC).';
COMMENT ON COLUMN v_reports.span_seconds IS 'Length of the interval in seconds; over 86400 means the rows were split into days.';
COMMENT ON COLUMN v_reports.days IS 'Distinct UTC days the report''s rows cover.';
COMMENT ON COLUMN v_reports.policy_p IS 'Published policy p (none, quarantine, reject) as the reporter saw it.';
COMMENT ON COLUMN v_reports.policy_sp IS 'Published subdomain policy sp.';
COMMENT ON COLUMN v_reports.policy_np IS 'Published non-existent subdomain policy np (RFC 9990).';
COMMENT ON COLUMN v_reports.policy_pct IS 'Published pct (RFC 7489 only).';
COMMENT ON COLUMN v_reports.policy_adkim IS 'Published DKIM alignment mode: r or s.';
COMMENT ON COLUMN v_reports.policy_aspf IS 'Published SPF alignment mode: r or s.';
COMMENT ON COLUMN v_reports.policy_fo IS 'Published failure reporting options.';
COMMENT ON COLUMN v_reports.policy_testing IS 'Published testing flag y/n (RFC 9990).';
COMMENT ON COLUMN v_reports.format IS 'Report dialect: rfc7489, rfc9990 or draft.';
COMMENT ON COLUMN v_reports.generator IS 'Software that generated the report (RFC 9990 <generator>).';
COMMENT ON COLUMN v_reports.reporter_errors IS 'Errors the reporter listed in the report metadata.';
COMMENT ON COLUMN v_reports.records IS 'Record rows stored for the report (after the day split).';
COMMENT ON COLUMN v_reports.messages IS 'Messages the report covers.';
COMMENT ON COLUMN v_reports.passed IS 'Messages in the report that passed DMARC.';
COMMENT ON COLUMN v_reports.failed IS 'Messages in the report that failed DMARC.';
COMMENT ON COLUMN v_reports.pass_rate IS 'passed / messages, 0 to 1; NULL for an empty report.';
COMMENT ON COLUMN v_reports.sources IS 'Distinct source IPs in the report.';
COMMENT ON COLUMN v_reports.origin IS 'Where the stored copy came from (file path or IMAP message).';
COMMENT ON COLUMN v_reports.origin_member IS 'Part of the origin that held the report (zip member, attachment).';
COMMENT ON COLUMN v_reports.ingest_run_id IS 'Ingest run that stored the report (ingest_runs.run_id).';
COMMENT ON COLUMN v_reports.ingested_at IS 'When the report was stored (UTC).';
