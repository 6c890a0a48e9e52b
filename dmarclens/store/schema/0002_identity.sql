-- 0002: sender identity. Traffic classes per record, the source network of
-- each IP, DNS posture checks of the user's domains, lookalike identifiers,
-- and v_records redefined with them (existing columns first, in order).
-- Rules: docs/identity.md. Filled by `dmarclens enrich` (and `ingest --enrich`).

ALTER TABLE records ADD COLUMN traffic_class VARCHAR;
ALTER TABLE records ADD COLUMN class_reason VARCHAR;
COMMENT ON COLUMN records.traffic_class IS 'authorized, forwarded, misconfigured, spoofed or unknown (docs/identity.md); NULL until dmarclens enrich has classified the row.';
COMMENT ON COLUMN records.class_reason IS 'Which rule gave traffic_class, as a code plus detail (e.g. known_network 198.51.100.0/24); codes in docs/identity.md.';

ALTER TABLE ip_info ADD COLUMN network VARCHAR;
COMMENT ON COLUMN ip_info.network IS 'The /24 (IPv4) or /48 (IPv6) the IP belongs to: the range layer of a source, used by the misconfigured rule.';
COMMENT ON COLUMN ip_info.service_source IS 'How service_name was found: rdns (PTR base domain in the service map), as_domain, rdns_domain (PTR base domain not in the map, used as the name) or as_name (weak).';
COMMENT ON COLUMN ip_info.rdns_status IS 'Outcome of the last PTR lookup: ok, nxdomain, nodata, timeout, servfail, error; NULL = not tried. timeout/servfail/error are retried on the next dmarclens enrich.';
COMMENT ON COLUMN ip_info.fcrdns IS 'True when the PTR name resolves back to the IP (forward-confirmed); False when it resolves elsewhere or not at all; NULL when unknown.';

CREATE SEQUENCE posture_check_seq START 1;
CREATE TABLE posture_checks (
    check_id          BIGINT PRIMARY KEY DEFAULT nextval('posture_check_seq'),
    checked_at        TIMESTAMPTZ NOT NULL,
    domain            VARCHAR NOT NULL,
    dmarc_record      VARCHAR,
    dmarc_source      VARCHAR,
    dmarc_status      VARCHAR NOT NULL,
    p                 VARCHAR,
    sp                VARCHAR,
    np                VARCHAR,
    pct               INTEGER,
    rua               VARCHAR[],
    ruf               VARCHAR[],
    adkim             VARCHAR,
    aspf              VARCHAR,
    policy_strength   VARCHAR NOT NULL,
    spf_record        VARCHAR,
    spf_status        VARCHAR NOT NULL,
    spf_lookups       INTEGER,
    spf_void_lookups  INTEGER,
    spf_all           VARCHAR,
    findings          VARCHAR[],
    nameservers       VARCHAR
);
COMMENT ON TABLE posture_checks IS 'One row per domain per dmarclens posture run: the live DMARC and SPF records and what is weak about them.';
COMMENT ON COLUMN posture_checks.check_id IS 'Sequential id; posture_spf_includes and posture_dkim_selectors rows point to it.';
COMMENT ON COLUMN posture_checks.checked_at IS 'When the DNS was read (UTC).';
COMMENT ON COLUMN posture_checks.domain IS 'The domain checked, lower case.';
COMMENT ON COLUMN posture_checks.dmarc_record IS 'The DMARC TXT record found, verbatim.';
COMMENT ON COLUMN posture_checks.dmarc_source IS 'Where the DMARC record was found: _dmarc.<domain>, or _dmarc.<organisational domain> when inherited.';
COMMENT ON COLUMN posture_checks.dmarc_status IS 'ok, missing (no record), invalid (unparseable or several records), or timeout/servfail/error (DNS failed).';
COMMENT ON COLUMN posture_checks.p IS 'Published policy p=: none, quarantine or reject.';
COMMENT ON COLUMN posture_checks.sp IS 'Subdomain policy sp= (NULL = same as p).';
COMMENT ON COLUMN posture_checks.np IS 'Non-existent subdomain policy np= (RFC 9990; NULL = same as sp).';
COMMENT ON COLUMN posture_checks.pct IS 'pct= (RFC 7489; NULL = 100).';
COMMENT ON COLUMN posture_checks.rua IS 'Aggregate report addresses (rua=).';
COMMENT ON COLUMN posture_checks.ruf IS 'Failure report addresses (ruf=).';
COMMENT ON COLUMN posture_checks.adkim IS 'DKIM alignment mode adkim= (NULL = r).';
COMMENT ON COLUMN posture_checks.aspf IS 'SPF alignment mode aspf= (NULL = r).';
COMMENT ON COLUMN posture_checks.policy_strength IS 'missing, monitor (p=none), partial (quarantine, pct<100, or weaker sp/np), or enforced (reject at 100% for the domain and its subdomains).';
COMMENT ON COLUMN posture_checks.spf_record IS 'The SPF TXT record (v=spf1) of the domain, verbatim.';
COMMENT ON COLUMN posture_checks.spf_status IS 'ok, missing, permerror (several records, over 10 lookups, loops, bad syntax) or timeout/servfail/error.';
COMMENT ON COLUMN posture_checks.spf_lookups IS 'DNS-querying terms counted the RFC 7208 way (include, a, mx, ptr, exists, redirect), includes followed; over 10 fails SPF.';
COMMENT ON COLUMN posture_checks.spf_void_lookups IS 'Lookups that found nothing (NXDOMAIN or no record); over 2 fails SPF.';
COMMENT ON COLUMN posture_checks.spf_all IS 'The top-level all term with its qualifier: -all, ~all, ?all, +all, or NULL (none; redirect may decide).';
COMMENT ON COLUMN posture_checks.findings IS 'Plain-language problems found, most serious first.';
COMMENT ON COLUMN posture_checks.nameservers IS 'Nameservers asked (empty = system resolver).';

