-- 0003: detection output. Anomalies found by `dmarclens detect`, the owner's
-- acknowledgements, the log of alerts sent, and the v_anomalies view the CLI,
-- the alerter and the dashboard read.

CREATE TABLE detect_runs (
    run_id            VARCHAR PRIMARY KEY,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ,
    since_day         DATE,
    until_day         DATE,
    data_last_day     DATE,
    anomalies         INTEGER DEFAULT 0,
    new_anomalies     INTEGER DEFAULT 0,
    seconds           DOUBLE,
    version           VARCHAR
);
COMMENT ON TABLE detect_runs IS 'One row per dmarclens detect run: when it ran, which days it judged, what it found.';
COMMENT ON COLUMN detect_runs.run_id IS 'Random id of the detect run.';
COMMENT ON COLUMN detect_runs.started_at IS 'When the run started (UTC).';
COMMENT ON COLUMN detect_runs.finished_at IS 'When the run finished (UTC).';
COMMENT ON COLUMN detect_runs.since_day IS 'First day judged (--since), NULL = from the end of the warm-up.';
COMMENT ON COLUMN detect_runs.until_day IS 'Last day judged (--until), NULL = up to the newest data.';
COMMENT ON COLUMN detect_runs.data_last_day IS 'Newest record day in the database when the run started.';
COMMENT ON COLUMN detect_runs.anomalies IS 'Anomalies the run found (new and already known).';
COMMENT ON COLUMN detect_runs.new_anomalies IS 'Anomalies the run stored for the first time.';
COMMENT ON COLUMN detect_runs.seconds IS 'Wall-clock duration of the run.';
COMMENT ON COLUMN detect_runs.version IS 'dmarclens version that ran.';

CREATE TABLE anomalies (
    anomaly_id        VARCHAR PRIMARY KEY,
    kind              VARCHAR NOT NULL,
    severity          VARCHAR NOT NULL,
    severity_rank     TINYINT NOT NULL,
    score             DOUBLE,
    domain            VARCHAR NOT NULL,
    identity_key      VARCHAR NOT NULL,
    identity          JSON NOT NULL,
    first_day         DATE NOT NULL,
    last_day          DATE NOT NULL,
    messages          BIGINT NOT NULL,
    expected          DOUBLE,
    passed            BIGINT,
    failed            BIGINT,
    dmarc             VARCHAR NOT NULL,
    explanation       VARCHAR NOT NULL,
    ips               VARCHAR[],
    report_keys       VARCHAR[],
    report_ids        VARCHAR[],
    reporters         VARCHAR[],
    details           JSON,
    repeat_rule       VARCHAR NOT NULL,
    first_detected_at TIMESTAMPTZ NOT NULL,
    last_detected_at  TIMESTAMPTZ NOT NULL,
    detect_run_id     VARCHAR
);
COMMENT ON TABLE anomalies IS 'Findings of dmarclens detect: one row per anomaly episode; re-running detection updates rows, never duplicates them.';
COMMENT ON COLUMN anomalies.anomaly_id IS 'Stable id: hash of kind, domain, identity and first day. Use it with dmarclens ack.';
COMMENT ON COLUMN anomalies.kind IS 'new_source, volume_spike, new_ip_range_in_authorized_provider, new_identifier, audience_shift, auth_regression, spoofing_burst, dormant_source_revived, lookalike_identifier, contract_violation.';
COMMENT ON COLUMN anomalies.severity IS 'info, low, medium, high or critical: size of the change and whether the mail passed DMARC (passing abuse reaches inboxes).';
COMMENT ON COLUMN anomalies.severity_rank IS 'Severity as a number for sorting and filtering: info 0, low 1, medium 2, high 3, critical 4.';
COMMENT ON COLUMN anomalies.score IS 'Strength of the evidence (robust z-score or ratio, kind-specific); higher is stronger.';
COMMENT ON COLUMN anomalies.domain IS 'Policy domain the reports are about.';
COMMENT ON COLUMN anomalies.identity_key IS 'Canonical text of the identity (layer=value|...), the key acknowledgements match on.';
COMMENT ON COLUMN anomalies.identity IS 'The sender identity at the layer that explains the change: service, asn, base_domain, network (/24 or /48), envelope_from, dkim_domain, dkim_selector, header_from, reporter, envelope_to.';
COMMENT ON COLUMN anomalies.first_day IS 'First report day of the episode (UTC day the messages were seen).';
COMMENT ON COLUMN anomalies.last_day IS 'Last report day of the episode so far.';
COMMENT ON COLUMN anomalies.messages IS 'Messages from this identity on the episode days (the observed value).';
COMMENT ON COLUMN anomalies.expected IS 'Messages the baseline expected on those days from the reporters that reported (0 for something never seen).';
COMMENT ON COLUMN anomalies.passed IS 'Of messages, how many passed DMARC.';
COMMENT ON COLUMN anomalies.failed IS 'Of messages, how many failed DMARC.';
COMMENT ON COLUMN anomalies.dmarc IS 'pass, fail or mixed: the DMARC outcome of the anomalous mail.';
COMMENT ON COLUMN anomalies.explanation IS 'One plain sentence for the domain owner, citing the numbers.';
COMMENT ON COLUMN anomalies.ips IS 'Source IPs involved (largest first, at most 50).';
COMMENT ON COLUMN anomalies.report_keys IS 'reports.report_key of the reports that carry the evidence.';
COMMENT ON COLUMN anomalies.report_ids IS 'Reporter report ids of those reports (what the reporter calls them).';
COMMENT ON COLUMN anomalies.reporters IS 'Reporting organisations whose reports show it.';
COMMENT ON COLUMN anomalies.details IS 'Kind-specific numbers behind the verdict (baselines, ratios, layer totals), as JSON.';
COMMENT ON COLUMN anomalies.repeat_rule IS 'How an acknowledgement treats later findings for the same identity: identity = all suppressed; severity = suppressed unless more severe.';
COMMENT ON COLUMN anomalies.first_detected_at IS 'When a detect run first found it (UTC).';
COMMENT ON COLUMN anomalies.last_detected_at IS 'When a detect run last found it (UTC).';
COMMENT ON COLUMN anomalies.detect_run_id IS 'The detect run that last updated it (detect_runs.run_id).';

