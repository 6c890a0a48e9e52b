-- 0007: forged-report defence (dmarclens/security.py, docs/security.md).
-- A rua address is public: anyone can mail it a report about any domain with
-- any numbers. Reports for domains the owner did not list are kept (nothing
-- lost, duplicates still recognised) but their records live apart in
-- foreign_records, so no view, rollup, detector or alert counts them. Each
-- report also carries the verdict on the mail that delivered it.

CREATE TABLE owned_domains (
    domain            VARCHAR PRIMARY KEY,
    set_at            TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE owned_domains IS 'The domain list (config domains / DMARCLENS_DOMAINS) last used to sort reports; empty = no list, every report is counted.';
COMMENT ON COLUMN owned_domains.domain IS 'A domain the owner listed; reports for it and its subdomains are counted.';
COMMENT ON COLUMN owned_domains.set_at IS 'When this list took effect (UTC).';

CREATE TABLE report_trust (
    report_key        VARCHAR PRIMARY KEY,
    domain            VARCHAR NOT NULL,
    owned             BOOLEAN NOT NULL,
    mail_auth         VARCHAR NOT NULL,
    auth_method       VARCHAR,
    auth_domain       VARCHAR,
    auth_detail       VARCHAR,
    checked_at        TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE report_trust IS 'Per stored report: is it about one of the owner''s domains, and did the mail that carried it authenticate as its reporter.';
COMMENT ON COLUMN report_trust.report_key IS 'reports.report_key.';
COMMENT ON COLUMN report_trust.domain IS 'Policy domain of the report (reports.domain).';
COMMENT ON COLUMN report_trust.owned IS 'True when the domain is in the owner''s list (or no list is set); false = stored apart, records in foreign_records, hidden by default.';
COMMENT ON COLUMN report_trust.mail_auth IS 'verified (DKIM or trusted Authentication-Results aligned with the sender and the reporter the report names), unverified, not_mail (read from a file) or not_checked (stored before 0007).';
COMMENT ON COLUMN report_trust.auth_method IS 'What authenticated the mail: dkim, or authentication-results <method> (<authserv-id>).';
COMMENT ON COLUMN report_trust.auth_domain IS 'The domain that authenticated (DKIM d= or header.from of a trusted Authentication-Results).';
COMMENT ON COLUMN report_trust.auth_detail IS 'The verdict in plain language: what passed, or why nothing did.';
COMMENT ON COLUMN report_trust.checked_at IS 'When the verdict was recorded (UTC).';

CREATE TABLE foreign_records (
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
COMMENT ON TABLE foreign_records IS 'Records of reports about domains not in the owner''s list (report_trust.owned = false): kept for inspection, counted nowhere. They move back to records when the domain is listed.';
COMMENT ON COLUMN foreign_records.report_key IS 'reports.report_key.';
COMMENT ON COLUMN foreign_records.day IS 'UTC day the messages were seen (from the report interval).';
COMMENT ON COLUMN foreign_records.interval_begin IS 'Start of the part of the report interval this row covers (UTC).';
COMMENT ON COLUMN foreign_records.interval_end IS 'End of the part of the report interval this row covers (UTC).';
COMMENT ON COLUMN foreign_records.source_ip IS 'IP address that sent the mail, as the report claims.';
COMMENT ON COLUMN foreign_records.count IS 'Messages the report claims for this row.';
COMMENT ON COLUMN foreign_records.disposition IS 'What the receiver says it did: none, quarantine or reject.';
COMMENT ON COLUMN foreign_records.policy_dkim IS 'DMARC-aligned DKIM result claimed: pass or fail.';
COMMENT ON COLUMN foreign_records.policy_spf IS 'DMARC-aligned SPF result claimed: pass or fail.';
COMMENT ON COLUMN foreign_records.dkim_aligned IS 'True when policy_dkim = pass.';
COMMENT ON COLUMN foreign_records.spf_aligned IS 'True when policy_spf = pass.';
COMMENT ON COLUMN foreign_records.dmarc_pass IS 'True when DKIM or SPF passed aligned.';
COMMENT ON COLUMN foreign_records.override_reasons IS 'Policy overrides claimed: type and comment.';
COMMENT ON COLUMN foreign_records.header_from IS 'RFC5322.From domain, lower case.';
COMMENT ON COLUMN foreign_records.envelope_from IS 'RFC5321.MailFrom domain.';
COMMENT ON COLUMN foreign_records.envelope_to IS 'RFC5321.RcptTo domain, when given.';
COMMENT ON COLUMN foreign_records.dkim IS 'Raw DKIM results claimed: signing domain, selector, result.';
COMMENT ON COLUMN foreign_records.spf IS 'Raw SPF results claimed: domain, scope, result.';
COMMENT ON COLUMN foreign_records.ingest_run_id IS 'Run that stored the row (lineage).';

CREATE VIEW v_report_trust AS
SELECT
    p.report_key, p.org_name, p.report_id, p.domain, p.begin_ts, p.end_ts, p.message_count,
    coalesce(t.owned, true) AS owned,
    coalesce(t.mail_auth, 'not_checked') AS mail_auth,
    t.auth_method, t.auth_domain, t.auth_detail
FROM reports p
LEFT JOIN report_trust t USING (report_key);
COMMENT ON VIEW v_report_trust IS 'Stable view: every stored report with whether it counts (owned) and how its mail authenticated (mail_auth). Dashboards show mail_auth; detection with --ignore-unverified skips mail_auth = ''unverified''.';
COMMENT ON COLUMN v_report_trust.owned IS 'True when the report is counted (its domain is listed, or no list is set, or it predates 0007).';
COMMENT ON COLUMN v_report_trust.mail_auth IS 'verified, unverified, not_mail (read from a file) or not_checked (stored before 0007).';