CREATE TABLE posture_spf_includes (
    check_id          BIGINT NOT NULL,
    domain            VARCHAR NOT NULL,
    include           VARCHAR NOT NULL,
    parent            VARCHAR,
    depth             INTEGER NOT NULL,
    platform          VARCHAR,
    multi_tenant      BOOLEAN NOT NULL,
    status            VARCHAR NOT NULL,
    messages          BIGINT,
    last_seen         DATE,
    unused            BOOLEAN
);
COMMENT ON TABLE posture_spf_includes IS 'Every include:/redirect= in a checked domain''s SPF tree, with the platform it authorizes and whether reports show it in use.';
COMMENT ON COLUMN posture_spf_includes.check_id IS 'posture_checks.check_id.';
COMMENT ON COLUMN posture_spf_includes.domain IS 'The domain checked.';
COMMENT ON COLUMN posture_spf_includes.include IS 'The included (or redirect) domain.';
COMMENT ON COLUMN posture_spf_includes.parent IS 'The SPF record that includes it (the domain itself at depth 1).';
COMMENT ON COLUMN posture_spf_includes.depth IS '1 for a direct include of the domain, 2 for an include inside that, and so on.';
COMMENT ON COLUMN posture_spf_includes.platform IS 'Known sending platform the include authorizes (Microsoft 365, Google Workspace, SendGrid ...), NULL if not in the catalog.';
COMMENT ON COLUMN posture_spf_includes.multi_tenant IS 'True when the include authorizes a shared platform: any of its customers passes SPF for the domain.';
COMMENT ON COLUMN posture_spf_includes.status IS 'ok, or why the include could not be read (missing, timeout, servfail, loop, too_deep).';
COMMENT ON COLUMN posture_spf_includes.messages IS 'Messages in the reports (last N days) from this platform that passed SPF for the domain: the authorization in use.';
COMMENT ON COLUMN posture_spf_includes.last_seen IS 'Last day such a message was reported.';
COMMENT ON COLUMN posture_spf_includes.unused IS 'True when a multi-tenant platform is authorized but the reports show no SPF pass through it for N days: an authorization to remove.';