CREATE SEQUENCE anomaly_ack_seq START 1;
CREATE TABLE anomaly_acks (
    ack_id            BIGINT PRIMARY KEY DEFAULT nextval('anomaly_ack_seq'),
    anomaly_id        VARCHAR NOT NULL,
    kind              VARCHAR NOT NULL,
    domain            VARCHAR NOT NULL,
    identity_key      VARCHAR NOT NULL,
    severity_rank     TINYINT NOT NULL,
    acked_at          TIMESTAMPTZ NOT NULL,
    acked_by          VARCHAR,
    note              VARCHAR
);
COMMENT ON TABLE anomaly_acks IS 'Acknowledgements (dmarclens ack, or the dashboard): the owner has seen a finding; it and its repeats are not alerted again.';
COMMENT ON COLUMN anomaly_acks.ack_id IS 'Sequential id.';
COMMENT ON COLUMN anomaly_acks.anomaly_id IS 'The anomaly acknowledged (anomalies.anomaly_id).';
COMMENT ON COLUMN anomaly_acks.kind IS 'Its kind, kept so later episodes of the same finding match.';
COMMENT ON COLUMN anomaly_acks.domain IS 'Its policy domain.';
COMMENT ON COLUMN anomaly_acks.identity_key IS 'Its identity_key.';
COMMENT ON COLUMN anomaly_acks.severity_rank IS 'Its severity when acknowledged; a later, more severe episode of a volume-type finding alerts again.';
COMMENT ON COLUMN anomaly_acks.acked_at IS 'When it was acknowledged (UTC).';
COMMENT ON COLUMN anomaly_acks.acked_by IS 'Who acknowledged it (user@host or dashboard user).';
COMMENT ON COLUMN anomaly_acks.note IS 'Free text, e.g. "new ESP, onboarded by marketing".';

CREATE SEQUENCE alert_log_seq START 1;
CREATE TABLE alert_log (
    alert_id          BIGINT PRIMARY KEY DEFAULT nextval('alert_log_seq'),
    anomaly_id        VARCHAR NOT NULL,
    channel           VARCHAR NOT NULL,
    target            VARCHAR,
    severity_rank     TINYINT NOT NULL,
    sent_at           TIMESTAMPTZ NOT NULL,
    ok                BOOLEAN NOT NULL,
    error             VARCHAR
);
COMMENT ON TABLE alert_log IS 'Every alert delivery attempt; an anomaly is sent once per channel (again only if its severity rises).';
COMMENT ON COLUMN alert_log.alert_id IS 'Sequential id.';
COMMENT ON COLUMN alert_log.anomaly_id IS 'The anomaly alerted (anomalies.anomaly_id).';
COMMENT ON COLUMN alert_log.channel IS 'stdout, webhook or smtp.';
COMMENT ON COLUMN alert_log.target IS 'Where it went: webhook host, or mail recipients (never credentials).';
COMMENT ON COLUMN alert_log.severity_rank IS 'Severity of the anomaly when it was sent.';
COMMENT ON COLUMN alert_log.sent_at IS 'When it was sent (UTC).';
COMMENT ON COLUMN alert_log.ok IS 'True when the channel accepted it; failed sends are retried on the next run.';
COMMENT ON COLUMN alert_log.error IS 'Why the send failed, when it did.';