CREATE TABLE posture_dkim_selectors (
    check_id          BIGINT NOT NULL,
    domain            VARCHAR NOT NULL,
    selector          VARCHAR NOT NULL,
    status            VARCHAR NOT NULL,
    key_type          VARCHAR,
    key_bits          INTEGER,
    record            VARCHAR,
    messages          BIGINT,
    last_seen         DATE
);
COMMENT ON TABLE posture_dkim_selectors IS 'DKIM selectors seen in the reports for a checked domain and what their DNS key record says.';
COMMENT ON COLUMN posture_dkim_selectors.check_id IS 'posture_checks.check_id.';
COMMENT ON COLUMN posture_dkim_selectors.domain IS 'The signing domain (d=).';
COMMENT ON COLUMN posture_dkim_selectors.selector IS 'The selector (s=) as reported.';
COMMENT ON COLUMN posture_dkim_selectors.status IS 'ok, weak (RSA key under 1024 bits), revoked (empty p=), missing, invalid, or timeout/servfail/error.';
COMMENT ON COLUMN posture_dkim_selectors.key_type IS 'k= (rsa or ed25519).';
COMMENT ON COLUMN posture_dkim_selectors.key_bits IS 'RSA modulus size in bits (256 for ed25519).';
COMMENT ON COLUMN posture_dkim_selectors.record IS 'The selector''s TXT record (key data shortened).';
COMMENT ON COLUMN posture_dkim_selectors.messages IS 'Messages in the reports signed with this selector (last N days).';
COMMENT ON COLUMN posture_dkim_selectors.last_seen IS 'Last day the selector was reported.';

CREATE TABLE identifier_lookalikes (
    identifier        VARCHAR NOT NULL,
    identifier_kind   VARCHAR NOT NULL,
    owned_domain      VARCHAR NOT NULL,
    technique         VARCHAR NOT NULL,
    detail            VARCHAR,
    messages          BIGINT NOT NULL,
    first_seen        DATE,
    last_seen         DATE,
    refreshed_at      TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE identifier_lookalikes IS 'Envelope-from and DKIM signing domains in the reports that imitate one of the user''s domains; rebuilt by dmarclens enrich.';
COMMENT ON COLUMN identifier_lookalikes.identifier IS 'The lookalike domain as reported (lower case).';
COMMENT ON COLUMN identifier_lookalikes.identifier_kind IS 'envelope_from or dkim_domain: where in the reports it appeared.';
COMMENT ON COLUMN identifier_lookalikes.owned_domain IS 'The user''s domain it imitates.';
COMMENT ON COLUMN identifier_lookalikes.technique IS 'homoglyph, idn_homoglyph, typo (one edit or swap), hyphen, added_word or other_tld (dmarclens.enrich.lookalike).';
COMMENT ON COLUMN identifier_lookalikes.detail IS 'One plain sentence saying how it imitates the domain.';
COMMENT ON COLUMN identifier_lookalikes.messages IS 'Messages reported with this identifier.';
COMMENT ON COLUMN identifier_lookalikes.first_seen IS 'First day it was reported.';
COMMENT ON COLUMN identifier_lookalikes.last_seen IS 'Last day it was reported.';
COMMENT ON COLUMN identifier_lookalikes.refreshed_at IS 'When the table was rebuilt (UTC).';

CREATE OR REPLACE VIEW v_records AS
SELECT
    r.report_key, p.report_id, p.org_name, p.domain, r.day,
    r.interval_begin, r.interval_end, r.source_ip, r.count,
    r.disposition, r.dmarc_pass, r.dkim_aligned, r.spf_aligned,
    r.policy_dkim, r.policy_spf, r.override_reasons,
    r.header_from, r.envelope_from, r.envelope_to, r.dkim, r.spf,
    p.p AS policy_p, p.pct AS policy_pct,
    i.country, i.asn, i.as_name, i.as_domain, i.service_name, i.service_type,
    i.reverse_dns, i.base_domain,
    r.ingest_run_id,
    r.traffic_class, r.class_reason,
    i.fcrdns, i.rdns_status, i.service_source, i.network AS source_network
FROM records r
JOIN reports p USING (report_key)
LEFT JOIN ip_info i ON i.ip = r.source_ip;
COMMENT ON VIEW v_records IS 'Stable view: one row per record with its report, policy domain, day, source, enrichment and traffic class.';
COMMENT ON COLUMN v_records.report_key IS 'reports.report_key of the report the row came from.';
COMMENT ON COLUMN v_records.report_id IS 'Reporter''s own report id.';
COMMENT ON COLUMN v_records.org_name IS 'Reporting organisation (the receiver).';
COMMENT ON COLUMN v_records.domain IS 'Policy domain the report is about.';
COMMENT ON COLUMN v_records.day IS 'UTC day the messages were seen.';
COMMENT ON COLUMN v_records.interval_begin IS 'Start of the part of the report interval this row covers (UTC).';
COMMENT ON COLUMN v_records.interval_end IS 'End of the part of the report interval this row covers (UTC).';
COMMENT ON COLUMN v_records.source_ip IS 'IP address that sent the mail.';
COMMENT ON COLUMN v_records.count IS 'Messages from this source with these results.';
COMMENT ON COLUMN v_records.disposition IS 'What the receiver did: none, quarantine or reject.';
COMMENT ON COLUMN v_records.dmarc_pass IS 'True when DKIM or SPF passed aligned.';
COMMENT ON COLUMN v_records.dkim_aligned IS 'True when aligned DKIM passed.';
COMMENT ON COLUMN v_records.spf_aligned IS 'True when aligned SPF passed.';
COMMENT ON COLUMN v_records.policy_dkim IS 'DMARC-aligned DKIM result: pass or fail.';
COMMENT ON COLUMN v_records.policy_spf IS 'DMARC-aligned SPF result: pass or fail.';
COMMENT ON COLUMN v_records.override_reasons IS 'Receiver policy overrides (type, comment).';
COMMENT ON COLUMN v_records.header_from IS 'RFC5322.From domain.';
COMMENT ON COLUMN v_records.envelope_from IS 'RFC5321.MailFrom domain.';
COMMENT ON COLUMN v_records.envelope_to IS 'RFC5321.RcptTo domain, when reported.';
COMMENT ON COLUMN v_records.dkim IS 'Raw DKIM results: signing domain, selector, result.';
COMMENT ON COLUMN v_records.spf IS 'Raw SPF results: domain, scope, result.';
COMMENT ON COLUMN v_records.policy_p IS 'Policy the domain published (p=) as the reporter saw it.';
COMMENT ON COLUMN v_records.policy_pct IS 'pct= the domain published as the reporter saw it.';
COMMENT ON COLUMN v_records.country IS 'ISO country code of the source IP.';
COMMENT ON COLUMN v_records.asn IS 'Autonomous system number of the source IP.';
COMMENT ON COLUMN v_records.as_name IS 'Autonomous system name.';
COMMENT ON COLUMN v_records.as_domain IS 'Domain of the AS owner.';
COMMENT ON COLUMN v_records.service_name IS 'Known sending service of the source.';
COMMENT ON COLUMN v_records.service_type IS 'Kind of service.';
COMMENT ON COLUMN v_records.reverse_dns IS 'PTR name of the source IP (after dmarclens enrich).';
COMMENT ON COLUMN v_records.base_domain IS 'Registrable domain of the PTR name.';
COMMENT ON COLUMN v_records.ingest_run_id IS 'Run that stored the row.';
COMMENT ON COLUMN v_records.traffic_class IS 'authorized, forwarded, misconfigured, spoofed or unknown; NULL until classified (docs/identity.md).';
COMMENT ON COLUMN v_records.class_reason IS 'Rule that gave traffic_class (code plus detail).';
COMMENT ON COLUMN v_records.fcrdns IS 'True when the PTR name resolves back to the source IP.';
COMMENT ON COLUMN v_records.rdns_status IS 'Outcome of the last PTR lookup: ok, nxdomain, nodata, timeout, servfail, error, or NULL (not tried).';
COMMENT ON COLUMN v_records.service_source IS 'How service_name was found: rdns, as_domain, rdns_domain or as_name.';
COMMENT ON COLUMN v_records.source_network IS 'The /24 (IPv4) or /48 (IPv6) of the source IP.';