CREATE VIEW v_anomalies AS
WITH acked AS (
    SELECT a.anomaly_id, arg_max(k.ack_id, k.acked_at) AS ack_id
    FROM anomalies a
    JOIN anomaly_acks k
      ON k.anomaly_id = a.anomaly_id
      OR (k.kind = a.kind AND k.domain = a.domain AND k.identity_key = a.identity_key
          AND (a.repeat_rule = 'identity' OR a.severity_rank <= k.severity_rank))
    GROUP BY a.anomaly_id
),
sent AS (
    SELECT anomaly_id, max(sent_at) AS alerted_at, max(severity_rank) AS alerted_rank
    FROM alert_log WHERE ok
    GROUP BY anomaly_id
)
SELECT
    a.anomaly_id, a.kind, a.severity, a.severity_rank, a.score, a.domain,
    a.identity_key, a.identity, a.first_day, a.last_day, a.messages, a.expected,
    a.passed, a.failed, a.dmarc, a.explanation, a.ips, a.report_keys, a.report_ids,
    a.reporters, a.details, a.repeat_rule, a.first_detected_at, a.last_detected_at,
    k.ack_id, k.acked_at, k.note AS ack_note, k.anomaly_id AS acked_anomaly_id,
    s.alerted_at, s.alerted_rank,
    CASE WHEN k.ack_id IS NOT NULL THEN 'acknowledged' ELSE 'open' END AS status
FROM anomalies a
LEFT JOIN acked m USING (anomaly_id)
LEFT JOIN anomaly_acks k ON k.ack_id = m.ack_id
LEFT JOIN sent s ON s.anomaly_id = a.anomaly_id;
COMMENT ON VIEW v_anomalies IS 'Stable view: anomalies with their status (open or acknowledged), the acknowledgement that covers them and when they were alerted.';
COMMENT ON COLUMN v_anomalies.anomaly_id IS 'Stable id: hash of kind, domain, identity and first day. Use it with dmarclens ack.';
COMMENT ON COLUMN v_anomalies.kind IS 'What was found: new_source, volume_spike, new_ip_range_in_authorized_provider, new_identifier, audience_shift, auth_regression, spoofing_burst, dormant_source_revived, lookalike_identifier, contract_violation.';
COMMENT ON COLUMN v_anomalies.severity IS 'info, low, medium, high or critical: size of the change and whether the mail passed DMARC.';
COMMENT ON COLUMN v_anomalies.severity_rank IS 'Severity as a number: info 0, low 1, medium 2, high 3, critical 4.';
COMMENT ON COLUMN v_anomalies.score IS 'Strength of the evidence (robust z-score or ratio, kind-specific).';
COMMENT ON COLUMN v_anomalies.domain IS 'Policy domain the reports are about.';
COMMENT ON COLUMN v_anomalies.identity_key IS 'Canonical text of the identity (layer=value|...).';
COMMENT ON COLUMN v_anomalies.identity IS 'Sender identity at the layer that explains the change (JSON: service, asn, base_domain, ip_range, envelope_from, dkim_domain, dkim_selector, header_from, reporter, envelope_to).';
COMMENT ON COLUMN v_anomalies.first_day IS 'First report day of the episode.';
COMMENT ON COLUMN v_anomalies.last_day IS 'Last report day of the episode so far.';
COMMENT ON COLUMN v_anomalies.messages IS 'Messages from this identity on the episode days.';
COMMENT ON COLUMN v_anomalies.expected IS 'Messages the baseline expected on those days (0 for something never seen).';
COMMENT ON COLUMN v_anomalies.passed IS 'Of messages, how many passed DMARC.';
COMMENT ON COLUMN v_anomalies.failed IS 'Of messages, how many failed DMARC.';
COMMENT ON COLUMN v_anomalies.dmarc IS 'pass, fail or mixed.';
COMMENT ON COLUMN v_anomalies.explanation IS 'One plain sentence for the domain owner, citing the numbers.';
COMMENT ON COLUMN v_anomalies.ips IS 'Source IPs involved (largest first, at most 50).';
COMMENT ON COLUMN v_anomalies.report_keys IS 'reports.report_key of the reports carrying the evidence.';
COMMENT ON COLUMN v_anomalies.report_ids IS 'Reporter report ids of those reports.';
COMMENT ON COLUMN v_anomalies.reporters IS 'Reporting organisations whose reports show it.';
COMMENT ON COLUMN v_anomalies.details IS 'Kind-specific numbers behind the verdict, as JSON.';
COMMENT ON COLUMN v_anomalies.repeat_rule IS 'identity = an acknowledgement suppresses every later finding for this identity; severity = unless more severe.';
COMMENT ON COLUMN v_anomalies.first_detected_at IS 'When a detect run first found it (UTC).';
COMMENT ON COLUMN v_anomalies.last_detected_at IS 'When a detect run last found it (UTC).';
COMMENT ON COLUMN v_anomalies.ack_id IS 'The acknowledgement that covers it (its own or an earlier one of the same finding); NULL = not acknowledged.';
COMMENT ON COLUMN v_anomalies.acked_at IS 'When that acknowledgement was made (UTC).';
COMMENT ON COLUMN v_anomalies.ack_note IS 'The note given with the acknowledgement.';
COMMENT ON COLUMN v_anomalies.acked_anomaly_id IS 'The anomaly that was acknowledged (differs from anomaly_id for a suppressed repeat).';
COMMENT ON COLUMN v_anomalies.alerted_at IS 'When it was last alerted successfully on any channel (UTC); NULL = never.';
COMMENT ON COLUMN v_anomalies.alerted_rank IS 'Highest severity_rank it was alerted with.';
COMMENT ON COLUMN v_anomalies.status IS 'open (needs a look) or acknowledged.';
